"""
ppo.py: the maths of PPO and PPO-ptx by hand, ratio 1 on the first minibatch, DDP = one process,
exact resume, NaN stop, one-line errors.

    python -m pytest tests/test_ppo.py -q
"""
import hashlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import ppo
from common import compute_cleanup, write_jsonl
from model import (GPT, GPTConfig, generate, get_tokenizer, load_checkpoint, model_from_checkpoint,
                   save_checkpoint, scalar_head_model)

ROOT = os.path.join(os.path.dirname(__file__), "..")

T, F = True, False  # mask shorthand


# --- 1. the maths, by hand -----------------------------------------------------------------------

def test_kl_penalized_rewards_by_hand():
    # row 0: a 3-token response, the last token its <|endoftext|>; row 1: a 2-token response, then padding
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -7.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -0.5, -1.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    rewards, kl = ppo.kl_penalized_rewards(logprobs, ref_logprobs, torch.tensor([2.0, -1.0]), mask, beta=0.1)
    # row 0: log-ratios (−1 + 1.5, −2 + 1, −0.5 + 0.5) = (0.5, −1, 0);
    # rewards −0.1·(0.5, −1, 0) + (0, 0, 2)
    assert torch.allclose(kl[0], torch.tensor([0.5, -1.0, 0.0]))
    assert torch.allclose(rewards[0], torch.tensor([-0.05, 0.1, 2.0]))
    # row 1: log-ratios (1, −0.5), the score −1 at its last real token (column 1), nothing on the padding
    assert torch.allclose(rewards[1], torch.tensor([-0.1, 0.05 - 1.0, 0.0]))
    assert kl[1, 2] == 0 and rewards[1, 2] == 0


