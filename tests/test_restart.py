"""
Restarts: a torchrun worker group restarted after a dead rank resumes its own run's last.pt (and
never another run's), exactly.

    python -m pytest tests/test_restart.py -q
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from common import elastic_resume, rng_state, set_rng_state
from model import GPT, GPTConfig, load_checkpoint, save_checkpoint
from test_ppo import argv as ppo_argv, world  # noqa: F401  (the tiny PPO world fixture)
from test_sft import TINY, demos  # noqa: F401  (the demonstrations fixture)

ROOT = os.path.join(os.path.dirname(__file__), "..")


# --- 1. which last.pt a run continues -----------------------------------------------------------

@pytest.mark.parametrize("resume, restart, run_id, saved_by, expected", [
    (False, None, None, "job-a", False),  # not under torchrun: only --resume resumes
    (True, None, None, "job-a", True),
    (False, "0", "job-a", "job-a", False),  # a first attempt starts over, whatever last.pt is there
    (False, "1", "job-a", "job-a", True),  # a restart continues its own job's last.pt
    (False, "1", "job-b", "job-a", False),  # ... and never an earlier job's
    (False, "1", "job-a", None, False),  # ... nor starts from one when its job has saved none yet
    (False, "1", "none", "none", False),  # torchrun's default id across nodes: two jobs share it
])
def test_which_last_pt_a_run_continues(tmp_path, monkeypatch, resume, restart, run_id, saved_by,
                                       expected):
    for name in ("TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    if saved_by:  # save_checkpoint stores the id of the job that wrote it
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", saved_by)
        tiny = GPT(GPTConfig(block_size=8, vocab_size=8, n_layer=1, n_head=1, n_embd=4))
        save_checkpoint(str(tmp_path / "last.pt"), tiny)
        assert load_checkpoint(str(tmp_path / "last.pt"))["run_id"] == saved_by
        monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    for name, value in (("TORCHELASTIC_RESTART_COUNT", restart), ("TORCHELASTIC_RUN_ID", run_id)):
        if value is not None:
            monkeypatch.setenv(name, value)
    assert elastic_resume(str(tmp_path), resume) is expected


def test_each_rank_resumes_its_own_rng_state(monkeypatch):
    # two ranks whose generators have drawn different amounts (on CUDA, dropout draws in proportion
    # to a micro-batch's size): the checkpoint holds both, and rank 1 gets its own back
    import torch.distributed as dist
    states = [torch.Generator().manual_seed(seed).get_state() for seed in (0, 1)]
    gathered = [{"cpu": state, "cuda": None} for state in states]
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "all_gather_object",
                        lambda out, state: out.__setitem__(slice(None), gathered))
    saved = rng_state()
    torch.manual_seed(5)
    set_rng_state(saved)
    assert torch.equal(torch.get_rng_state(), states[1])


# --- 2. a rank killed mid-run: the restarted job ends where an uninterrupted one does --------

def torchrun_pair(script, args, out, kill_step):
    """The same 2-process gloo job twice under torchrun --max-restarts=1, side by side:
    uninterrupted (out + "-a") and with rank 1 killed at kill_step (out + "-b"). Returns the
    second's output."""
    def launch(kill_rank, out_dir):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--max-restarts=1", "bench/kill_rank.py", str(kill_rank), str(kill_step), script,
               *args, "--out_dir", out_dir]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    jobs = [launch(-1, out + "-a"), launch(1, out + "-b")]
    results = [job.communicate(timeout=600) for job in jobs]
    for job, (stdout, stderr) in zip(jobs, results):
        assert job.returncode == 0, stdout[-2000:] + stderr[-3000:]
    return results[1][0] + results[1][1]


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def log_rows(out_dir, key="step"):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [(r[key], sorted(r)) for r in map(json.loads, f)]


def test_sft_restarts_after_a_dead_rank(tmp_path, demos):
    train, val = demos
    out = str(tmp_path / "sft")
    # an earlier run's last.pt in the folder, finished (step 6) and far from this job's weights:
    # resuming from it would end this job at once, with its weights
    torch.manual_seed(5)
    stale = GPT(GPTConfig(block_size=96, vocab_size=300, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(os.path.join(out + "-b", "last.pt"), stale, step=6)
    # dropout on: the RNG state must resume too
    args = TINY + ["--train", train, "--val", val, "--batch_size", "8", "--micro_batch_size", "2",
                   "--max_steps", "6", "--eval_interval", "2", "--dropout", "0.2"]
    output = torchrun_pair("sft.py", args, out, kill_step=4)  # killed in step 4; last.pt: step 2
    assert "torchrun restart 1 of run" in output and "resumed from" in output
    assert "at step 2" in output
    a, b = (load_checkpoint(os.path.join(out + s, "last.pt")) for s in ("-a", "-b"))
    assert b["step"] == 6 and max_diff(a["model"], b["model"]) <= 1e-6
    assert max_diff(b["model"], stale.state_dict()) > 1e-2
    assert log_rows(out + "-b") == log_rows(out + "-a")  # steps 3 and 4 once, not once per attempt


def test_ppo_restarts_after_a_dead_rank(world):
    args = ppo_argv(world, "--iterations", "3", "--sample_interval", "0")
    i = args.index("--out_dir")
    del args[i:i + 2]
    # killed in iteration 2; last.pt is iteration 1's
    output = torchrun_pair("ppo.py", args, world["out"], kill_step=2)
    assert "torchrun restart 1 of run" in output and "resumed from" in output
    assert "at iteration 1" in output
    a, b = (load_checkpoint(os.path.join(world["out"] + s, "last.pt")) for s in ("-a", "-b"))
    assert b["iteration"] == 3 and max_diff(a["model"], b["model"]) <= 1e-6
    assert max_diff(a["value"]["model"], b["value"]["model"]) <= 1e-6
    assert log_rows(world["out"] + "-b", "iter") == log_rows(world["out"] + "-a", "iter")
