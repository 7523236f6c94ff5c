"""
data/rank.py driven through scripted stdin: typos re-asked, a skip, a quit, a SIGKILL and a torn line,
restarts that resume with the same completions; the file holds exactly the typed rankings and reward.py
trains on it. --labeler sim matches data.labelers.rank.

    python -m pytest tests/test_rank.py -q
"""
import json
import os
import random
import re
import subprocess
import sys
import time

import pytest
import torch

import reward
from data.labelers import TRAIN_LABELERS, rank
from common import write_jsonl
from model import GPT, GPTConfig, get_tokenizer, load_checkpoint, save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NAMES = ["Mira", "Tom", "Ana", "Bob"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
REASK = "not a ranking: type each of 1..{k} once, best first"


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rank")
    enc = get_tokenizer("gpt2-300")
    torch.manual_seed(0)
    sft = GPT(GPTConfig(block_size=64, vocab_size=enc.n_vocab, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(str(tmp / "sft.pt"), sft, tokenizer="gpt2-300", step=0)
    prompts = [{"prompt": f"Instruction: Write about {a}.\nResponse:", "id": f"rm-{i}",
                "spec": {"kind": "generation", "about": a, "max_sentences": 1, "seed": 1234}} for i,
                a in enumerate(NAMES)]
    w = {"tmp": tmp, "sft": str(tmp / "sft.pt"), "prompts": write_jsonl(tmp / "prompts.jsonl", prompts),
         "records": prompts}
    # a probe session that skips everything shows every prompt's completions (in sampling order):
    # the reference
    probe = tool(w, str(tmp / "probe.jsonl"), input="s\n" * len(NAMES))
    w["shown"] = shown(probe.stdout)
    assert sorted(w["shown"]) == [0, 1, 2, 3] and all(2 <= len(c) <= 5 for c, _ in w["shown"].values())
    return w


def tool(world, out, *extra, input=""):
    r = subprocess.run([sys.executable, "data/rank.py", "--policy", world["sft"], "--prompts",
                        world["prompts"], "--out", out,
                        "--k_min", "3", "--k_max", "5", "--max_new_tokens", "6", *extra],
                       cwd=ROOT, env=ENV, input=input, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def shown(stdout):
    """{prompt index: ([completion texts as numbered], [ended])} parsed from the tool's display."""
    out, current = {}, None
    for line in stdout.splitlines():
        if m := re.fullmatch(r"=== prompt (\d+)/\d+ ===", line):
            current = int(m[1]) - 1
            out[current] = ([], [])
        elif current is not None and (m := re.fullmatch(r" *(\d+)\. (\".*)", line)):
            text, end = json.JSONDecoder().raw_decode(m[2])
            assert int(m[1]) == len(out[current][0]) + 1
            out[current][0].append(text)
            out[current][1].append(m[2][end:] != "  (cut off)")
    return out


def order_of(world, i, numbers):
    """What the file must hold after typing `numbers` (1-based, best first) at prompt i."""
    completions = world["shown"][i][0]
    return {"prompt": world["records"][i]["prompt"], "completions": [completions[n - 1] for n in numbers],
            "labeler": "human"}


def test_session_typo_skip_quit_restart_then_reward_trains(world, capsys):
    out = str(world["tmp"] / "human.jsonl")
    k = {i: len(c) for i, (c, _) in world["shown"].items()}
    first = list(range(k[0], 0, -1))  # worst-numbered first
    third = list(range(2, k[2] + 1)) + [1]
    # empty, repeat, out of range, letters, too few
    bad = ["", " ".join(["1"] * k[0]), " ".join(map(str, range(2, k[0] + 2))), "first", "1"]
    # then stdin ends at prompt 4
    script = "\n".join(bad + [" ".join(map(str, first)), "s", ",".join(map(str, third))]) + "\n"
    r = tool(world, out, input=script)
    session = shown(r.stdout)
    assert sorted(session) == [0, 1, 2, 3]
    assert all(session[i] == world["shown"][i] for i in session), "same completions as the probe"
    assert r.stdout.count(REASK.format(k=k[0])) == len(bad)
    assert "run again to resume at prompt 4" in r.stdout
    assert read_lines(out) == [order_of(world, 0, first), order_of(world, 2, third)]
    assert [s["prompt"] for s in read_lines(out + ".skipped")] == [world["records"][1]["prompt"]]

    fourth = [2, 1] + list(range(3, k[3] + 1))
    r = tool(world, out, input="".join(map(str, fourth)) + "\n")  # the compact form `2134`
    assert sorted(shown(r.stdout)) == [3], "resumes after the last prompt answered"
    assert "all prompts done" in r.stdout
    assert read_lines(out) == [order_of(world, 0, first), order_of(world, 2, third), order_of(world, 3,
                                                                                              fourth)]

    demos = write_jsonl(world["tmp"] / "demos.jsonl", [{"prompt": p["prompt"],
                                                        "response": f" {n} is here."} for p,
                                                        n in zip(world["records"], NAMES)])
    rm_dir = str(world["tmp"] / "rm")
    final = reward.main(["--sft", world["sft"], "--train", out, "--val", out, "--val_heldout", "", "--demos",
                         demos, "--out_dir", rm_dir,
                         "--batch_size", "3", "--micro_batch_size", "3", "--max_steps", "2", "--device",
                         "cpu", "--log_interval", "1"])
    pairs = sum(k[i] * (k[i] - 1) // 2 for i in (0, 2, 3))
    assert f"data: 3 rankings with {pairs} comparisons" in capsys.readouterr().out
    assert 0 <= final["val_acc"] <= 1 and load_checkpoint(os.path.join(rm_dir,
                                                                       "model.pt"))["model_config"]["head"] == "scalar"


def test_killed_mid_session_loses_nothing(world):
    out = str(world["tmp"] / "killed.jsonl")
    k0 = len(world["shown"][0][0])
    p = subprocess.Popen([sys.executable, "data/rank.py", "--policy", world["sft"], "--prompts",
                          world["prompts"], "--out", out,
                          "--k_min", "3", "--k_max", "5", "--max_new_tokens", "6"],
                         cwd=ROOT, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, text=True)
    p.stdin.write(" ".join(map(str, range(1, k0 + 1))) + "\n")
    p.stdin.flush()  # stdin stays open: the tool waits at prompt 2 until it is killed
    deadline = time.time() + 120
    while not (os.path.exists(out) and open(out).read().endswith("\n")) and time.time() < deadline:
        time.sleep(0.2)
    p.kill()
    p.wait()
    assert read_lines(out) == [order_of(world, 0, list(range(1, k0 + 1)))]
    with open(out, "a") as f:  # as if a kill had torn the next line mid-write
        f.write('{"prompt": "Instruction: Write ab')
    r = tool(world, out, input="s\n")
    assert sorted(shown(r.stdout)) == [1, 2], "the torn line is dropped and the session resumes at prompt 2"
    assert read_lines(out) == [order_of(world, 0, list(range(1, k0 + 1)))]


def test_sim_labeler_matches_labelers_rank(world):
    out = str(world["tmp"] / "sim.jsonl")
    tool(world, out, "--labeler", "sim", "--n", "3")
    expected = []
    # the tool's documented derivation: one Random per (seed, prompt index) for K, sampling, labeler
    for i in range(3):
        rng = random.Random(1234 * 1_000_003 + i)
        rng.randint(3, 5), rng.getrandbits(63)
        labeler = rng.choice(TRAIN_LABELERS)
        completions, ended = world["shown"][i]
        order = rank(labeler, world["records"][i]["spec"], completions, rng, ended=ended)
        expected.append({"prompt": world["records"][i]["prompt"],
                         "completions": [completions[j] for j in order], "labeler": labeler["id"]})
    assert read_lines(out) == expected


def test_sim_needs_spec(world):
    bare = write_jsonl(world["tmp"] / "bare.jsonl", [{"prompt": r["prompt"]} for r in world["records"]])
    r = subprocess.run([sys.executable, "data/rank.py", "--policy", world["sft"], "--prompts", bare, "--out",
                        str(world["tmp"] / "x.jsonl"),
                        "--labeler", "sim"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip() == (f"error: {bare}:1: no 'spec': --labeler sim can only rank "
                                                      "the world's own prompts (rank them yourself: --labeler human)")