def test_gae_by_hand():
    rewards = torch.tensor([[-0.05, 0.1, 2.0], [1.0, 2.0, 0.0]])
    # row 1's 5.0 sits on padding and must be ignored
    values = torch.tensor([[0.5, 1.0, 1.5], [1.0, 1.0, 5.0]])
    mask = torch.tensor([[T, T, T], [T, T, F]])
    gamma, lam = 0.9, 0.95
    advantages, returns = ppo.gae_advantages(rewards, values, mask, gamma, lam)
    # row 0, backwards: δ3 = 2.0 + 0 − 1.5 = 0.5                         A3 = 0.5
    #                   δ2 = 0.1 + 0.9·1.5 − 1.0 = 0.45                   A2 = 0.45 + 0.9·0.95·0.5 = 0.8775
    #                   δ1 = −0.05 + 0.9·1.0 − 0.5 = 0.35                 A1 = 0.35 + 0.855·0.8775 = 1.1002625
    assert torch.allclose(advantages[0], torch.tensor([1.1002625, 0.8775, 0.5]))
    # returns = A + V
    assert torch.allclose(returns[0], torch.tensor([1.1002625 + 0.5, 0.8775 + 1.0, 0.5 + 1.5]))
    # row 1: δ2 = 2.0 + 0 − 1.0 = 1.0 (no value after the last token), A2 = 1.0
    #        δ1 = 1.0 + 0.9·1.0 − 1.0 = 0.9, A1 = 0.9 + 0.855·1.0 = 1.755
    assert torch.allclose(advantages[1], torch.tensor([1.755, 1.0, 0.0]))
    assert torch.allclose(returns[1], torch.tensor([2.755, 2.0, 0.0]))
    # γ = 1, λ = 1: the advantage is the sum of the rewards to go minus the value
    a, _ = ppo.gae_advantages(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(a[0], torch.tensor([2.05 - 0.5, 2.1 - 1.0, 2.0 - 1.5]))


def test_gae_ignores_rewards_on_padding():
    # row 1 of test_gae_by_hand with 9.0 on its padding: the advantages must not see it
    rewards = torch.tensor([[1.0, 2.0, 9.0]])
    values = torch.tensor([[1.0, 1.0, 5.0]])
    mask = torch.tensor([[T, T, F]])
    advantages, returns = ppo.gae_advantages(rewards, values, mask, 0.9, 0.95)
    # as there: A2 = 2.0 − 1.0 = 1.0, A1 = (1.0 + 0.9·1.0 − 1.0) + 0.855·1.0 = 1.755
    # (a leak would give δ3 = 9.0 and A2 = 1.0 + 0.855·9.0 = 8.695)
    assert torch.allclose(advantages, torch.tensor([[1.755, 1.0, 0.0]]))
    assert torch.allclose(returns, torch.tensor([[2.755, 2.0, 0.0]]))


def test_whiten_over_masked_tokens_only():
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[T, T, F], [T, F, F]])
    # the real entries are 1, 2, 3: mean 2, variance (1 + 0 + 1)/3 = 2/3; padding stays 0
    s = math.sqrt(2 / 3)
    assert torch.allclose(ppo.whiten(x, mask), torch.tensor([[-1 / s, 0.0, 0.0], [1 / s, 0.0, 0.0]]),
                          atol=1e-6)


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([[1.5, 0.5, 1.1, 0.5, 1.5, 50.0]])
    adv = torch.tensor([[1.0, -1.0, 2.0, 1.0, -1.0, 3.0]])
    mask = torch.tensor([[T, T, T, T, T, F]])  # the last token is padding
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.0, -3.0, -1.0]])
    new = (old + ratio.log()).requires_grad_()
    loss, stats = ppo.policy_loss(new, old, adv, mask, cliprange=0.2, n_tokens=5)
    # per token max(−A·ρ, −A·clip(ρ, 0.8, 1.2)): ρ 1.5, A +1: max(−1.5, −1.2) = −1.2   clipped above
    # 1+ε ρ 0.5, A −1: max(0.5, 0.8) = 0.8       clipped below 1−ε ρ 1.1, A +2: max(−2.2, −2.2) =
    # −2.2    inside the range ρ 0.5, A +1: max(−0.5, −0.8) = −0.5    below 1−ε but a positive
    # advantage: the unclipped, pessimistic term ρ 1.5, A −1: max(1.5, 1.2) = 1.5       above 1+ε
    # but a negative advantage: unclipped
    assert abs(loss.item() - (-1.2 + 0.8 - 2.2 - 0.5 + 1.5) / 5) < 1e-6
    assert abs(stats["clipfrac"].item() - 2 / 5) < 1e-6
    expected_kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2 + math.log(0.5) ** 2
                         + math.log(1.5) ** 2) / 5
    assert abs(stats["approx_kl"].item() - expected_kl) < 1e-6
    loss.backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] == 0, "clipped tokens get no gradient"
    assert new.grad[0, 5] == 0, "padding gets no gradient"
    assert abs(new.grad[0, 2].item() - (-2.0 * 1.1 / 5)) < 1e-6  # d(−A·ρ)/d log π = −A·ρ


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 1.0, 2.0, 0.0, 9.0]])
    old = torch.tensor([[0.5, 0.9, 1.0, 1.0, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 3.0, 0.5, 0.0]])
    mask = torch.tensor([[T, T, T, T, F]])
    loss, stats = ppo.value_loss(values, old, returns, mask, cliprange_value=0.2, n_tokens=4)
    # clipped prediction V_old + clip(V − V_old, ±0.2):  0.7, 1.0, 1.2, 0.8
    #   (1 − 2)² = 1    vs (0.7 − 2)² = 1.69  -> 1.69  clipped branch
    #   (1 − 0)² = 1    vs (1.0 − 0)² = 1     -> 1     inside the range
    #   (2 − 3)² = 1    vs (1.2 − 3)² = 3.24  -> 3.24  clipped branch
    #   (0 − .5)² = .25 vs (0.8 − .5)² = .09  -> 0.25  unclipped branch
    assert abs(loss.item() - 0.5 * (1.69 + 1 + 3.24 + 0.25) / 4) < 1e-6
    assert abs(stats["vf_clipfrac"].item() - 2 / 4) < 1e-6


