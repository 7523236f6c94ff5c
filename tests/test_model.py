"""
model.py: Hugging Face GPT-2 equivalence, KV-cache sampling, tokenizer, crash-safe checkpoints.

    python -m pytest tests/test_model.py -q
"""
import math
import os

import pytest
import torch

from model import (GPT, GPTConfig, from_pretrained, generate, get_tokenizer, left_pad,
                   load_checkpoint, model_from_checkpoint, save_checkpoint, scalar_head_model,
                   shared_prefix_positions_and_mask, token_logprobs)

TINY = GPTConfig(block_size=64, vocab_size=300, n_layer=2, n_head=2, n_embd=32)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY.__dict__, **kw})).eval()


# --- 1. Hugging Face GPT-2 checkpoints -----------------------------------------------------

@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_from_pretrained_matches_transformers(tmp_path, fmt):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    if fmt == "safetensors":
        hf.save_pretrained(tmp_path)
    else:  # the classic format of the original GPT-2 uploads: a pickled state dict
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert os.path.exists(tmp_path / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"))
    ours = from_pretrained(str(tmp_path)).eval()

    idx, mask = left_pad([[5, 6, 7, 8, 9, 10], [11, 12, 13], [1]], pad_id=0)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf(input_ids=idx, attention_mask=mask.long(), position_ids=pos).logits
        mine = ours(idx, attention_mask=mask)
    assert mine.shape == theirs.shape
    assert (mine - theirs)[mask].abs().max().item() <= 1e-5
    # and unpadded, where the fast causal kernel runs
    with torch.no_grad():
        assert (ours(idx[:1]) - hf(input_ids=idx[:1]).logits).abs().max().item() <= 1e-5


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(SystemExit, match="config.json"):
        from_pretrained(str(tmp_path))
    with pytest.raises(SystemExit, match="neither a folder"):
        from_pretrained("not-a-model")


# --- 2. KV-cache sampling ---------------------------------------------------------------------

def test_sampled_logprobs_equal_full_forward():
    model = tiny_model()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    for temperature, top_k, top_p in [(1.0, None, None), (0.7, None, None), (1.3, 20, 0.9)]:
        tokens, mask, logprobs, response_mask = generate(model, prompts, 12, eot=299, temperature=temperature,
                                                         top_k=top_k, top_p=top_p,
                                                         generator=torch.Generator().manual_seed(1))
        P = tokens.size(1) - logprobs.size(1)
        assert P == 7
        with torch.no_grad():
            logits = model(tokens, attention_mask=mask)
        recomputed = token_logprobs(logits[:, P - 1:-1], tokens[:, P:], temperature, top_k, top_p)
        assert (recomputed - logprobs)[response_mask].abs().max().item() <= 1e-5
        assert mask[:, P:].equal(response_mask)


def test_rows_that_finish_early_leave_the_cache_and_the_rest_sample_as_before(monkeypatch):
    # 8 tokens, so <|endoftext|> (7) is drawn often: rows end at different steps and KVCache.keep drops
    # them mid-sample; every log-prob of the rows still sampling must equal the full forward's
    import model as model_module
    kept, keep = [], model_module.KVCache.keep

    def counted_keep(cache, rows):
        kept.append(int(rows.sum()))
        keep(cache, rows)
    monkeypatch.setattr(model_module.KVCache, "keep", counted_keep)
    model = tiny_model(vocab_size=8)
    prompts = [[1, 2, 3, 4, 5], [6, 1], [2, 3, 4], [5], [1, 1, 2, 6]]
    tokens, mask, logprobs, response_mask = generate(model, prompts, 10, eot=7,
                                                     generator=torch.Generator().manual_seed(3))
    lengths = response_mask.sum(1).tolist()
    assert kept and len(set(lengths)) > 1 and max(lengths) > min(lengths) + 1
    P = tokens.size(1) - logprobs.size(1)
    with torch.no_grad():
        logits = model(tokens, attention_mask=mask)
    recomputed = token_logprobs(logits[:, P - 1:-1], tokens[:, P:], 1.0, None, None)
    assert (recomputed - logprobs)[response_mask].abs().max().item() <= 1e-5


def ulps(x, n):
    """x moved n float32 steps (ulps) up, or down for n < 0: the size of the difference between a
    KV-cache step's logits and a full forward's (7e-8 on logits of 0.17 above, 5 ulps)."""
    for _ in range(abs(n)):
        x = x.nextafter(torch.full_like(x, math.copysign(math.inf, n)))
    return x


@pytest.mark.parametrize("case", ["top_k near-tie", "top_p mass at the boundary"])
def test_cut_on_a_boundary_is_the_same_under_float_noise(case):
    # Two copies of one distribution's logits a few ulps apart, as generate's KV-cache step and the
    # full forward give them, with a token on the top-k / top-p boundary: a hard cut keeps it in one
    # copy and drops it in the other (its log-prob finite vs -inf, the others' normaliser shifts).
    if case == "top_k near-tie":
        # logits 2, 1, 0.5, 0.5, -1 with top_k 3: the 3rd and 4th one ulp apart, in either order
        logits = torch.tensor([2.0, 1.0, 0.5, 0.5, -1.0])
        a, b = logits.clone(), logits.clone()
        a[3], b[2] = ulps(a[3], 1), ulps(b[2], 1)
        top_k, top_p = 3, None
        # the tie is kept whole: Z = e^2 + e + 2e^0.5 = 13.4039, log Z = 2.59561
        z = math.log(math.exp(2) + math.exp(1) + 2 * math.exp(0.5))
        want = [2 - z, 1 - z, 0.5 - z, 0.5 - z, -math.inf]  # -0.59561, -1.59561, -2.09561 twice
    else:
        # probabilities 0.5, 0.25, 0.15, 0.1 with top_p 0.75: the mass before the 3rd token is 0.75;
        # the top two logits 2 ulps down in one copy and up in the other make it 0.75 -/+ 3e-8
        logits = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64).log().float()
        a, b = logits.clone(), logits.clone()
        a[:2], b[:2] = ulps(a[:2], -2), ulps(b[:2], 2)
        top_k, top_p = None, 0.75
        # the 3rd token is in the nucleus (mass before it <= top_p): kept mass 0.9, not 0.75
        want = [math.log(5 / 9), math.log(2.5 / 9), math.log(1.5 / 9), -math.inf]  # -0.58779, ...
    assert not a.equal(b)
    want = torch.tensor(want)
    for copy in (a, b):
        got = token_logprobs(copy.expand(len(want), -1), torch.arange(len(want)), 1.0, top_k, top_p)
        assert got.isinf().equal(want.isinf()), (case, got.tolist())
        assert (got - want)[want.isfinite()].abs().max().item() <= 1e-6


