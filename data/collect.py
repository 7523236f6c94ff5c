"""
Comparison collection (paper step 2, first half): sample K completions (K drawn from 4..9) per RM
prompt from a policy, and have one simulated training labeler rank each prompt's completions.
A slice of the prompts is kept for validation, ranked once by a training labeler and once by a
held-out labeler (paper: RM accuracy 72.4% on training labelers vs 69.6% on held-out ones).

    python data/collect.py                       # out/sft/model.pt on the world's RM prompts
    python data/collect.py --policy out/ppo/model.pt --out_prefix data/world/rm_round2   # a later round

--draws 8: each training prompt is sampled and ranked eight times, by a labeler drawn each time.
The paper ranked each of its 33k prompts once; a 1M-parameter reward model memorises the ~3,000
rankings of one draw instead of learning to check a response, and more draws lift what it learns
(RESULTS.md, "Four draws, three epochs" and "Eight draws, fresh rollouts"). Draw 1 is the whole
collection of --draws 1.

Writes <out_prefix>_train.jsonl, <out_prefix>_val.jsonl, <out_prefix>_val_heldout.jsonl: rankings
{"prompt", "completions": [best, ..., worst], "labeler", "category"} (the task type: reward.py reports its
accuracy per category).
"""
import argparse
import os
import random
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import HelpFormatter, duration, read_jsonl, write_jsonl  # noqa: E402
from model import get_tokenizer, load_checkpoint, model_from_checkpoint, sample_texts  # noqa: E402
from data.labelers import HELDOUT_LABELERS, TRAIN_LABELERS, distinct_completions, rank  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
parser.add_argument("--policy", default="out/sft/model.pt", help="the checkpoint whose samples are ranked")
parser.add_argument("--prompts", default="data/world/rm_prompts.jsonl",
                    help="prompts JSONL with the world's 'spec' of each task (the labelers judge by it)")
parser.add_argument("--out_prefix", default="data/world/rm",
                    help="output files: <prefix>_train.jsonl, <prefix>_val.jsonl, <prefix>_val_heldout.jsonl")
parser.add_argument("--val_fraction", type=float, default=0.1, help="fraction of prompts kept for validation")
parser.add_argument("--k_min", type=int, default=4, help="fewest completions per prompt (paper: 4)")
parser.add_argument("--k_max", type=int, default=9, help="most completions per prompt (paper: 9)")
parser.add_argument("--max_new_tokens", type=int, default=48, help="response length limit when sampling")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
parser.add_argument("--draws", type=int, default=8,
                    help="rankings per training prompt, each of fresh samples (validation: one)")
parser.add_argument("--seed", type=int, default=1234,
                    help="seed of K, the samples, the labeler assignment and the labelers' noise "
                    "(draw d: seed + 1000 (d - 1))")
parser.add_argument("--device", default="cpu", help="where the policy samples")
args = parser.parse_args()

ckpt = load_checkpoint(args.policy, args.device)
policy = model_from_checkpoint(ckpt, args.device).eval()
enc = get_tokenizer(ckpt["tokenizer"])
records = read_jsonl(args.prompts, ["prompt"])
if "spec" not in records[0]:
    raise SystemExit(f"error: {records[0]['_where']}: no 'spec': simulated labelers can only rank the "
                     "world's own prompts")
n_val = int(len(records) * args.val_fraction)
outputs = {"train": [], "val": [], "val_heldout": []}
dropped = 0
for draw in range(args.draws):  # the first draw ranks every prompt, the later ones the training prompts
    first = n_val if draw else 0
    seed = args.seed + 1000 * draw
    rng = random.Random(seed)
    ks = [rng.randint(args.k_min, args.k_max) for _ in records[first:]]

    # sample every completion in large batches: prompt i repeated K_i times
    flat_prompts = [r["prompt"] for r, k in zip(records[first:], ks) for _ in range(k)]
    t0 = time.time()
    generator = torch.Generator(args.device).manual_seed(seed)
    samples, chunk = [], 128 * 16  # whole batches of 128: one call's samples, and a progress line
    for i in range(0, len(flat_prompts), chunk):
        samples += sample_texts(policy, enc, flat_prompts[i:i + chunk], args.max_new_tokens,
                                args.temperature, batch_size=128, generator=generator)
        left = (time.time() - t0) / len(samples) * (len(flat_prompts) - len(samples))
        print(f"draw {draw + 1}/{args.draws}: sampled {len(samples)}/{len(flat_prompts)} | eta "
              f"{duration(left)}", flush=True)
    print(f"draw {draw + 1}/{args.draws}: sampled {len(samples)} completions for "
          f"{len(records) - first} prompts in {time.time() - t0:.0f}s")

    i = 0
    for n, (record, k) in enumerate(zip(records[first:], ks), first):
        group, i = samples[i:i + k], i + k
        completions, ended = distinct_completions(group)
        if len(completions) < 2:
            dropped += 1
            continue
        views = ([("val", TRAIN_LABELERS), ("val_heldout", HELDOUT_LABELERS)] if n < n_val
                 else [("train", TRAIN_LABELERS)])
        for split, labelers in views:
            labeler = rng.choice(labelers)
            order = rank(labeler, record["spec"], completions, rng, ended=ended)
            outputs[split].append({"prompt": record["prompt"], "completions": [completions[j] for j in order],
                                   "labeler": labeler["id"], "category": record["spec"]["kind"]})

os.makedirs(os.path.dirname(os.path.abspath(args.out_prefix)), exist_ok=True)
for split, rankings in outputs.items():
    path = write_jsonl(f"{args.out_prefix}_{split}.jsonl", rankings)
    pairs = sum(len(r["completions"]) * (len(r["completions"]) - 1) // 2 for r in rankings)
    print(f"{path}: {len(rankings)} rankings, {pairs} comparisons")
if dropped:
    print(f"skipped {dropped} draws of a prompt with fewer than 2 distinct non-empty completions")