def test_pretraining_term_and_equation_2_by_hand():
    ln2, ln3 = math.log(2), math.log(3)
    logits = torch.tensor([[[0.0, ln2, 0.0], [ln3, 0.0, 0.0]]])  # softmax (1/4, 2/4, 1/4) and (3/5, 1/5, 1/5)
    targets = torch.tensor([[1, 0]])
    ptx_logprob = ppo.pretraining_logprob(logits, targets, n_tokens=2)
    assert abs(ptx_logprob.item() - (math.log(1 / 2) + math.log(3 / 5)) / 2) < 1e-6
    # equation (2): mean(r − β·KL) + γ·E[log π(x)] with r = (1, 3), KL = (2, 4), β = 0.1, γ = 0.5,
    # E[log π(x)] = −2 = ((1 − 0.2) + (3 − 0.4)) / 2 + 0.5·(−2) = 1.7 − 1 = 0.7
    assert abs(ppo.objective(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0]), 0.1, -2.0,
                             0.5).item() - 0.7) < 1e-6
    # the loss minimised: pg_loss + vf_coef·vf_loss − γ·ptx_logprob
    #   = −0.32 + 0.1·0.7725 − 0.5·(−2) = 0.75725
    assert abs(ppo.ppo_ptx_loss(-0.32, 0.7725, -2.0, vf_coef=0.1, ptx_coef=0.5) - 0.75725) < 1e-9
    assert ppo.ppo_ptx_loss(-0.32, 0.7725, -2.0, vf_coef=0.1, ptx_coef=0.0) == -0.32 + 0.07725  # plain PPO


def test_adaptive_kl_and_final_score():
    # KL 9 vs target 6: error 0.5 clipped to 0.2; β·(1 + 0.2·64/10000) = 0.1·1.00128
    assert abs(ppo.adaptive_kl_coef(0.1, 9.0, 6.0, 64, 10000) - 0.100128) < 1e-12
    # KL 5.4 vs 6: error −0.1; β·(1 − 0.1·64/10000) = 0.1·0.99936
    assert abs(ppo.adaptive_kl_coef(0.1, 5.4, 6.0, 64, 10000) - 0.099936) < 1e-12
    score = ppo.final_score(torch.tensor([3.0, 0.5, -5.0]), torch.tensor([T, F, T]), -1.0, reward_clip=2.0)
    assert score.tolist() == [2.0, -1.0, -2.0]  # clipped; the unfinished response gets the penalty


def test_minibatches_do_not_depend_on_the_number_of_processes():
    def split(world_size):
        parts = [ppo.minibatch_rows(16, 8, r, world_size,
                                    torch.Generator().manual_seed(0)) for r in range(world_size)]
        return [sorted(int(i) + r * 16 // world_size for r in range(world_size) for i in parts[r][k]) for k in range(2)]
    one, two, four = split(1), split(2), split(4)
    assert one == two == four
    assert sorted(one[0] + one[1]) == list(range(16))


# --- a tiny world: SFT policy, RM, prompts, pretraining text ---------------------------------------

WORDS = ["fox", "owl", "deer", "cat", "dog", "hen", "bee", "ant", "elk", "yak"]


@pytest.fixture
def world(tmp_path):
    enc = get_tokenizer("gpt2-300")
    torch.manual_seed(0)
    sft = GPT(GPTConfig(block_size=96, vocab_size=enc.n_vocab, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():  # make <|endoftext|> likely (~7% a token) so some responses end and some do not:
        # the LayerNorm output sums to 0, so the eot logit is 0.4·0.5·16 = 3.2 always
        sft.transformer.ln_f.bias.fill_(0.5)
        sft.transformer.wte.weight[enc.eot_token] = 0.4
    save_checkpoint(str(tmp_path / "sft.pt"), sft, tokenizer="gpt2-300", step=0)
    torch.manual_seed(1)
    save_checkpoint(str(tmp_path / "rm.pt"), scalar_head_model(sft), tokenizer="gpt2-300", step=0)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say {w} {WORDS[(3 * i) % 10]}:",
                                                        "id": i} for i, w in enumerate(WORDS * 2)])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"The {a} met the {b} by the river and they talked.\n" for a in WORDS for b in WORDS[:4]))
    return {"policy": str(tmp_path / "sft.pt"), "rm": str(tmp_path / "rm.pt"), "prompts": prompts,
            "ptx": str(corpus),
            "out": str(tmp_path / "ppo"), "tmp": tmp_path}


