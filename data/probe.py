"""
What the reward model has learned, part by part. The labelers' judgement (data/labelers.judge) is made of
parts: was the task done, were the constraints met, did it stop, is it fluent, honest, harmless. For each
part, on the pairs of validation completions where that part differs, how often the RM orders the pair as
the part does, and how often the labeler's ranking does (how much the part decides); and for each explicit
constraint, the same on the pairs where one completion meets it and the other breaks it, the other
constraints alike; and on the pairs of different lengths, how often each puts the shorter first.

    python data/probe.py                                  # out/rm/model.pt on data/world/rm_val_heldout.jsonl
    python data/probe.py --relabel done --rankings data/world/rm_train.jsonl --out /tmp/done_train.jsonl
    python data/probe.py --ceiling                        # what judging each set of parts would reach
    python data/probe.py --kind generation                # the same, on one kind of task
    python data/probe.py --contrast data/world/ppo_prompts.jsonl --out data/world/contrast
    python data/probe.py --false_facts data/world/rm_prompts.jsonl data/world/ppo_prompts.jsonl --out data/world/facts
    python data/probe.py --best_of 16                     # does the RM pick the better of SFT's samples?
    python data/probe.py --counts                         # does the RM read how many items (sentences) to write?
    python data/probe.py --few_shot out/base/model.pt     # does the base copy the few-shot prefix's people?

--ceiling scores the rankings with noise-free scorers made of some parts of the judgement (all of them;
all but honesty; the parts a response mostly shows by itself) and prints how often each orders a pair
as the labeler did: the accuracy a reward model that learned exactly those parts would reach.
--contrast writes rankings of two demonstrations under one prompt, its own and that of another prompt of
the same kind, constraints and wording but other names or passage (OUT_val.jsonl holds the first tenth,
OUT_train.jsonl the rest): train reward.py on them to see whether the RM can learn to read a prompt.
--relabel writes rankings ordered by one part alone, without noise (one completion per distinct value,
best first): train reward.py on them to see how much of that one clean signal the RM can learn at all.
--false_facts writes minimal pairs for generation prompts: the demonstration, then the same with one fact
of its subject swapped for another value of the same kind ("Max has a brown pig." over "Max has a red
pig."): whether the RM can learn to check a fact when nothing else differs (split as --contrast's).
--best_of K samples K + 1 responses from the SFT policy for each prompt of --rankings and picks the best of
the first k (k = 1, 2, 4, ..., K) three ways: by the reward model, by the policy's own mean log-likelihood per
token, and by the training labelers' noise-free judgement (a perfect reward model); each pick is judged
against the prompt's last sample, an independent draw, by a held-out labeler. Best-of-k is what a reward
model buys without any training, at KL log k − (k − 1)/k from the policy: PPO against it does no better.
--counts scores, for every plain "List N ..." prompt of the world, lists of 1 to N + 1 items that all fit (the
labelers' verdict is best at N), and for every "Write a story about P and Q in N sentences." prompt, its
story in 1 to 3 true sentences: a reward model that reads the count scores N highest; one that cannot
pays for whatever length did best on average in its rankings, and PPO gives it that length.
--few_shot BASE samples the base's answers to the prompts of --rankings with the few-shot prefix of
'GPT-prompted' and without, and counts the answers that name a person of the prefix whom the prompt does
not name: a base that reads copies from its context, and the solved examples are context.
The probe ends with the RM's accuracy when each ranking's prompt is swapped for another prompt of the
same kind: a reward model that reads the prompt loses accuracy, a prompt-blind one does not.
"""
import argparse
import functools
import itertools
import json
import math
import os
import random
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # importable when run as a script
from common import load_reward_model, read_jsonl, rm_scores, write_jsonl  # noqa: E402
from model import (decode_responses, get_tokenizer, model_from_checkpoint,  # noqa: E402
                   sample_responses)
from data.labelers import (HELDOUT_LABELERS, POOLS, compare, judge, known, mean_utility,  # noqa: E402
                           utility, world_of)
from data.world import (CONSTRAINTS, PEOPLE, as_list, build_splits, few_shot_prefix, make_world,  # noqa: E402
                        prompt_specs, story_sentences, words)

