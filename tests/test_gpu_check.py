"""
bench/gpu_check.sh --device cpu: the GPU check's dry run (tiny shapes, gloo) runs every check and
ends with the summary table, every row ok.

    python -m pytest tests/test_gpu_check.py -q
"""
import json
import os
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
CHECKS = ["pretrain-torchrun", "sft-torchrun", "reward-torchrun", "ppo-torchrun", "pretrain-fp16",
          "sft-fp16", "reward-fp16", "ppo-fp16", "export", "resume-straight", "resume-killed",
          "resume-equal", "sampling", "flops"]


def test_dry_run_passes_every_check(tmp_path):
    pytest.importorskip("transformers")  # the sampling benchmark's peer
    r = subprocess.run(["bash", "bench/gpu_check.sh", "--device", "cpu"], cwd=ROOT, text=True,
                       capture_output=True, env={**os.environ, "OUT": str(tmp_path / "out")},
                       timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    table = r.stdout[r.stdout.rindex("\ncheck "):].strip().split("\n")[1:]
    assert [row.split()[0] for row in table] == CHECKS
    assert all(row[56:61].strip() == "ok" for row in table), "\n".join(table)
    rows = dict(zip(CHECKS, table))
    assert "max |weights difference| 0.0e+00" in rows["resume-equal"]  # bitwise, on CPU
    assert "ratio ours/transformers" in rows["sampling"]
    with open(tmp_path / "out" / "hf" / "config.json") as f:
        assert json.load(f)["architectures"] == ["GPT2LMHeadModel"]
