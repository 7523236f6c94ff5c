"""
The stage scripts' shared plumbing (common.py) on hand-made cases.

    python -m pytest tests/test_common.py -q
"""
import types

import common


def test_progress_line_says_where_and_time_left(tmp_path, monkeypatch, capsys):
    clock = iter([100.0, 130.0, 190.0])  # run_log starts at 100 s, logs step 13 at 130, 16 at 190
    monkeypatch.setattr(common, "time", types.SimpleNamespace(time=lambda: next(clock)))
    log = common.run_log(str(tmp_path), True, resumed_at=10, total=40)  # its pace from step 10 on
    log({"step": 13, "loss": 2.5})
    log({"step": 16, "loss": 2.0})
    # 30 s for 3 steps: 27 steps left take 270 s; then 90 s for 6 steps: 24 left take 360 s
    lines = capsys.readouterr().out.split("\n")
    assert lines[:2] == ["step 13/40 | eta 4m30s | loss 2.5", "step 16/40 | eta 6m00s | loss 2"]
    shown = [common.duration(s) for s in (59.4, 60, 3599, 7500)]
    assert shown == ["59s", "1m00s", "59m59s", "2h05m"]


def test_plain_cuda_gets_an_index(monkeypatch):
    # torch.cuda.set_device("cuda") raises (seen on the first GPU run, bench/gpu_check.sh)
    chosen = []
    monkeypatch.setattr(common.torch.cuda, "set_device", chosen.append)
    ddp, rank, world_size, device, ctx, scaler = common.compute_init("cuda", "float32")
    assert (ddp, rank, world_size, device, chosen, scaler) == (False, 0, 1, "cuda:0", ["cuda:0"], None)