PARTS = ["done", "helpful", "stops", "fluent", "honest", "harmless"]


def read_rankings(path, seed):
    specs = prompt_specs(seed)
    with open(path) as f:
        rankings = [json.loads(line) for line in f]
    missing = next((r["prompt"] for r in rankings if r["prompt"] not in specs), None)
    if missing is not None:
        raise SystemExit(f"error: {path}: prompt {missing[:60]!r} is not a prompt of world {seed} (--seed?)")
    return [(specs[r["prompt"]], r) for r in rankings]


def relabel(rankings, part, out, seed=0):
    """Each ranking again, ordered by one judged part alone; rankings where it never differs are dropped."""
    rng = random.Random(seed)
    with open(out + ".tmp", "w") as f:
        kept = 0
        for spec, r in rankings:
            by_value = {}
            for c in r["completions"]:
                by_value.setdefault(round(float(judge(spec, c)[part]), 6), []).append(c)
            if len(by_value) > 1:
                completions = [rng.choice(by_value[v]) for v in sorted(by_value, reverse=True)]
                f.write(json.dumps(dict(r, completions=completions)) + "\n")
                kept += 1
    os.replace(out + ".tmp", out)
    print(f"{out}: {kept} of {len(rankings)} rankings, ordered by '{part}' alone")


# noise-free scorers of a judged response (data/labelers.judge): a labeler of weight 1 on every part, no noise
EVEN = {"helpful": 1.0, "honest": 1.0, "harmless": 1.0}
CEILINGS = {
    "the whole judgement": lambda j: utility(EVEN, j),
    "all but honesty": lambda j: utility(dict(EVEN, honest=0.0), j),
    "what the response shows alone (stops, fluent, harmless)": lambda j: j["stops"] + j["fluent"] + j["harmless"],
}


def ceiling_accuracy(scorers, rankings):
    """How often each scorer(judge(spec, c)) orders a pair of completions as the ranking does, ties counting
    half: {scorer's name: {"all": accuracy, kind: accuracy on that kind's rankings}}."""
    right, pairs = {name: {} for name in scorers}, {}
    for spec, r in rankings:
        judged = [judge(spec, c) for c in r["completions"]]  # once, for every scorer
        for a, b in itertools.combinations(range(len(judged)), 2):  # the ranking puts a above b
            for key in ("all", spec["kind"]):
                pairs[key] = pairs.get(key, 0) + 1
                for name, scorer in scorers.items():
                    sa, sb = scorer(judged[a]), scorer(judged[b])
                    right[name][key] = right[name].get(key, 0.0) + (1.0 if sa > sb else 0.5 if sa == sb else 0.0)
    return {name: {key: right[name][key] / pairs[key] for key in pairs} for name in scorers}


def contrast(records, seed=0):
    """Rankings [own demonstration, another prompt's demonstration] under each plain prompt, the other drawn
    from prompts of the same kind, the same constraints and the same wording once names and passages are masked:
    the two differ only in what they say about whom, so only a reward model that reads the prompt can order them."""
    def shape(r):
        spec, prompt = r["spec"], r["prompt"]
        if "passage" in spec:
            prompt = prompt.replace(spec["passage"], "PASSAGE")
        return spec["kind"], tuple(sorted(k for k in spec if k in CONSTRAINTS)), re.sub(r"[A-Z][a-z]+", "N", prompt)
    plain = [r for r in records if r["style"] == "plain"]
    alike = {}
    for r in plain:
        alike.setdefault(shape(r), []).append(r)
    rng, out = random.Random(seed), []
    for r in plain:
        others = [o["spec"]["ideal"] for o in alike[shape(r)] if o["spec"]["ideal"] != r["spec"]["ideal"]]
        if others:
            out.append({"prompt": r["prompt"], "completions": [" " + r["spec"]["ideal"], " " + rng.choice(others)],
                        "category": r["category"]})
    return out


