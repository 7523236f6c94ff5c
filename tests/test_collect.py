"""
data/collect.py: K samples per prompt ranked by a training labeler; validation prompts ranked once by a
training and once by a held-out labeler; --draws d ranks each training prompt d times, and the first draw
is the whole collection of --draws 1.

    python -m pytest tests/test_collect.py -q
"""
import json
import os
import subprocess
import sys

import torch

from common import write_jsonl
from data import world
from model import GPT, GPTConfig, get_tokenizer, save_checkpoint

ROOT = os.path.join(os.path.dirname(__file__), "..")


def collect(tmp_path, draws):
    prefix = tmp_path / f"draws{draws}"
    r = subprocess.run([sys.executable, "data/collect.py", "--policy", str(tmp_path / "policy.pt"),
                        "--prompts", str(tmp_path / "prompts.jsonl"), "--out_prefix", str(prefix),
                        "--draws", str(draws), "--max_new_tokens", "8"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    read = lambda split: [json.loads(line) for line in open(f"{prefix}_{split}.jsonl")]
    return read("train"), read("val"), read("val_heldout")


def test_draws_rank_each_training_prompt_again(tmp_path):
    torch.manual_seed(0)  # a random policy: its samples differ, so every prompt gets a ranking
    vocab = get_tokenizer("gpt2-world").n_vocab
    policy = GPT(GPTConfig(block_size=256, vocab_size=vocab, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(str(tmp_path / "policy.pt"), policy, tokenizer="gpt2-world", step=0)
    prompts = world.build_splits(1234)["rm_prompts"][:20]  # 2 validation prompts (--val_fraction 0.1)
    write_jsonl(tmp_path / "prompts.jsonl", prompts)

    train1, val1, heldout1 = collect(tmp_path, 1)
    train3, val3, heldout3 = collect(tmp_path, 3)
    assert [r["prompt"] for r in val1] == [p["prompt"] for p in prompts[:2]] == [r["prompt"] for r in heldout1]
    assert [r["prompt"] for r in train1] == [p["prompt"] for p in prompts[2:]]
    assert (train3[:18], val3, heldout3) == (train1, val1, heldout1)  # draw 1 is --draws 1
    assert [r["prompt"] for r in train3] == [p["prompt"] for p in prompts[2:]] * 3
    assert train3[18]["completions"] != train3[0]["completions"]  # fresh samples each draw
    assert all(4 <= len(r["completions"]) <= 9 for r in train3)
