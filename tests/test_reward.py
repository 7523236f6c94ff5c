"""
reward.py: equation (1) by hand, one forward pass per prompt (its K completions packed), normalisation,
one-line errors.

    python -m pytest tests/test_reward.py -q
"""
import json
import math
import os
import sys

import pytest
import torch

import reward
from common import write_jsonl
from model import GPT, GPTConfig, get_tokenizer, load_checkpoint, save_checkpoint


def softplus(x):
    return math.log(1 + math.exp(x))


# --- 1. equation (1) by hand -----------------------------------------------------------------

def test_ranking_loss_k3_by_hand():
    # rewards 2.0 > 0.5 > −1.0, ranked in that order: pairs (1,2), (1,3), (2,3) with differences 1.5, 3.0, 1.5
    loss, (correct, pairs) = reward.ranking_loss(torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([3]))
    # −log σ(d) = softplus(−d), C(3,2) = 3
    expected = (1 / 3) * (softplus(-1.5) + softplus(-3.0) + softplus(-1.5))
    assert abs(loss.item() - expected) < 1e-6
    assert (correct.tolist(), pairs.tolist()) == ([3], [3])


def test_ranking_loss_mixed_k_ignores_padding():
    # prompt A: K = 2, rewards (0.3, 1.0) -> one pair, wrongly ordered by the RM: d = −0.7
    # prompt B: K = 4, rewards (1, 0, 0, −2) -> C(4,2) = 6 pairs with d = 1, 1, 3, 0, 2, 2
    loss_a = softplus(0.7)
    loss_b = (softplus(-1) + softplus(-1) + softplus(-3) + softplus(0) + softplus(-2) + softplus(-2)) / 6
    for pad in (0.0, 1e4, -1e4):  # whatever sits in A's padded slots must not matter
        rewards = torch.tensor([[0.3, 1.0, pad, pad], [1.0, 0.0, 0.0, -2.0]])
        loss, (correct, pairs) = reward.ranking_loss(rewards, torch.tensor([2, 4]))
        assert abs(loss.item() - (loss_a + loss_b) / 2) < 1e-6, \
            "the batch loss is the mean of the prompts' losses"
        assert pairs.tolist() == [1, 6], "per prompt: C(2,2) and C(4,2)"
        assert correct.tolist() == [0, 5]  # the tie (d = 0) is not counted correct


def test_ranking_loss_gradient_skips_padding():
    rewards = torch.tensor([[0.3, 1.0, 7.0], [1.0, 0.0, -2.0]], requires_grad=True)
    loss, _ = reward.ranking_loss(rewards, torch.tensor([2, 3]))
    loss.backward()
    assert rewards.grad[0, 2] == 0
    # d loss / d r_w for A's single pair: −(1/2)·σ(−d) with d = −0.7
    assert abs(rewards.grad[0, 0].item() + 0.5 / (1 + math.exp(-0.7))) < 1e-6


def test_accuracy_interval_treats_each_prompt_as_one_draw():
    # three prompts with (correct, pairs) = (1, 1), (5, 6), (0, 3): accuracy 6 / 10 = 0.6; residuals
    # c − 0.6·p = 0.4, 1.4, −1.8, squares 0.16 + 1.96 + 3.24 = 5.36; variance 3/2 · 5.36 / 10² = 0.0804
    c, p = [1, 5, 0], [1, 6, 3]
    sums = (sum(c), sum(p), sum(x * x for x in c), sum(x * y for x, y in zip(c, p)), sum(y * y for y in p))
    assert sums == (6, 10, 26, 31, 46)
    acc, half = reward.accuracy_interval(*sums, 3)
    assert abs(acc - 0.6) < 1e-12 and abs(half - 1.96 * math.sqrt(0.0804)) < 1e-12  # 0.5558
    # every prompt at the same accuracy: no spread between prompts, no interval
    assert reward.accuracy_interval(4, 8, 1 + 9, 2 + 18, 4 + 36, 2) == (0.5, 0.0)


def test_normalizing_shift():
    assert reward.normalizing_shift(torch.tensor([1.0, 2.0, 6.0])).item() == -3.0


# --- fixtures: a tiny SFT checkpoint and its data ------------------------------------------------