def false_fact_contrast(records, seed=0):
    """Rankings [demonstration, the demonstration with one fact swapped] for generation prompts that do not
    begin the sentence: a value of the subject's (a town, job, food, pet, colour...) replaced by another of
    the same kind, kept when the labelers judge the two alike in all but honesty."""
    rng, out = random.Random(seed), []
    for r in records:
        spec = r["spec"]
        if spec["kind"] != "generation" or "prefix" in spec:
            continue
        facts = {pool: {v.lower() for v in values}
                 for pool, values in known(world_of(spec.get("seed", 1234)), spec["about"]).items()}
        ideal = spec["ideal"]
        slots = [(w, pool) for w in words(ideal) for pool, values in facts.items() if w.lower() in values]
        if not slots:
            continue
        word, pool = rng.choice(slots)
        other = rng.choice(sorted(POOLS[pool] - facts[pool]))
        false = re.sub(rf"\b{word}\b", other.capitalize() if word[0].isupper() else other, ideal, count=1)
        true_j, false_j = judge(spec, " " + ideal), judge(spec, " " + false)
        if true_j["honest"] == 1 and false_j["honest"] == 0 and true_j["helpful"] == false_j["helpful"]:
            out.append({"prompt": r["prompt"], "completions": [" " + ideal, " " + false], "category": "generation"})
    return out


def prompt_swap_accuracy(score, rankings, seed=0):
    """Pairwise accuracy against the rankings' order, with each ranking's own prompt and with another prompt
    of the same kind (a seeded draw). score(prompt, completions tuple) -> one number per completion."""
    rng = random.Random(seed)
    by_kind = {}
    for spec, r in rankings:
        by_kind.setdefault(spec["kind"], []).append(r["prompt"])
    right, pairs = [0, 0], 0
    for spec, r in rankings:
        others = [p for p in by_kind[spec["kind"]] if p != r["prompt"]] or [r["prompt"]]
        for i, prompt in enumerate((r["prompt"], rng.choice(others))):
            s = score(prompt, tuple(r["completions"]))
            right[i] += sum(s[a] > s[b] for a, b in itertools.combinations(range(len(s)), 2))
        pairs += len(r["completions"]) * (len(r["completions"]) - 1) // 2
    return right[0] / pairs, right[1] / pairs


def the_one_constraint(judged_a, judged_b):
    """The explicit constraint that one of two judged completions meets and the other breaks, when they break
    all others alike (the pairs that show whether a reward model reads that constraint); None otherwise."""
    only = set(judged_a["violations"]) ^ set(judged_b["violations"])
    return only.pop() if len(only) == 1 else None


def load_rm(rm_path, tokenizer=None, policy_path=None):
    """The reward model of rm_path and its tokenizer (a language model's checkpoint is a clear error; given
    a policy's tokenizer, so is another)."""
    ckpt = load_reward_model(rm_path, tokenizer, policy_path)
    return model_from_checkpoint(ckpt).eval(), get_tokenizer(ckpt["tokenizer"])


def probe(rm_path, rankings):
    rm, enc = load_rm(rm_path)

    @functools.lru_cache(maxsize=None)  # the prompt swap scores every ranking with its own prompt again
    def score(prompt, completions):
        k = len(completions)
        responses = [enc.encode_ordinary(c) + [enc.eot_token] for c in completions]
        return rm_scores(rm, [enc.encode_ordinary(prompt)] * k, responses, [True] * k, None, "cpu")

    agree = {p: [0, 0, 0] for p in PARTS}  # pairs where the part differs: RM agrees, label agrees, pairs
    for spec, r in rankings:
        k = len(r["completions"])
        scores = score(r["prompt"], tuple(r["completions"]))
        parts = [judge(spec, c) for c in r["completions"]]
        for a, b in itertools.combinations(range(k), 2):  # the ranking puts a above b
            differ = {p: float(parts[a][p]) - float(parts[b][p]) for p in PARTS}
            # not a part of the judgement but what a prompt-blind RM learns first: +1 when a has fewer words
            differ["shorter"] = float(len(words(r["completions"][b])) - len(words(r["completions"][a])))
            constraint = the_one_constraint(parts[a], parts[b])
            if constraint:  # +1 when a meets it
                differ["meets " + constraint] = 1.0 if constraint in parts[b]["violations"] else -1.0
            for p, d in differ.items():
                if d:
                    counts = agree.setdefault(p, [0, 0, 0])
                    counts[0] += (scores[a] > scores[b]) == (d > 0)
                    counts[1] += d > 0
                    counts[2] += 1
    print(f"{rm_path}: where one part of the judgement differs between two completions, who orders them by it")
    print(f"{'part':16s} {'pairs':>6s} {'RM':>7s} {'labeler':>8s}")
    for p, (rm_agrees, label_agrees, n) in agree.items():
        print(f"{p:16s} {n:6d} {rm_agrees / max(n, 1):7.1%} {label_agrees / max(n, 1):8.1%}")
    own, other = prompt_swap_accuracy(score, rankings)
    print(f"RM accuracy on the rankings with each one's own prompt {own:.1%}, with another prompt of the same "
          f"kind {other:.1%}")