def test_response_mask_stops_after_eot():
    model = tiny_model(vocab_size=8)  # eot = 7 comes up often in a vocabulary of 8
    prompts = [[1, 2], [3], [4, 5, 6], [2]]
    tokens, mask, logprobs, response_mask = generate(model, prompts, 60, eot=7,
                                                     generator=torch.Generator().manual_seed(0))
    P = tokens.size(1) - logprobs.size(1)
    ended = 0
    for i in range(len(prompts)):
        resp = tokens[i, P:].tolist()
        if 7 in resp:
            ended += 1
            first = resp.index(7)
            assert response_mask[i].sum().item() == first + 1, \
                "the mask covers the response up to and including its eot"
            assert all(t == 7 for t in resp[first:])
            assert (logprobs[i, first + 1:] == 0).all()
        else:
            assert response_mask[i].all()
    assert ended == len(prompts), "with this seed every row ends"
    assert logprobs.size(1) < 60, "sampling stops once every row has ended"


def test_batched_greedy_equals_one_by_one():
    model = tiny_model(seed=3)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15]]
    batched, _, _, _ = generate(model, prompts, 15, eot=299, temperature=0)
    P = max(map(len, prompts))
    for i, p in enumerate(prompts):
        alone, _, _, _ = generate(model, [p], 15, eot=299, temperature=0)
        n = alone.size(1) - len(p)
        assert batched[i, P:P + n].tolist() == alone[0, len(p):].tolist()


def test_generate_refuses_prompt_past_context():
    with pytest.raises(ValueError, match="exceeds the context"):
        generate(tiny_model(), [[1] * 60], 10, eot=299)


def test_scalar_head_keeps_body():
    lm = tiny_model()
    rm = scalar_head_model(lm)
    assert not hasattr(rm, "lm_head")
    idx = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(lm.hidden(idx), rm.hidden(idx))
        values = rm(idx)
    assert values.shape == (1, 3)
    assert torch.allclose(values, rm.score(rm.hidden(idx)).squeeze(-1))


def test_shared_prefix_positions_and_mask_by_hand():
    # prefix a b, then sequence 1 = c, sequence 2 = d e, one padding slot
    pos, attn = shared_prefix_positions_and_mask(torch.tensor([[0, 0, 1, 2, 2, -1]]))
    assert pos.tolist() == [[0, 1, 2, 2, 3, 0]]  # d sits where c does: right after the prefix
    sees = [[1, 0, 0, 0, 0, 0],   # a
            [1, 1, 0, 0, 0, 0],   # b
            [1, 1, 1, 0, 0, 0],   # c: the prefix and itself
            [1, 1, 0, 1, 0, 0],   # d: the prefix and itself, not c
            [1, 1, 0, 1, 1, 0],   # e
            [1, 1, 0, 0, 0, 1]]   # padding: the prefix and itself (finite, never read)
    assert attn[0, 0].int().tolist() == sees


