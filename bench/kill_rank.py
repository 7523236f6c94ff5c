"""
A stage (sft.py, reward.py or ppo.py) with a dead rank: on torchrun's first attempt, rank RANK is
killed (SIGKILL: no cleanup, as when a machine is lost) in step STEP, counted from 1 as logged
(ppo.py: iteration), before its update. Under torchrun --max-restarts the job then restarts and
must resume from its last.pt. RANK -1 kills nobody: the same run, uninterrupted, to compare with.
Deterministic algorithms are on in both, so that on a GPU too the two runs can agree bitwise. Used
by tests/test_restart.py and bench/gpu_check.sh; no stage has a flag for it.

    torchrun --standalone --nproc_per_node=2 --max-restarts=1 bench/kill_rank.py 1 3 sft.py ...
"""
import importlib
import os
import signal
import sys

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS: set before CUDA
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)  # the stages, before bench/ (bench/ppo.py is not ppo.py)
import torch  # noqa: E402

kill_rank, kill_step, script, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
stage = importlib.import_module(os.path.basename(script).removesuffix(".py"))
torch.use_deterministic_algorithms(True, warn_only=True)
first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
check_finite = stage.check_finite


def dying_check_finite(value, step, *args, **kwargs):  # called at each update with its step
    if first_attempt and step == kill_step and int(os.environ.get("RANK", 0)) == kill_rank:
        os.kill(os.getpid(), signal.SIGKILL)
    return check_finite(value, step, *args, **kwargs)


stage.check_finite = dying_check_finite
stage.main(argv)