WORDS = ["fox", "owl", "deer", "cat", "dog", "hen", "bee", "ant", "elk", "yak"]


@pytest.fixture
def world(tmp_path):
    enc = get_tokenizer("gpt2-300")
    torch.manual_seed(0)
    sft = GPT(GPTConfig(block_size=64, vocab_size=enc.n_vocab, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(str(tmp_path / "sft.pt"), sft, tokenizer="gpt2-300", step=0)
    # the "labelers" prefer completions that repeat the animal of the prompt more often
    rankings = []
    for i in range(40):
        a = WORDS[i % 10]
        k = 2 + i % 4
        rankings.append({"prompt": f"Say {a}:", "completions": [(" " + a) * (k - j) for j in range(k)],
                         "category": ["even", "odd"][i % 2]})
    demos = [{"prompt": f"Say {a}:", "response": (" " + a) * 4} for a in WORDS]
    return {"sft": str(tmp_path / "sft.pt"), "train": write_jsonl(tmp_path / "train.jsonl", rankings),
            "val": write_jsonl(tmp_path / "val.jsonl", rankings[:8]),
            "demos": write_jsonl(tmp_path / "demos.jsonl", demos),
            "out": str(tmp_path / "rm")}


def run(world, *extra):
    return reward.main(["--sft", world["sft"], "--train", world["train"], "--val", world["val"],
                        "--val_heldout", world["val"],
                        "--demos", world["demos"], "--out_dir", world["out"], "--batch_size", "8",
                        "--micro_batch_size", "4",
                        "--device", "cpu", "--lr", "3e-3", "--warmup_steps", "2", *extra])


# --- 2. one forward pass per prompt --------------------------------------------------------------

def test_pack_ranking_shares_the_prefix_once():
    # three sequences that begin 5, 6: the prefix once, then each one's own tokens
    tokens, segments, ends = reward.pack_ranking([[5, 6, 7, 1], [5, 6, 8, 1], [5, 6, 7, 9, 1]])
    assert tokens == [5, 6, 7, 1, 8, 1, 7, 9, 1]
    assert segments == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert ends == [3, 5, 8]
    # a sequence that is all prefix but its last token keeps that token its own
    assert reward.pack_ranking([[5, 1], [5, 6, 1]]) == ([5, 1, 6, 1], [0, 1, 2, 2], [1, 3])


def test_one_forward_row_per_prompt(world):
    enc = get_tokenizer("gpt2-300")
    rankings, _, _ = reward.load_rankings(world["train"], enc, 64)
    batch = [rankings[1], rankings[2]]  # K = 3 and K = 4
    assert [len(r) for r in batch] == [3, 4]
    from model import model_from_checkpoint, scalar_head_model
    rm = scalar_head_model(model_from_checkpoint(load_checkpoint(world["sft"])))
    rows = []
    hook = rm.register_forward_hook(lambda module, inputs, output: rows.append(inputs[0].size(0)))
    rewards, k = reward.forward_rankings(rm, batch, "cpu")
    hook.remove()
    assert rows == [2], "one forward pass, one row per prompt: not K rows, not C(K,2) pairs"
    assert k.tolist() == [3, 4] and rewards.shape == (2, 4) and rewards[0, 3] == 0
    # each reward is what the completion gets alone, at its last token
    with torch.no_grad():
        alone = [[rm(torch.tensor([s]))[0, -1].item() for s in r] for r in batch]
    assert torch.allclose(rewards[0, :3], torch.tensor(alone[0]), atol=1e-5)
    assert torch.allclose(rewards[1], torch.tensor(alone[1]), atol=1e-5)
    # the rows go through in length groups: the rewards and gradient of one padded pass
    results = []
    for group in (1000, 1):
        rm.zero_grad()
        rewards, k = reward.forward_rankings(rm, batch, "cpu", rows=group)
        reward.ranking_loss(rewards, k)[0].backward()
        results.append((rewards.detach(), [p.grad.clone() for p in rm.parameters() if p.grad is not None]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    # rounding scales with the largest terms summed, not with each entry (1.7e-6 on entries of
    # c_proj.bias near 3; an entry-wise rtol had 2x margin): one bound per tensor, 1e-5 at least for
    # ln_f.bias and score.bias, whose exact gradient is 0 (a shift of every reward) and float one
    # noise of O(1) terms
    grads = zip(results[0][1], results[1][1])
    assert all((a - b).abs().max() <= 1e-5 * max(b.abs().max(), 1) for a, b in grads)
    flat, _, _ = reward.load_rankings(world["train"], enc, 64, flat_pairs=True)
    assert len(flat) == sum(n * (n - 1) // 2 for n in (2 + i % 4 for i in range(40)))


# --- 4. normalisation, and training works --------------------------------------------------------

def test_train_normalise_and_checkpoint(world, capsys):
    final = run(world, "--epochs", "3")
    ckpt = load_checkpoint(os.path.join(world["out"], "model.pt"))
    assert ckpt["model_config"]["head"] == "scalar" and ckpt["tokenizer"] == "gpt2-300"
    assert final["val_acc"] > 0.6, "the tiny RM learns the ranking rule"
    out = capsys.readouterr().out
    demo_mean = float(out.split("demonstrations mean ")[1].split()[0])
    assert abs(demo_mean) <= 0.01, "after normalisation the demonstrations score 0 on average"
    # per category: validation rankings 0, 2, 4, 6 have K = 2, 4, 2, 4 (1 + 6 + 1 + 6 = 14 pairs),
    # 1, 3, 5, 7 have K = 3, 5, 3, 5 (3 + 10 + 3 + 10 = 26 pairs); the overall accuracy is their
    # pair-weighted mean
    even, odd = final["by_category"]["even"], final["by_category"]["odd"]
    assert even["rankings"] == odd["rankings"] == 4
    assert abs((14 * even["val_acc"] + 26 * odd["val_acc"]) / 40 - final["val_acc"]) < 1e-6
    assert "RM accuracy by category" in out and f"even {even['val_acc']:.1%} / {even['heldout_acc']:.1%}" in out
    # the summary line carries each accuracy's interval over the 8 validation prompts: none when every
    # prompt's pairs are all ordered right, as the tiny RM may manage
    for key in ("val_acc", "heldout_acc"):
        assert (final[key + "_ci"] == 0) == (final[key] == 1) and final[key + "_ci"] < 0.5
    assert (f"validation {final['val_acc']:.1%} (± {final['val_acc_ci']:.1%}) | held-out labelers "
            f"{final['heldout_acc']:.1%} (± {final['heldout_acc_ci']:.1%};") in out


# --- 5. bad input ----------------------------------------------------------------------------------

def one_line_error(world, *extra):
    with pytest.raises(SystemExit) as e:
        run(world, *extra)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


@pytest.mark.parametrize("record, message", [
    ({"prompt": "p", "completions": ["only one"]}, "a ranking needs K >= 2 completions, got 1"),
    ({"prompt": "p", "completions": ["same", "other", "same"]}, "duplicate completions"),
    ({"prompt": "p", "completions": ["fine", " "]}, "completion 2 is empty"),
    ({"prompt": "p", "answer": "x"}, "needs 'completions'"),
])
def test_bad_rankings(world, tmp_path, record, message):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completions": ["a", "b"]}, record])
    error = one_line_error(world, "--train", bad)
    assert error.startswith(f"error: {bad}:2: ") and message in error


def test_lm_checkpoint_where_rm_is_needed_and_back(world):
    run(world, "--max_steps", "1")
    rm_path = os.path.join(world["out"], "model.pt")
    assert "already a reward/value model" in one_line_error(world, "--sft", rm_path)
    assert "not found" in one_line_error(world, "--sft", os.path.join(world["out"], "nope.pt"))


def test_init_rm_continues_a_reward_model(world):
    run(world, "--max_steps", "1")
    first = load_checkpoint(os.path.join(world["out"], "model.pt"))
    # lr 0: the body must be the first RM's exactly; only the head's shift is set anew
    out2 = world["out"] + "-round2"
    run(world, "--init_rm", os.path.join(world["out"], "model.pt"), "--max_steps", "1", "--lr", "0",
        "--out_dir", out2)
    second = load_checkpoint(os.path.join(out2, "model.pt"))
    assert all(torch.equal(first["model"][k], v) for k, v in second["model"].items() if k != "score.bias")
    assert "language model checkpoint" in one_line_error(world, "--init_rm", world["sft"])


# --- same engineering as sft.py: exact resume, DDP ----------------------------------------------

def test_resume_equals_uninterrupted(world, monkeypatch):
    common = ["--epochs", "2", "--eval_interval", "2", "--log_interval", "1"]
    run(world, *common, "--out_dir", world["out"] + "-a")
    real = reward.cosine_lr

    def killed_in_step_6(step, *a):  # after step 5 is logged; its checkpoint (every 2 steps) never came
        if step == 5:
            raise KeyboardInterrupt
        return real(step, *a)
    monkeypatch.setattr(reward, "cosine_lr", killed_in_step_6)
    with pytest.raises(KeyboardInterrupt):
        run(world, *common)
    monkeypatch.undo()
    run(world, *common, "--resume")
    a = load_checkpoint(os.path.join(world["out"] + "-a", "model.pt"))["model"]
    b = load_checkpoint(os.path.join(world["out"], "model.pt"))["model"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # the resumed run's log has the uninterrupted one's rows: step 5 once, not once per run
    assert log_rows(world["out"]) == log_rows(world["out"] + "-a")



def test_resuming_a_finished_run_logs_no_row_again(world):
    """A --resume of a run that had already finished trains no step: it normalises and saves again,
    and log.jsonl keeps the finished run's rows, its last validation once."""
    run(world, "--max_steps", "2")
    rows = log_rows(world["out"])
    final = run(world, "--max_steps", "2", "--resume")
    assert final["step"] == 2 and "val_acc" in final
    assert log_rows(world["out"]) == rows

def log_rows(out_dir):
    """(step, what was logged) of each log.jsonl row."""
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [(r["step"], sorted(r)) for r in map(json.loads, f)]


def test_nan_stop_names_the_last_good_checkpoint(world, monkeypatch):
    run(world, "--max_steps", "2")  # last.pt at step 2
    real = reward.ranking_loss

    def nan_loss(*a):
        loss, stats = real(*a)
        return loss * float("nan"), stats
    monkeypatch.setattr(reward, "ranking_loss", nan_loss)
    with pytest.raises(SystemExit) as e:
        run(world, "--max_steps", "4", "--resume")
    assert f"{world['out']}/last.pt still holds the last good state, step 2" in str(e.value)
    assert str(e.value).startswith("error: loss is nan at step 3:")  # counted from 1, as logged
    with pytest.raises(SystemExit) as e:  # a fresh run: the last.pt there is the earlier run's
        run(world, "--max_steps", "4")
    assert "still holds" not in str(e.value) and "no checkpoint of this run yet" in str(e.value)


def test_torchrun_two_processes_equal_one(world):
    import subprocess
    root = os.path.join(os.path.dirname(__file__), "..")
    common = ["--sft", world["sft"], "--train", world["train"], "--val", world["val"], "--val_heldout", "",
              "--demos", world["demos"], "--batch_size", "8", "--micro_batch_size", "4", "--max_steps", "3",
              "--device", "cpu",
              "--log_interval", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "reward.py", *common, "--out_dir", world["out"] + "-1"], cwd=root,
                   env=env, check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "reward.py", *common,
                        "--out_dir", world["out"] + "-2"], cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_checkpoint(os.path.join(world["out"] + "-1", "model.pt"))["model"]
    b = load_checkpoint(os.path.join(world["out"] + "-2", "model.pt"))["model"]
    # ln_f.bias and score.bias only shift every reward: the ranking loss's exact gradient on them is
    # 0, the float one rounding noise about Adam's eps (1e-8), so AdamW moves them by a random part
    # of the lr (1.3e-5 apart with AVX2 kernels), and the normalisation sets score.bias anew. The
    # rest differ by rounding (5e-8); a lost micro-batch's gradient moves weights by about the
    # warm-up lr, 3e-5 at step 1 (a summed, unaveraged one does not: Adam is scale-free)
    shift = ("transformer.ln_f.bias", "score.bias")
    assert max((a[k] - b[k]).abs().max().item() for k in a if k not in shift) <= 1e-6