def count_lists(spec, rng):
    """Lists of 1 to N + 1 items of a list prompt's pool (as many as it has), in the prompt's format: all fit."""
    pool = rng.sample(spec["pool"], len(spec["pool"]))
    numbered = spec["list_format"] == "numbered"
    return [" " + as_list(pool[:m], numbered) for m in range(1, min(spec["items"] + 1, len(pool)) + 1)]


def count_stories(spec, world):
    """Stories of 1 to 3 sentences for a "Write a story about P and Q in N sentences." prompt: the world's
    story of its ideal answer (whose first sentence ends with the place) cut short or told whole: all true."""
    place = spec["ideal"].split(".")[0].split()[-1]
    full = story_sentences(world, *spec["needs"], place)
    return [" " + " ".join(full[:m]) for m in range(1, 4)]


def count_probe(rm_path, seed, rng_seed=0):
    """--counts: the RM's scores of lists of m fitting items for prompts asking for n (every plain list prompt
    of the world's splits), and of stories of m true sentences for prompts asking for n, printed as the mean
    score by n and m and how often each m scores highest."""
    rm, enc = load_rm(rm_path)
    rng, world = random.Random(rng_seed), make_world(seed)
    plain = [r for records in build_splits(seed).values() for r in records if r.get("style") == "plain"]
    kind = lambda r: r["spec"]["kind"]  # noqa: E731
    lists = {r["prompt"]: r["spec"] for r in plain if kind(r) == "brainstorming" and "given" not in r["spec"]}
    stories = {r["prompt"]: r["spec"] for r in plain if kind(r) == "generation" and "needs" in r["spec"]}
    for counted, prompts, variants in (("items", lists, lambda spec: count_lists(spec, rng)),
                                       ("sentences", stories, lambda spec: count_stories(spec, world))):
        mean, best = {}, {}  # (n, m): [score sum, prompts]; n: {m: prompts where m scored highest}
        for prompt, spec in prompts.items():
            n, answers = spec[counted], variants(spec)
            scores = rm_scores(rm, [enc.encode_ordinary(prompt)] * len(answers),
                               [enc.encode_ordinary(x) + [enc.eot_token] for x in answers], [True] * len(answers),
                               None, "cpu")
            for m, score in enumerate(scores, 1):
                total = mean.setdefault((n, m), [0.0, 0])
                total[0], total[1] = total[0] + float(score), total[1] + 1
            top = max(range(len(scores)), key=lambda i: scores[i]) + 1
            best.setdefault(n, {}).setdefault(top, 0)
            best[n][top] += 1
        ms = range(1, max(m for _, m in mean) + 1)
        what = "a list of m items that all fit" if counted == "items" else "a story of m true sentences"
        print(f"{rm_path}: mean score of {what}, for the {len(prompts)} plain prompts asking for n (world "
              f"{seed}); the labelers' verdict is best at m = n")
        print("n   " + "".join(f"{f'm={m}':>8s}" for m in ms) + "   prompts where each m scores highest")
        for n in sorted(best):
            cells = "".join(f"{mean[n, m][0] / mean[n, m][1]:8.2f}" if (n, m) in mean else " " * 8 for m in ms)
            counts = ", ".join(f"m={m}: {c}" for m, c in sorted(best[n].items()))
            print(f"{n:<4d}{cells}   {counts}")
        right = sum(best[n].get(n, 0) for n in best)
        fewer = sum(c for n in best for m, c in best[n].items() if m < n)
        print(f"the count asked scores highest for {right} of {len(prompts)} prompts, fewer {counted} for "
              f"{fewer}\n")


