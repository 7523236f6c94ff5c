"""
sft.py: the masked loss by hand, exact resume, DDP = one process, one-line errors.

    python -m pytest tests/test_sft.py -q
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import sft
from model import load_checkpoint

ROOT = os.path.join(os.path.dirname(__file__), "..")

TINY = ["--init", "scratch", "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "96",
        "--tokenizer", "gpt2-300", "--warmup_steps", "2", "--log_interval", "1", "--device", "cpu"]


def write_demos(path, n, seed=0, long_every=0):
    names = ["Mira", "Bob", "Ana", "Tom", "Lia", "Oakton", "Hill"]
    with open(path, "w") as f:
        for i in range(n):
            a, b = names[(i + seed) % 7], names[(3 * i + seed) % 7]
            prompt = f"Instruction: Write {a} and {b} in capitals.\nResponse:"
            if long_every and i % long_every == 0:
                prompt = "Instruction: " + "very " * 60 + "long.\nResponse:"
            f.write(json.dumps({"prompt": prompt, "response": f" {a.upper()} {b.upper()}"}) + "\n")
    return str(path)


@pytest.fixture
def demos(tmp_path):
    return write_demos(tmp_path / "train.jsonl", 48), write_demos(tmp_path / "val.jsonl", 8, seed=3)


# --- 2. the masked loss, by hand -------------------------------------------------------------

def test_masked_loss_by_hand():
    # vocabulary {0, 1, 2}, eot = 2. Example A: prompt [0, 1], response [1], eot. Example B: prompt
    # [1], response [0], eot.
    x, y = sft.collate([([0, 1, 1, 2], 2), ([1, 0, 2], 1)], eot=2, device="cpu")
    assert x.tolist() == [[0, 1, 1], [1, 0, 2]]
    assert y.tolist() == [[-1, 1, 2], [0, 2, -1]]  # A's prompt token 1 is context; B is padded after its eot
    ln2, ln3 = math.log(2), math.log(3)
    logits = torch.tensor([[[0, ln2, 0]] * 3,  # softmax = (1/4, 2/4, 1/4) at every position of A
                           # B: (1/4, 2/4, 1/4), (3/5, 1/5, 1/5), padding
                           [[0, ln2, 0], [ln3, 0, 0], [5.0, -1.0, 2.0]]], requires_grad=True)
    # targets: A -> token 1 (p 2/4), eot (p 1/4); B -> token 0 (p 1/4), eot (p 1/5)
    # loss = [ln(4/2) + ln 4 + ln 4 + ln 5] / 4 = ln(2·4·4·5) / 4 = ln(160) / 4
    loss = sft.masked_lm_loss(logits, y, n_tokens=4)
    assert abs(loss.item() - math.log(160) / 4) < 1e-6
    loss.backward()
    assert logits.grad[0, 0].abs().sum() == 0, "the prediction of a prompt token gets no gradient"
    assert logits.grad[1, 2].abs().sum() == 0, "padding gets no gradient"
    assert logits.grad[0, 1].abs().sum() > 0 and logits.grad[1, 0].abs().sum() > 0


def test_cosine_lr():
    assert sft.cosine_lr(0, 1.0, 4, 104, 0.1) == 0.25  # warm-up: (0 + 1) / 4
    assert sft.cosine_lr(4, 1.0, 4, 104, 0.1) == 1.0  # the peak, cos(0) = 1
    assert abs(sft.cosine_lr(54, 1.0, 4, 104, 0.1) - (0.1 + 0.9 * 0.5)) < 1e-12  # half way: cos(π/2) = 0
    assert abs(sft.cosine_lr(104, 1.0, 4, 104, 0.1) - 0.1) < 1e-12


# --- 3. resume ---------------------------------------------------------------------------------

def weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_resume_equals_uninterrupted(tmp_path, demos, monkeypatch, dtype):
    train, val = demos
    common = TINY + ["--train", train, "--val", val, "--batch_size", "16", "--micro_batch_size", "8",
                     "--epochs", "2", "--eval_interval", "2", "--dtype", dtype,
                     "--dropout", "0.2"]  # dropout: the RNG state must resume too
    if dtype == "float16":
        # GradScaler's scale moving every step: doubled after each finite step, halved (the step
        # skipped) after an overflow. A resume with a fresh scaler would skip other steps.
        scaler = torch.amp.GradScaler
        monkeypatch.setattr(torch.amp, "GradScaler",
                            lambda device: scaler(device, init_scale=2.0**20, growth_interval=1))
    sft.main(common + ["--out_dir", str(tmp_path / "a")])

    real = sft.cosine_lr

    def killed_in_step_6(step, *a):  # after step 5 is logged; its checkpoint (every 2 steps) never came
        if step == 5:
            raise KeyboardInterrupt
        return real(step, *a)
    monkeypatch.setattr(sft, "cosine_lr", killed_in_step_6)
    with pytest.raises(KeyboardInterrupt):
        sft.main(common + ["--out_dir", str(tmp_path / "b")])
    monkeypatch.undo()
    assert load_checkpoint(str(tmp_path / "b" / "last.pt"))["step"] == 4
    with open(tmp_path / "b" / "log.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # and a line the kill cut short
    sft.main(common + ["--out_dir", str(tmp_path / "b"), "--resume"])

    a, b = weights(str(tmp_path / "a" / "last.pt")), weights(str(tmp_path / "b" / "last.pt"))
    assert load_checkpoint(str(tmp_path / "b" / "last.pt"))["step"] == 6
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    if dtype == "float16":  # the scaler resumed where it was: its scale had moved from 2**20 by then
        scalers = [load_checkpoint(str(tmp_path / d / "last.pt"))["scaler"] for d in "ab"]
        assert scalers[0] == scalers[1] and scalers[0]["scale"] != 2.0**20
    # the resumed run's log has the uninterrupted one's rows: step 5 once, not once per run
    assert log_rows(tmp_path / "b") == log_rows(tmp_path / "a")


def log_rows(out_dir):
    """(step, what was logged) of each log.jsonl row."""
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [(r["step"], sorted(r)) for r in map(json.loads, f)]


def test_nan_stop_names_the_last_good_checkpoint(tmp_path, demos, monkeypatch):
    train, val = demos
    common = TINY + ["--train", train, "--val", val, "--batch_size", "16",
                     "--out_dir", str(tmp_path)]
    sft.main(common + ["--max_steps", "2"])  # last.pt at step 2
    real = sft.masked_lm_loss
    monkeypatch.setattr(sft, "masked_lm_loss", lambda *a: real(*a) * float("nan"))
    with pytest.raises(SystemExit) as e:
        sft.main(common + ["--max_steps", "4", "--resume"])
    assert f"{tmp_path}/last.pt still holds the last good state, step 2" in str(e.value)
    # steps count from 1, as in the progress lines and log.jsonl (and ppo.py's iterations)
    assert str(e.value).startswith("error: loss is nan at step 3:")
    with pytest.raises(SystemExit) as e:  # a fresh run: the last.pt there is the earlier run's
        sft.main(common + ["--max_steps", "4"])
    assert "still holds" not in str(e.value) and "no checkpoint of this run yet" in str(e.value)


# --- 4. DDP ------------------------------------------------------------------------------------

def losses(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def test_torchrun_two_processes_equal_one(tmp_path, demos):
    train, val = demos
    common = TINY + ["--train", train, "--val", val, "--batch_size", "8", "--micro_batch_size", "4",
                     "--max_steps", "4",
                     "--eval_interval", "100", "--dropout", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "sft.py", *common, "--out_dir", str(tmp_path / "one")], cwd=ROOT,
                   check=True, env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "sft.py", *common,
                        "--out_dir", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True,
                        text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert max(abs(a - b) for a, b in zip(one, two)) <= 1e-5
    a, b = weights(str(tmp_path / "one" / "last.pt")), weights(str(tmp_path / "two" / "last.pt"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


def test_length_sorted_micro_batches_give_the_whole_batch_gradient(tmp_path):
    train = write_demos(tmp_path / "train.jsonl", 48, long_every=3)  # every third prompt ~60 tokens longer
    val = write_demos(tmp_path / "val.jsonl", 8, seed=3)
    common = TINY + ["--train", train, "--val", val, "--batch_size", "8", "--max_steps", "3",
                     "--eval_interval", "100", "--dropout", "0"]
    sft.main(common + ["--micro_batch_size", "8", "--out_dir", str(tmp_path / "whole")])
    sft.main(common + ["--micro_batch_size", "2", "--out_dir", str(tmp_path / "sorted")])
    # losses near ln 300 = 5.7, where a float32 ulp is 4.8e-7: summed in other groups, 2.4e-7 apart
    assert max(abs(a - b) for a, b in zip(losses(tmp_path / "whole"), losses(tmp_path / "sorted"))) <= 1e-5
    a, b = weights(str(tmp_path / "whole" / "last.pt")), weights(str(tmp_path / "sorted" / "last.pt"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


# --- 5. bad input: one-line errors ---------------------------------------------------------------

def one_line_error(argv):
    with pytest.raises(SystemExit) as e:
        sft.main(argv)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_errors(tmp_path, demos, capsys):
    train, val = demos
    base = TINY + ["--val", val, "--out_dir", str(tmp_path / "o"), "--max_steps", "1"]
    assert "nope.jsonl not found" in one_line_error(base + ["--train", str(tmp_path / "nope.jsonl")])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": \n')
    assert f"{bad}:2: not valid JSON" in one_line_error(base + ["--train", str(bad)])
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    assert f"{bad}:2: missing string field 'response'" in one_line_error(base + ["--train", str(bad)])
    bad.write_text('{"prompt": "a", "response": "   "}\n')
    assert f"{bad}:1: empty response" in one_line_error(base + ["--train", str(bad)])

    missing = str(tmp_path / "base" / "model.pt")
    assert f"checkpoint {missing} not found" in one_line_error(base + ["--train", train, "--init", missing])
    assert "not found" in one_line_error(TINY[2:] + ["--train", train, "--val", val, "--resume", "--out_dir",
                                                     str(tmp_path / "none")])

    # demonstrations longer than the context are dropped, counted, and named: a truncated one would never stop
    long = write_demos(tmp_path / "long.jsonl", 48, long_every=4)
    sft.main(base + ["--train", long, "--batch_size", "8", "--micro_batch_size", "8"])
    out = capsys.readouterr().out
    assert f"warning: dropped 12 training demonstrations longer than the 96-token context (first: {long}:1)" in out


def test_help_lists_every_flag():
    r = subprocess.run([sys.executable, "sft.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                       check=True)
    for action in sft.parser._actions:
        assert action.help, f"{action.dest} has no help"
        assert action.option_strings[0] in r.stdout


def test_select_by_reward_model(tmp_path, demos, capsys):
    """The paper picks the SFT checkpoint by RM score on validation prompts: each epoch's checkpoint
    is scored."""
    from model import model_from_checkpoint, save_checkpoint, scalar_head_model
    train, val = demos
    sft.main(TINY + ["--train", train, "--val", val, "--batch_size", "16", "--epochs", "2", "--sample_tokens",
                     "4",
                     "--out_dir", str(tmp_path / "a")])
    rm = scalar_head_model(model_from_checkpoint(load_checkpoint(str(tmp_path / "a" / "step3.pt"))))
    save_checkpoint(str(tmp_path / "rm.pt"), rm, tokenizer="gpt2-300", step=0)
    sft.main(TINY + ["--train", train, "--val", val, "--batch_size", "16", "--epochs", "2", "--sample_tokens",
                     "4",
                     "--out_dir", str(tmp_path / "b"), "--select_by", "rm", "--rm", str(tmp_path / "rm.pt")])
    out = capsys.readouterr().out
    scores = {s: float(out.split(f"checkpoint step{s}.pt: mean RM score ")[1].split()[0]) for s in (3, 6)}
    best = max(scores, key=scores.get)
    assert f"selected step{best}.pt by rm" in out
    assert load_checkpoint(str(tmp_path / "b" / "model.pt"))["step"] == best
    # an LM checkpoint where the RM is expected is a one-line error
    assert "not a reward model" in one_line_error(TINY + ["--train", train, "--val", val, "--batch_size",
                                                          "16", "--epochs", "1",
                                                          "--out_dir", str(tmp_path / "c"), "--select_by",
                                                          "rm",
                                                          "--rm", str(tmp_path / "a" / "model.pt")])


def test_select_by_rm_gives_unfinished_responses_the_penalty(tmp_path, demos, capsys, monkeypatch):
    """Selection scores as ppo.py and evaluate.py do: a response without <|endoftext|> gets
    --missing_eot_penalty (default -1), not the RM's score."""
    import model
    from model import GPT, GPTConfig, save_checkpoint, scalar_head_model
    train, val = demos
    config = GPTConfig(block_size=96, vocab_size=300, n_layer=1, n_head=2, n_embd=16)
    rm = scalar_head_model(GPT(config))
    with torch.no_grad():  # a constant RM: every finished response scores 0.5
        rm.score.weight.zero_()
        rm.score.bias.fill_(0.5)
    save_checkpoint(str(tmp_path / "rm.pt"), rm, tokenizer="gpt2-300", step=0)

    def every_other_finishes(policy, prompts, max_new_tokens, eot, *a, **k):
        """Sampled responses [7, eot] (finished) and [7, 7] (cut at the 2-token limit), in turn."""
        responses = torch.tensor([[7, eot] if i % 2 == 0 else [7, 7] for i in range(len(prompts))])
        tokens = torch.cat([torch.zeros(len(prompts), 1, dtype=torch.long), responses], 1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        return tokens, mask, None, mask[:, 1:]
    monkeypatch.setattr(model, "generate", every_other_finishes)
    sft.main(TINY + ["--train", train, "--val", val, "--batch_size", "16", "--epochs", "1",
                     "--sample_tokens", "2", "--out_dir", str(tmp_path / "a"), "--select_by", "rm",
                     "--rm", str(tmp_path / "rm.pt")])
    out = capsys.readouterr().out
    # the 8 validation prompts: 4 finished at 0.5, 4 unfinished at -1: (4·0.5 − 4·1) / 8 = −0.25
    assert "checkpoint step3.pt: mean RM score -0.250 on 8 validation prompts" in out
