"""
python export.py: our checkpoints as Hugging Face GPT-2 folders, written without
transformers; transformers loads them and computes what ours do (logits, greedy samples, rewards),
and its tokenizer encodes as ours.

    python -m pytest tests/test_export.py -q
"""
import os
import random

import pytest
import torch

from common import rewards_at_last_token
from export import export_tokenizer, main as export_main
from model import (GPT, GPTConfig, from_pretrained, generate, get_tokenizer, left_pad,
                   save_checkpoint, scalar_head_model)

transformers = pytest.importorskip("transformers")


def tiny(vocab_size):
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


def export(tmp_path, net, tokenizer):
    ckpt, folder = str(tmp_path / "model.pt"), str(tmp_path / "hf")
    save_checkpoint(ckpt, net, tokenizer=tokenizer)
    export_main([ckpt, folder])  # the command line's path
    return folder


# --- 1. a language model: GPT2LMHeadModel -------------------------------------------------------

@pytest.mark.parametrize("tokenizer", ["gpt2-2048", "gpt2"])  # gpt2: the 50,257-token vocabulary
def test_language_model_loads_in_transformers(tmp_path, tokenizer):
    enc = get_tokenizer(tokenizer)
    ours = tiny(enc.n_vocab)
    folder = export(tmp_path, ours, tokenizer)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    assert sorted(os.listdir(folder)) == ["config.json", "merges.txt", "model.safetensors",
                                          "special_tokens_map.json", "tokenizer_config.json",
                                          "vocab.json"]

    idx = torch.randint(0, enc.n_vocab, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (theirs(idx).logits - ours(idx)).abs().max().item() <= 1e-4
    # greedy: the same tokens, up to and with <|endoftext|> (transformers stops there)
    texts = ["The red fox lives in Oakton.", "Instruction: Write Mira in capitals.\nResponse:",
             "Q: 2 + 2? A:"]
    for prompt in map(enc.encode_ordinary, texts):
        tokens, _, _, response_mask = generate(ours, [prompt], 20, enc.eot_token, temperature=0)
        mine = tokens[0, len(prompt):][response_mask[0]].tolist()
        out = theirs.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=20,
                              eos_token_id=enc.eot_token, pad_token_id=enc.eot_token)
        assert out[0, len(prompt):].tolist() == mine
    # and our own reader reads it back to the same weights
    back = from_pretrained(folder).state_dict()
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())


# --- 2. a reward model: GPT2ForSequenceClassification, the normalisation folded in -------------

def test_reward_model_loads_in_transformers(tmp_path):
    enc = get_tokenizer("gpt2-2048")
    rm = scalar_head_model(tiny(enc.n_vocab)).eval()
    with torch.no_grad():
        rm.score.bias.fill_(-1.7)  # reward.py's normalising shift lives here
    folder = export(tmp_path, rm, "gpt2-2048")
    theirs = transformers.GPT2ForSequenceClassification.from_pretrained(folder).eval()
    assert theirs.config.num_labels == 1
    assert theirs.config.folded_score_bias == pytest.approx(-1.7)
    texts = ["Instruction: Name a bird.\nResponse: An owl.", "Instruction: Say hi.\nResponse: Hi",
             "Q: Where? A: Oakton."]
    rows = [enc.encode_ordinary(t) + [enc.eot_token] for t in texts]
    with torch.no_grad():
        want = rewards_at_last_token(rm, *left_pad(rows, 0))
        got = torch.cat([theirs(torch.tensor([row])).logits[:, 0] for row in rows])  # one per call
    assert (want - got).abs().max().item() <= 1e-4
    assert want.abs().min().item() > 0.1, "rewards far from 0: a lost bias would show"


# --- 3. the tokenizer files -------------------------------------------------------------------

def strings():
    """100 texts of the default world (corpus documents, prompts with their responses) and 100
    others: other scripts, emoji, digits, code, runs of spaces and newlines, contractions."""
    from data.world import build_splits, corpus_document, make_world
    rng = random.Random(0)
    world = make_world(1234)
    texts = [corpus_document(rng, world)[0] for _ in range(70)]
    texts += [r["prompt"] + r["response"] for r in build_splits(1234)["sft_val"][:30]]
    pieces = ["Grüße", " aus", " Zürich", " —", " 東京は晴れ", " Москва", "?", " ¡Sí!", " 🤖",
              " naïve", " café", "It's", " we'll", " they're", " I'd", " 3.14159", " 2024", "   ",
              "\n\n", "\t", " \n ", "def f(x):\n    return x", " ALL-CAPS", " snake_case",
              ' {"k": [1, 2]}', " ½", " \u200b", " \u0303", " 👩\u200d👩\u200d👧", " x" * 5, " OAKTON",
              "ſ"]
    for _ in range(100):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))))
    return texts


@pytest.mark.parametrize("tokenizer", ["gpt2-2048", "gpt2-world", "gpt2"])
def test_tokenizer_encodes_as_ours(tmp_path, tokenizer):
    enc = get_tokenizer(tokenizer)
    export_tokenizer(tokenizer, str(tmp_path), 64)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(theirs) == enc.n_vocab and theirs.eos_token_id == enc.eot_token
    texts = strings()
    assert len(texts) == 200
    for text in texts:
        ids = enc.encode_ordinary(text)
        assert theirs(text, add_special_tokens=False)["input_ids"] == ids, text
        assert theirs.decode(ids) == text
    text = "Hi<|endoftext|>"
    assert theirs(text)["input_ids"] == enc.encode(text, allowed_special="all")