def names_copied(prompt, answer, people):
    """The people of `people` whom the answer names and the prompt does not."""
    return set(words(answer)) & people - set(words(prompt))


def few_shot_copies(base_path, prompts, seed, sample_seed=0):
    """--few_shot: how many of the base's answers name a person of the few-shot prefix whom the prompt does
    not name, without the prefix ('GPT') and with it ('GPT-prompted'), the same sampling seed for both."""
    from evaluate import load_policy  # a language model, or a clear error for a reward model
    base, meta = load_policy(base_path, "cpu")
    enc = get_tokenizer(meta["tokenizer"])
    prefix = few_shot_prefix(seed)
    people = set(words(prefix)) & set(PEOPLE)
    for name, before in (("GPT", ""), ("GPT-prompted", prefix)):
        generator = torch.Generator().manual_seed(sample_seed)
        responses = sample_responses(base, [enc.encode_ordinary(before + p) for p in prompts], 48,
                                     enc.eot_token, generator=generator)
        texts, _ = decode_responses(enc, responses)
        copied = sum(bool(names_copied(p, t, people)) for p, t in zip(prompts, texts))
        print(f"{name}: {copied} of {len(prompts)} answers ({copied / len(prompts):.1%}) name "
              f"{' or '.join(sorted(people))} of the prefix, whom the prompt does not name")


def best_of(specs, texts, ended, pickers, ks, rng):
    """Best-of-k: for each picker and k, the pick among each prompt's first k samples (highest value of the
    picker), judged against that prompt's last sample by a held-out labeler. texts[i], ended[i]: prompt i's
    samples; pickers {name: values[i][j]}. Returns {name: {k: {"win", "follows", "violates", "hallucinates"}}}:
    rates over the prompts."""
    out = {}
    for name, values in pickers.items():
        for k in ks:
            counts = dict.fromkeys(("win", "follows", "violates", "hallucinates"), 0.0)
            for spec, t, e, v in zip(specs, texts, ended, values):
                best = max(range(k), key=lambda j: v[j])
                counts["win"] += compare(rng.choice(HELDOUT_LABELERS), spec, t[best], t[-1], rng, e[best], e[-1])
                judged = judge(spec, t[best], e[best])
                counts["follows"] += judged["follows"]
                counts["violates"] += judged["violates_constraint"]
                counts["hallucinates"] += judged["hallucinates"]
            out.setdefault(name, {})[k] = {key: c / len(specs) for key, c in counts.items()}
    return out