def argv(world, *extra):
    return ["--policy", world["policy"], "--rm", world["rm"], "--prompts", world["prompts"], "--ptx_data",
            world["ptx"],
            "--out_dir", world["out"], "--device", "cpu", "--batch_size", "8", "--minibatch_size", "4",
            "--ppo_epochs", "2",
            "--max_new_tokens", "12", "--ptx_batch_size", "2", "--ptx_coef", "0.5", "--lr", "1e-3",
            "--value_lr", "1e-3",
            "--iterations", "2", "--save_interval", "1", "--sample_interval", "1", *extra]


def weights(path, key=None):
    ckpt = load_checkpoint(path)
    return ckpt[key]["model"] if key else ckpt["model"]


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_right_align_by_hand():
    # P = 3 prompt columns, N = 2 response columns; 9 is <|endoftext|>, 0 padding
    tokens = torch.tensor([[0, 5, 6, 7, 9],    # prompt of 2 after one pad; response 7, eot
                           [4, 5, 6, 7, 0]])   # prompt of 3; response 7, cut off at the limit
    mask = torch.tensor([[F, T, T, T, T], [T, T, T, T, F]])
    response_mask = torch.tensor([[T, T], [T, F]])
    aligned, lengths, keep = ppo.right_align(tokens, mask, response_mask)
    assert aligned[0, :4].tolist() == [5, 6, 7, 9] and aligned[1, :4].tolist() == [4, 5, 6, 7]
    assert lengths.tolist() == [4, 4]
    # the positions whose next token is a response token: row 0 predicts 7 at 1 and 9 at 2, row 1
    # predicts 7 at 2
    assert keep.tolist() == [[F, T, T, F, F], [F, F, T, F, F]]
    grid = ppo.on_response(torch.tensor([1.0, 2.0, 3.0]), response_mask)
    assert grid.tolist() == [[1.0, 2.0], [3.0, 0.0]]


def test_rollout_scores_equal_left_padded_forward(world):
    """score_rollouts reads right-aligned rows without a mask: the same log-probs, values and scores as the
    left-padded rows with their attention mask and positions (PPO-DETAILS 7)."""
    from common import rewards_at_last_token
    from model import token_logprobs
    enc = get_tokenizer("gpt2-300")
    args = ppo.parser.parse_args(["--max_new_tokens", "12", "--temperature", "0.7"])
    policy = model_from_checkpoint(load_checkpoint(world["policy"]), dropout=0.0)
    rm = model_from_checkpoint(load_checkpoint(world["rm"]), dropout=0.0)
    # lengths differ
    prompts = [enc.encode_ordinary("Say " + " ".join(WORDS[:n]) + ":") for n in (1, 4, 2, 7, 3, 1)]
    tokens, mask, _, response_mask = generate(policy, prompts, 12, enc.eot_token, 0.7,
                                              generator=torch.Generator().manual_seed(0))
    assert 0 < response_mask.sum(1).min() < response_mask.sum(1).max(), "responses of different lengths"
    rollout = ppo.score_rollouts(policy, policy, rm, rm, tokens, mask, response_mask, enc.eot_token, args,
                                 chunk=4)
    P = tokens.size(1) - response_mask.size(1)
    with torch.no_grad():
        logprobs = token_logprobs(policy(tokens, attention_mask=mask)[:, P - 1:-1], tokens[:, P:], 0.7)
        values = rm(tokens, attention_mask=mask)[:, P - 1:-1]
        score = rewards_at_last_token(rm, tokens, mask)
    for got, want in ((rollout["logprobs"], logprobs), (rollout["ref_logprobs"], logprobs),
                      (rollout["values"], values)):
        assert torch.allclose(got[response_mask], want[response_mask], atol=1e-5)
        assert (got[~response_mask] == 0).all()
    assert torch.allclose(rollout["rm_score"], score, atol=1e-5)


# --- 2. the first ratio is exactly 1; training runs and writes ------------------------------------

