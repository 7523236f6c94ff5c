"""
Rank it yourself (paper step 2 by hand): sample K completions (K drawn from 4..9) per prompt from a policy,
show them numbered, type their order best first: `3 1 4 2` (or `3142`), `s` skips an unclear prompt, `q`
saves and quits. Each answer is fsynced as it is typed, so q, Ctrl-C or a kill loses nothing; the same
command resumes after the last prompt answered, with the same completions (sampling is seeded per prompt).

    python data/rank.py                                           # out/sft/model.pt on the world's
    RM prompts -> data/world/rm_human.jsonl python data/rank.py --n 100 --k 4
    # only the first 100 prompts, 4 completions each python data/rank.py --labeler sim --out
    data/world/rm_mixed.jsonl   # a simulated training labeler fills the same format

Writes rankings {"prompt", "completions": [best, ..., worst], "labeler": "human"} to --out (reward.py's
--train format) and skips {"prompt", "labeler", "reason"} to <out>.skipped (a line without completions
would stop reward.py).
"""
import argparse
import json
import os
import random
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import HelpFormatter, read_jsonl  # noqa: E402
from model import get_tokenizer, load_checkpoint, model_from_checkpoint, sample_texts  # noqa: E402
from data.labelers import TRAIN_LABELERS, distinct_completions, rank  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
parser.add_argument("--policy", default="out/sft/model.pt", help="the checkpoint whose samples are ranked")
parser.add_argument("--prompts", default="data/world/rm_prompts.jsonl",
                    help="prompts JSONL {prompt} (+ the world's 'spec' for --labeler sim)")
parser.add_argument("--out", default="data/world/rm_human.jsonl",
                    help="rankings JSONL, appended to; skips go to <out>.skipped")
parser.add_argument("--n", type=int, default=0, help="use only the first N prompts of --prompts (0: all)")
parser.add_argument("--labeler", default="human", choices=["human", "sim"],
                    help="who ranks: you at the terminal, or a simulated training labeler (data/labelers.py)")
parser.add_argument("--k", type=int, default=0,
                    help="completions per prompt (0: draw K from --k_min..--k_max)")
parser.add_argument("--k_min", type=int, default=4, help="fewest completions per prompt (paper: 4)")
parser.add_argument("--k_max", type=int, default=9, help="most completions per prompt (paper: 9)")
parser.add_argument("--max_new_tokens", type=int, default=48, help="response length limit when sampling")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
parser.add_argument("--seed", type=int, default=1234,
                    help="with the prompt's index, seeds its K, its samples and the simulated labeler")
parser.add_argument("--device", default="cpu", help="where the policy samples")
args = parser.parse_args()
assert 2 <= args.k_min <= args.k_max and (args.k == 0 or args.k >= 2), \
    "a ranking needs K >= 2: set 2 <= --k_min <= --k_max, --k 0 or >= 2"

records = read_jsonl(args.prompts, ["prompt"])[:args.n or None]
if args.labeler == "sim" and any("spec" not in r for r in records):
    where = next(r["_where"] for r in records if "spec" not in r)
    raise SystemExit(f"error: {where}: no 'spec': --labeler sim can only rank the world's own prompts (rank "
                     "them yourself: --labeler human)")
skip_path = args.out + ".skipped"


def answered(path):
    """Prompts already in a file of ours; a line torn by a kill mid-write (no newline) is cut off
    and asked again."""
    if not os.path.exists(path):
        return set()
    with open(path, "rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
    return {r["prompt"] for r in read_jsonl(path, ["prompt"])} if os.path.getsize(path) else set()


def append(path, record):
    """One JSON line, flushed and fsynced before the next prompt is shown."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def parse(answer, k):
    """'3 1 4 2', '3,1,4,2' or '3142' (K <= 9) -> 0-based indices best first; None unless a
    permutation of 1..K."""
    tokens = answer.replace(",", " ").split()
    if len(tokens) == 1 and k <= 9 and len(tokens[0]) == k:
        tokens = list(tokens[0])
    if not all(t.isdecimal() for t in tokens) or sorted(map(int, tokens)) != list(range(1, k + 1)):
        return None
    return [int(t) - 1 for t in tokens]


def ask(completions, ended):
    """The person's order (0-based, best first), None for a skip; q or a closed stdin ends the session."""
    for j, (text, e) in enumerate(zip(completions, ended), 1):
        # quoted: spaces and newlines show
        print(f"{j:>3}. {json.dumps(text, ensure_ascii=False)}" + ("" if e else "  (cut off)"))
    K = len(completions)
    while True:
        try:
            answer = input(f"order of 1..{K}, best first (s: skip, q: quit)> ").strip().lower()
        except EOFError:
            answer = "q"
        if answer == "q":
            raise KeyboardInterrupt
        if answer == "s":
            return None
        if (order := parse(answer, K)) is not None:
            return order
        print(f"  not a ranking: type each of 1..{K} once, best first, e.g. "
              f"`{' '.join(map(str, range(K, 0, -1)))}`; s: skip; q: save and quit")


# resume after the last prompt (in file order) that already has a ranking or a skip
done = answered(args.out) | answered(skip_path)
start = 1 + max((i for i, r in enumerate(records) if r["prompt"] in done), default=-1)
print(f"{len(records)} prompts; starting at prompt {start + 1}" + (f" ({len(done)} answered in "
                                                                   f"{args.out}[.skipped])" if done else ""))
ckpt = load_checkpoint(args.policy, args.device)
policy = model_from_checkpoint(ckpt, args.device).eval()
enc = get_tokenizer(ckpt["tokenizer"])
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

counts = [0, 0]  # rankings, skips written this session
i = start
try:
    for i in range(start, len(records)):
        prompt = records[i]["prompt"]
        # per prompt, not per session: a restart shows the same samples
        rng = random.Random(args.seed * 1_000_003 + i)
        k = args.k or rng.randint(args.k_min, args.k_max)
        generator = torch.Generator(args.device).manual_seed(rng.getrandbits(63))
        samples = sample_texts(policy, enc, [prompt] * k, args.max_new_tokens, args.temperature, batch_size=k,
                               generator=generator)
        completions, ended = distinct_completions(samples)
        if len(completions) < 2:
            print(f"prompt {i + 1}: fewer than 2 distinct non-empty completions of {k}, skipped")
            who, order, reason = args.labeler, None, "fewer than 2 distinct completions"
        elif args.labeler == "sim":
            labeler = rng.choice(TRAIN_LABELERS)
            who, order = labeler["id"], rank(labeler, records[i]["spec"], completions, rng, ended=ended)
        else:
            print(f"\n=== prompt {i + 1}/{len(records)} ===\n{prompt}")
            who, order, reason = "human", ask(completions, ended), "skipped"
        if order is None:
            append(skip_path, {"prompt": prompt, "labeler": who, "reason": reason})
        else:
            append(args.out, {"prompt": prompt, "completions": [completions[j] for j in order],
                              "labeler": who})
        counts[order is None] += 1
    i = len(records)
except KeyboardInterrupt:  # q, a closed stdin or Ctrl-C: every answer is already on disk
    pass
print(f"\n{counts[0]} rankings -> {args.out}, {counts[1]} skipped -> {skip_path}; "
      + ("all prompts done" if i >= len(records) else f"run again to resume at prompt {i + 1}"))