def sample_and_pick(rm_path, policy_path, rankings, k_max, seed=0):
    """--best_of: K + 1 samples of the policy per prompt of the rankings, picked by best_of() three ways."""
    from evaluate import load_policy, sequence_logprobs  # the log-likelihood as evaluate.py's KL takes it
    policy, meta = load_policy(policy_path, "cpu")
    enc = get_tokenizer(meta["tokenizer"])
    rm, _ = load_rm(rm_path, meta["tokenizer"], policy_path)
    specs = list({r["prompt"]: spec for spec, r in rankings}.items())
    n = k_max + 1
    contexts = [enc.encode_ordinary(prompt) for prompt, _ in specs for _ in range(n)]
    generator = torch.Generator().manual_seed(seed)
    responses = sample_responses(policy, contexts, 48, enc.eot_token, generator=generator)
    texts, ended = decode_responses(enc, responses)
    rm_values = rm_scores(rm, contexts, responses, ended, -1.0, "cpu")  # ppo.py's --missing_eot_penalty
    loglik = [lp / max(len(r), 1) for lp, r in zip(sequence_logprobs(policy, contexts, responses, "cpu"), responses)]
    perfect = [mean_utility(judge(specs[i // n][1], t, e)) for i, (t, e) in enumerate(zip(texts, ended))]
    rows = lambda xs: [xs[i:i + n] for i in range(0, len(xs), n)]  # noqa: E731
    pickers = {"reward model": rows(rm_values), "policy's likelihood": rows(loglik),
               "labelers, noise-free": rows(perfect)}
    ks = [2 ** i for i in range(k_max.bit_length()) if 2 ** i <= k_max]
    results = best_of([spec for _, spec in specs], rows(texts), rows(ended), pickers, ks, random.Random(seed))
    print(f"best of k of {policy_path}'s samples for the {len(specs)} prompts of the rankings, against one more "
          "sample, held-out labelers")
    print(f"{'picked by':22s} {'k':>3s} {'KL':>5s} {'win':>6s} {'follows':>8s} {'violates':>9s} {'hallucinates':>13s}")
    for name, by_k in results.items():
        for k, r in by_k.items():
            print(f"{name:22s} {k:3d} {math.log(k) - (k - 1) / k:5.2f} {r['win']:6.3f} {r['follows']:8.1%} "
                  f"{r['violates']:9.1%} {r['hallucinates']:13.1%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rm", default="out/rm/model.pt", help="the reward model to probe")
    parser.add_argument("--rankings", default="data/world/rm_val_heldout.jsonl", help="rankings of world prompts")
    parser.add_argument("--seed", type=int, default=1234, help="the world's seed (its prompts' specs)")
    parser.add_argument("--kind", help="only the rankings of this task kind (generation, closed_qa, ...)")
    parser.add_argument("--relabel", choices=PARTS, help="write --rankings ordered by this part alone to --out")
    parser.add_argument("--out", help="with --relabel: the rankings file to write; with --contrast, "
                                      "--false_facts: its prefix")
    parser.add_argument("--ceiling", action="store_true", help="accuracy of noise-free scorers of judged parts")
    parser.add_argument("--contrast", metavar="PROMPTS", nargs="+",
                        help="write own vs other demonstration rankings to --out")
    parser.add_argument("--false_facts", metavar="PROMPTS", nargs="+",
                        help="write true vs one-fact-false rankings to --out")
    parser.add_argument("--best_of", type=int, metavar="K", help="best-of-k of the policy's samples, k up to K")
    parser.add_argument("--policy", default="out/sft/model.pt", help="with --best_of: the policy that samples")
    parser.add_argument("--counts", action="store_true",
                        help="the RM's score of lists of 1 to N + 1 fitting items, stories of 1 to 3 sentences")
    parser.add_argument("--few_shot", metavar="BASE",
                        help="how often the base copies the few-shot prefix's people into its answers")
    args = parser.parse_args()
    if args.counts:
        return count_probe(args.rm, args.seed)
    writer = next((f for f in ("contrast", "false_facts", "relabel") if getattr(args, f)), None)
    if writer and not args.out:
        raise SystemExit(f"error: --{writer} needs --out")
    if writer in ("contrast", "false_facts"):
        records = []
        for prompts in getattr(args, writer):
            mine = read_jsonl(prompts, ["prompt", "style"])
            if not all(isinstance(r.get("spec"), dict) for r in mine):
                raise SystemExit(f"error: {prompts}: needs the world's prompts, each with its 'spec'")
            records += mine
        pairs = contrast(records) if writer == "contrast" else false_fact_contrast(records)
        n_val = len(pairs) // 10
        for name, part in (("val", pairs[:n_val]), ("train", pairs[n_val:])):
            print(f"{write_jsonl(f'{args.out}_{name}.jsonl', part)}: {len(part)} rankings of 2 completions")
        return
    rankings = [(spec, r) for spec, r in read_rankings(args.rankings, args.seed)
                if args.kind in (None, spec["kind"])]
    if not rankings:
        raise SystemExit(f"error: {args.rankings}: no rankings of kind {args.kind!r}")
    if args.ceiling:
        print(f"{args.rankings}: how often a noise-free scorer of these parts orders a pair as the labeler did")
        for name, accuracy in ceiling_accuracy(CEILINGS, rankings).items():
            kinds = ", ".join(f"{k} {a:.1%}" for k, a in sorted(accuracy.items()) if k != "all")
            print(f"{accuracy['all']:6.1%}  {name}\n        by kind: {kinds}")
        return
    if args.few_shot:
        few_shot_copies(args.few_shot, list({r["prompt"]: None for _, r in rankings}), args.seed)
    elif args.best_of:
        sample_and_pick(args.rm, args.policy, rankings, args.best_of)
    elif args.relabel:
        relabel(rankings, args.relabel, args.out)
    else:
        probe(args.rm, rankings)


if __name__ == "__main__":
    main()