def test_ratio_is_one_on_first_minibatch_and_checkpoints(world, capsys):
    # the second iteration's stats: its old log-probs come from an already updated policy
    stats = ppo.main(argv(world))
    # 1 up to rounding: the old log-probs come from score_rollouts' chunks, the new from the
    # update's minibatches, other rows and shapes (|ρ − 1| 0 with AVX-512 kernels, 4.8e-7 with
    # AVX2's: 1 ulp of a log-prob near −5); another temperature or a shifted token moves these
    # log-probs by ~0.2
    assert stats["ratio_dev_first"] <= 1e-5 and stats["clipfrac_first"] == 0
    assert 0 < stats["eot"] < 1, "the tiny world has finished and unfinished responses"
    out = capsys.readouterr().out
    assert "iter 2/2 | eta" in out and "--- sample 0 | score" in out and "| ptx_loss" in out
    model = load_checkpoint(os.path.join(world["out"], "model.pt"))
    assert model["model_config"]["head"] == "lm" and model["tokenizer"] == "gpt2-300" and model["iteration"] == 2
    for n in (1, 2):
        assert load_checkpoint(os.path.join(world["out"], f"iter{n}.pt"))["model_config"]["head"] == "lm"
    assert max_diff(model["model"], weights(world["policy"])) > 1e-4, "the policy moved"
    with open(os.path.join(world["out"], "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["iter"] for r in records] == [1, 2]
    for key in ("score", "kl", "reward", "length", "entropy", "approx_kl", "clipfrac", "vf_loss", "ptx_loss",
                "beta",
                "explained_var", "t_rollout", "t_score", "t_update"):
        assert key in records[0], key
    for r in records:  # the first-ratio check is in the log too
        assert r["ratio_dev_first"] <= 1e-5 and r["clipfrac_first"] == 0
    assert records[-1]["ratio_dev_first"] == stats["ratio_dev_first"]
    r = records[0]
    assert abs(r["reward"] - (r["score"] - r["beta"] * r["kl"])) < 1e-5
    assert abs(r["kl"]) < 1e-5, "the first rollout comes from the SFT policy itself: KL 0"
    # a fresh run in the same folder starts its log anew and leaves no earlier run's iter<N>.pt behind
    os.rename(os.path.join(world["out"], "iter2.pt"), os.path.join(world["out"], "iter7.pt"))
    ppo.main(argv(world, "--iterations", "1"))
    assert not os.path.exists(os.path.join(world["out"], "iter7.pt"))
    with open(os.path.join(world["out"], "log.jsonl")) as f:
        assert [json.loads(line)["iter"] for line in f] == [1]


def test_plain_ppo_does_no_pretraining_forward(world, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("ptx forward with --ptx_coef 0")
    monkeypatch.setattr(ppo, "pretraining_logprob", forbidden)
    stats = ppo.main(argv(world, "--ptx_coef", "0", "--ptx_data", str(world["tmp"] / "absent.txt"),
                          "--iterations", "1"))
    assert "ptx_loss" in stats and stats["ptx_loss"] == 0


# --- 3. DDP: two processes on halves of a fixed rollout batch = one process on all of it -----------

def _update(world_dir, rank, world_size):
    """Run ppo_update on this rank's half of the fixed rollout batch saved by the test."""
    torch.set_num_threads(1)
    args = ppo.parser.parse_args(["--batch_size", "8", "--minibatch_size", "4", "--ppo_epochs", "2",
                                  "--ptx_coef", "0.5",
                                  "--ptx_batch_size", "2", "--lr", "1e-3", "--value_lr", "1e-3", "--out_dir",
                                  str(world_dir)])
    fixed = torch.load(os.path.join(world_dir, "fixed.pt"))
    policy = model_from_checkpoint(load_checkpoint(os.path.join(world_dir, "sft.pt")), dropout=0.0)
    value = model_from_checkpoint(load_checkpoint(os.path.join(world_dir, "rm.pt")), dropout=0.0)
    optimizers = (policy.configure_optimizer(0.0, args.lr), value.configure_optimizer(0.0, args.value_lr))
    share = 8 // world_size
    rollout = {k: v[rank * share:(rank + 1) * share] for k, v in fixed["rollout"].items()}

    def ptx(epoch, k):  # a fixed global pretraining batch of 2 sequences per step; this rank's share
        x = fixed["ptx"][(epoch * 2 + k) % 4][rank * 2 // world_size:(rank + 1) * 2 // world_size]
        return x[:, :-1], x[:, 1:]
    p, v = (DDP(policy), DDP(value)) if world_size > 1 else (policy, value)
    stats = ppo.ppo_update(p, v, optimizers, rollout, 0.05, 0, args, ptx=ptx)
    del p, v  # DDP wrappers hold the process group: gone before it is destroyed
    return {"policy": policy.state_dict(), "value": value.state_dict(), "stats": stats}


def _ddp_worker(rank, world_dir):
    dist.init_process_group("gloo", init_method=f"file://{world_dir}/pg", rank=rank, world_size=2)
    result = _update(world_dir, rank, 2)
    policy = model_from_checkpoint({"model": result["policy"],
                                    "model_config": load_checkpoint(os.path.join(world_dir,
                                                                                 "sft.pt"))["model_config"]})
    ppo.assert_ranks_agree(policy)  # the check run at every save passes after a DDP update...
    if rank == 1:
        with torch.no_grad():
            policy.lm_head.weight[0, 0] += 1e-3
    try:  # ...and stops every rank when one has drifted
        ppo.assert_ranks_agree(policy)
        result["drift_caught"] = False
    except SystemExit:
        result["drift_caught"] = True
    if rank == 0:
        torch.save(result, os.path.join(world_dir, "two.pt"))
    compute_cleanup()  # as the scripts end: neither rank tears the group down while the other still uses it


def test_ddp_update_equals_one_process(world):
    enc = get_tokenizer("gpt2-300")
    args = ppo.parser.parse_args(["--max_new_tokens", "12"])
    policy = model_from_checkpoint(load_checkpoint(world["policy"]), dropout=0.0)
    rm = model_from_checkpoint(load_checkpoint(world["rm"]), dropout=0.0)
    prompts = [enc.encode_ordinary(f"Say {w}:") for w in WORDS[:8]]
    tokens, mask, _, response_mask = generate(policy, prompts, 12, enc.eot_token,
                                              generator=torch.Generator().manual_seed(0))
    rollout = ppo.score_rollouts(policy, policy, rm, rm, tokens, mask, response_mask, enc.eot_token, args)
    # the policy is its own reference: make the KL non-zero
    rollout["ref_logprobs"] -= 0.01 * torch.arange(rollout["ref_logprobs"].size(1))
    # old log-probs 0.1 too high on the second process's rows only: there the first ratio is e^−0.1,
    # on the first's 1; the first minibatch's largest |ρ − 1|, 1 − e^−0.1, needs both processes
    rollout["logprobs"][4:] += 0.1 * rollout["response_mask"][4:]
    ptx = torch.randint(0, enc.n_vocab, (4, 2, 97), generator=torch.Generator().manual_seed(0))
    torch.save({"rollout": rollout, "ptx": ptx}, world["tmp"] / "fixed.pt")

    one = _update(world["tmp"], 0, 1)
    mp.spawn(_ddp_worker, args=(str(world["tmp"]),), nprocs=2, join=True)
    two = torch.load(world["tmp"] / "two.pt")
    assert max_diff(one["policy"], two["policy"]) <= 1e-5
    assert two["drift_caught"], "a rank whose weights differ is caught at save time"
    assert max_diff(one["value"], two["value"]) <= 1e-5
    assert max_diff(one["policy"], weights(world["policy"])) > 1e-4, "the update did something"
    for key in ("score", "kl", "loss", "pg_loss", "vf_loss", "ptx_loss", "clipfrac", "approx_kl", "entropy",
                "explained_var"):
        assert abs(one["stats"][key] - two["stats"][key]) <= 1e-5, key
    for stats in (one["stats"], two["stats"]):  # two: rank 0's, which logs
        assert abs(stats["ratio_dev_first"] - (1 - math.exp(-0.1))) <= 1e-5


def test_torchrun_two_processes(world):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "ppo.py",
                        *argv(world, "--sample_interval", "0")], cwd=ROOT, env=env, capture_output=True,
                        text=True)
    assert r.returncode == 0, r.stderr[-3000:]  # each save checks that both ranks hold the same weights
    with open(os.path.join(world["out"], "log.jsonl")) as f:
        assert [json.loads(line)["iter"] for line in f] == [1, 2]
    assert load_checkpoint(os.path.join(world["out"], "last.pt"))["iteration"] == 2


# --- 4. resume -------------------------------------------------------------------------------------

def test_resume_equals_uninterrupted(world, monkeypatch):
    common = ["--iterations", "3", "--adaptive_kl", "--target_kl", "0.01", "--horizon", "40",
              "--sample_interval", "0"]
    ppo.main(argv(world, *common, "--out_dir", world["out"] + "-a"))

    real = ppo.batch_indices

    def killed_in_iteration_4(n, batch_size, step, seed, stream):
        if stream == ppo.PROMPTS and step == 3:
            raise KeyboardInterrupt
        return real(n, batch_size, step, seed, stream)
    monkeypatch.setattr(ppo, "batch_indices", killed_in_iteration_4)
    with pytest.raises(KeyboardInterrupt):  # a longer run, saved every 2: iteration 3 is logged, not saved
        ppo.main(argv(world, *common, "--iterations", "4", "--save_interval", "2"))
    monkeypatch.undo()
    assert load_checkpoint(os.path.join(world["out"], "last.pt"))["iteration"] == 2
    ppo.main(argv(world, *common, "--resume"))

    a, b = (load_checkpoint(os.path.join(d, "last.pt")) for d in (world["out"] + "-a", world["out"]))
    assert b["iteration"] == 3 and a["beta"] == b["beta"] and a["beta"] != 0.05, "β adapted and resumed"
    assert max_diff(a["model"], b["model"]) <= 1e-6
    assert max_diff(a["value"]["model"], b["value"]["model"]) <= 1e-6
    # the resumed run's log has the uninterrupted one's rows: iteration 3 once, not once per run
    for d in (world["out"] + "-a", world["out"]):
        with open(os.path.join(d, "log.jsonl")) as f:
            assert [json.loads(line)["iter"] for line in f] == [1, 2, 3]


# --- 5. NaN stops with one line; the last good checkpoint stays -----------------------------------

def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_nan_stops_and_keeps_last_good_checkpoint(world, monkeypatch):
    ppo.main(argv(world, "--iterations", "1"))
    last = os.path.join(world["out"], "last.pt")
    before = sha(last)
    monkeypatch.setattr(ppo, "value_loss", lambda *a: (torch.tensor(float("nan")),
                                                       {"vf_clipfrac": torch.tensor(0.0)}))
    with pytest.raises(SystemExit) as e:
        ppo.main(argv(world, "--iterations", "3", "--resume"))
    message = str(e.value)
    assert message.startswith("error: loss is nan at step 2") and "\n" not in message and "last.pt" in message
    assert "last.pt still holds the last good state, step 1" in message
    assert sha(last) == before and load_checkpoint(last)["iteration"] == 1
    assert not [f for f in os.listdir(world["out"]) if ".tmp" in f]
    # a fresh run has no good state before its first save: the last.pt there is the earlier run's
    with pytest.raises(SystemExit) as e:
        ppo.main(argv(world, "--iterations", "3"))
    assert "still holds" not in str(e.value) and "no checkpoint of this run yet" in str(e.value)
    assert sha(last) == before


# --- 6. help and one-line errors ----------------------------------------------------------------------

def one_line_error(args):
    with pytest.raises(SystemExit) as e:
        ppo.main(args)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_errors(world):
    missing = str(world["tmp"] / "nope.pt")
    assert f"checkpoint {missing} not found" in one_line_error(argv(world, "--policy", missing))
    assert f"checkpoint {missing} not found" in one_line_error(argv(world, "--rm", missing))
    assert "--rm needs a reward model" in one_line_error(argv(world, "--rm", world["policy"]))
    assert "--policy needs the SFT language model" in one_line_error(argv(world, "--policy", world["rm"]))
    long = write_jsonl(world["tmp"] / "long.jsonl", [{"prompt": "Say fox:"}, {"prompt": "very " * 90}])
    n = len(get_tokenizer("gpt2-300").encode_ordinary("very " * 90))
    assert f"{long}:2: prompt of {n} tokens leaves no room" in one_line_error(argv(world, "--prompts", long))
    assert "not found" in one_line_error(argv(world, "--resume", "--out_dir", str(world["tmp"] / "none")))


def test_help_lists_every_flag():
    r = subprocess.run([sys.executable, "ppo.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                       check=True)
    for action in ppo.parser._actions:
        assert action.help, f"{action.dest} has no help"
        assert action.option_strings[0] in r.stdout