# --- 3. Tokenizer ----------------------------------------------------------------------------

def test_tokenizer_gpt2():
    enc = get_tokenizer("gpt2")
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.eot_token == 50256 and enc.n_vocab == 50257
    text = "Grüße aus Zürich — 東京は晴れ, Москва? ¡Sí! 🤖 naïve café"
    assert enc.decode(enc.encode(text)) == text
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_small_tokenizer_is_a_prefix_of_gpt2():
    full, small = get_tokenizer("gpt2"), get_tokenizer("gpt2-2048")
    assert small.n_vocab == 2048 and small.eot_token == 2047
    text = "The red fox lives in Oakton. Mira owns a small owl. THE END, 東京"
    ids = small.encode(text)
    assert max(ids) < 2047 and small.decode(ids) == text
    # every token of the small vocabulary is the same byte string in GPT-2
    assert all(small.decode_single_token_bytes(i) == full.decode_single_token_bytes(i) for i in range(0, 2047,
                                                                                                      7))
    assert len(ids) > len(full.encode(text))  # fewer merges, more tokens
    with pytest.raises(SystemExit, match="unknown tokenizer"):
        get_tokenizer("gpt2-10")


def test_world_tokenizer_splits_the_world_as_gpt2_does():
    # gpt2-world is the GPT-2 tokens of data/gpt2-world.txt renumbered in rank order: on the world's text it
    # must give GPT-2's own split, token for token, and any other text still round-trips through bytes
    full, world_enc = get_tokenizer("gpt2"), get_tokenizer("gpt2-world")
    with open(os.path.join(os.path.dirname(__file__), "..", "data", "gpt2-world.txt")) as f:
        ranks = sorted(int(r) for r in f.read().split())
    assert world_enc.n_vocab == len(ranks) + 1 and world_enc.eot_token == len(ranks)
    text = ("Rosa, Dan and Tia went to the bridge. Rosa brought a kite. Q: Where did they go? A: They went "
            "to "
            "the bridge.\n\nInstruction: Where does Mira live? Answer in one word.\nResponse: Oakton.")
    ids = world_enc.encode_ordinary(text)
    assert [ranks[i] for i in ids] == full.encode_ordinary(text)
    assert world_enc.decode([world_enc.encode_ordinary(" Stonebridge")[0]]) == " Stone"  # as GPT-2 splits it
    other = "Grüße aus Zürich — 東京, naïve café 🤖"
    assert world_enc.decode(world_enc.encode_ordinary(other)) == other


def test_tokenizer_matches_tiktoken_registry_when_cached():
    import tiktoken
    try:
        reference = tiktoken.get_encoding("gpt2")
    except Exception:
        pytest.skip("tiktoken's own gpt2 files are not cached on this machine (no network)")
    ours = get_tokenizer("gpt2")
    text = "It's 3.14159 o'clock; we'll  see\n\n  them   ALL-CAPS! 你好"
    assert ours.encode(text) == reference.encode(text)


# --- 4. Checkpoints ---------------------------------------------------------------------------

def test_checkpoint_roundtrip_and_crash_mid_write(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    model = tiny_model()
    opt = model.configure_optimizer(0.1, 1e-3)
    save_checkpoint(path, model, opt, step=7, tokenizer="gpt2-2048", rng=torch.get_rng_state())
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7 and ckpt["tokenizer"] == "gpt2-2048"
    restored = model_from_checkpoint(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))

    other = tiny_model(seed=1)

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-write")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="killed"):
        save_checkpoint(path, other, step=8)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 7
    assert os.listdir(tmp_path) == ["ckpt.pt"], "no temp file is left behind"


def test_world_tokenizer_must_fit_the_checkpoint(tmp_path):
    n = get_tokenizer("gpt2-world").n_vocab  # 1,545: data/gpt2-world.txt's 1,544 GPT-2 tokens and <|endoftext|>
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, tiny_model(vocab_size=n), tokenizer="gpt2-world")
    assert model_from_checkpoint(load_checkpoint(path)).config.vocab_size == n
    save_checkpoint(path, tiny_model(vocab_size=n - 1), tokenizer="gpt2-world")  # trained before a token was added
    with pytest.raises(SystemExit, match=f"has {n - 1} token embeddings but gpt2-world now has {n} tokens"):
        model_from_checkpoint(load_checkpoint(path))


def test_missing_checkpoint_is_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))
