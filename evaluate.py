"""
Evaluation (paper §3.6 and §4): how often held-out labelers prefer each policy's response to the
SFT model's on test prompts from held-out users (Figure 1), the 1–7 quality score, the metadata of
Figure 4 (fails to follow, violates a constraint, hallucinates, inappropriate), truthfulness, the
"alignment tax" on the pretraining distribution (§4.2), and the KL of each policy from SFT.

    python evaluate.py                               # every policy of the default pipeline found under out/
    python evaluate.py --seed 7                      # another draw of the labelers' noise and of the samples
    python evaluate.py --policy PPO-beta0.1=out/ppo-b01/model.pt   # add any checkpoint as a row

Writes <out_dir>/results.md (the table, also printed), results.json (every number) and, when
matplotlib is installed (requirements-dev.txt), figure1.png.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

from model import generate, get_tokenizer, left_pad, load_checkpoint, model_from_checkpoint, read_documents, read_jsonl, token_logprobs

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--world", default="data/world", help="folder of the generated default world")
parser.add_argument("--test_prompts", default=None, help="test prompts with the world's 'spec' of each task, from users held out of training [default: <world>/test_prompts.jsonl]")
parser.add_argument("--base", default="out/base/model.pt", help="the pretrained base: the 'GPT' row, and with the few-shot prefix the 'GPT-prompted' row")
parser.add_argument("--sft", default="out/sft/model.pt", help="the SFT baseline every win rate is measured against")
parser.add_argument("--ppo", default="out/ppo/model.pt", help="the PPO policy (skipped when missing)")
parser.add_argument("--ppo_ptx", default="out/ppo-ptx/model.pt", help="the PPO-ptx policy (skipped when missing)")
parser.add_argument("--policy", action="append", default=[], metavar="NAME=PATH", help="another policy to evaluate as a row (repeatable)")
parser.add_argument("--n_prompts", type=int, default=0, help="evaluate on the first N test prompts (0: all)")
parser.add_argument("--max_new_tokens", type=int, default=48, help="response length limit")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of every policy")
parser.add_argument("--seed", type=int, default=1234, help="seed of the samples and of the labelers' noise")
parser.add_argument("--out_dir", default="out/eval", help="where results.md, results.json and figure1.png go")
parser.add_argument("--device", default="cpu", help="where the policies run")


# -----------------------------------------------------------------------------
# the statistics

def mean_ci(outcomes):
    """Mean and 95% confidence half-width (normal approximation) of per-prompt outcomes."""
    n = len(outcomes)
    mean = sum(outcomes) / n
    var = sum((x - mean) ** 2 for x in outcomes) / max(n - 1, 1)
    return mean, 1.96 * math.sqrt(var / n)


@torch.no_grad()
def sequence_logprobs(model, contexts, responses, device, batch_size=64):
    """Σ_t log π(y_t | x, y_<t) of each response (token list, eot included when it ended) given its context."""
    out = []
    for i in range(0, len(contexts), batch_size):
        seqs = [c + r for c, r in zip(contexts[i:i + batch_size], responses[i:i + batch_size])]
        tokens, mask = left_pad(seqs, 0, device)
        logp = token_logprobs(model(tokens, attention_mask=mask)[:, :-1], tokens[:, 1:])
        T = tokens.size(1)
        for row, r in enumerate(responses[i:i + batch_size]):
            out.append(logp[row, T - 1 - len(r):].sum().item() if r else 0.0)
    return out


@torch.no_grad()
def corpus_loss(model, docs, eot, enc, device, block_size):
    """Mean next-token loss on held-out pretraining text: the alignment tax of §4.2 on D_pretrain."""
    stream = []
    for d in docs:
        stream += enc.encode_ordinary(d) + [eot]
    chunks = torch.tensor(stream[:len(stream) // (block_size + 1) * (block_size + 1)]).view(-1, block_size + 1)
    total, n = 0.0, 0
    for i in range(0, len(chunks), 16):
        batch = chunks[i:i + 16].to(device)
        logits = model(batch[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum").item()
        n += batch[:, 1:].numel()
    return total / n


@torch.no_grad()
def zero_shot_accuracy(model, items, enc, device, max_new_tokens=12):
    """A 'public NLP task' of the world, in the corpus's own phrasing: greedy answer contains the gold answer."""
    prompts = [enc.encode_ordinary(it["prompt"]) for it in items]
    correct = 0
    for i in range(0, len(prompts), 64):
        tokens, _, _, rmask = generate(model, prompts[i:i + 64], max_new_tokens, enc.eot_token, temperature=0)
        P = tokens.size(1) - rmask.size(1)
        for row, it in zip(tokens[:, P:].tolist(), items[i:i + 64]):
            answer = enc.decode([t for t in row if t != enc.eot_token]).split("\n")[0]
            correct += it["answer"].lower() in answer.lower()
    return correct / len(items)


# -----------------------------------------------------------------------------
# the run

def main(argv=None):
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from data import labelers as L
    from data.world import few_shot_prefix
    test_path = args.test_prompts or os.path.join(args.world, "test_prompts.jsonl")
    records = read_jsonl(test_path, ["prompt"])
    if args.n_prompts:
        records = records[:args.n_prompts]
    if "spec" not in records[0]:
        raise SystemExit(f"error: {records[0]['_where']}: no 'spec': the simulated labelers judge only the world's own prompts")
    device = args.device
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)

    policies = [("GPT", args.base, ""), ("GPT-prompted", args.base, few_shot_prefix()), ("SFT", args.sft, ""),
                ("PPO", args.ppo, ""), ("PPO-ptx", args.ppo_ptx, "")]
    policies += [(spec.split("=", 1)[0], spec.split("=", 1)[1], "") for spec in args.policy]
    policies = [p for p in policies if p[0] == "SFT" or os.path.exists(p[1])]
    missing = [n for n, p in (("GPT", args.base), ("PPO", args.ppo), ("PPO-ptx", args.ppo_ptx)) if not os.path.exists(p)]
    if missing:
        print(f"note: no checkpoint for {', '.join(missing)}; those rows are skipped")

    sft_ckpt = load_checkpoint(args.sft, device)
    sft = model_from_checkpoint(sft_ckpt, device).eval()
    enc = get_tokenizer(sft_ckpt["tokenizer"])
    eot = enc.eot_token
    prompts = [enc.encode_ordinary(r["prompt"]) for r in records]
    val_docs = read_documents(os.path.join(args.world, "corpus_val.txt"))
    nlp_items = read_jsonl(os.path.join(args.world, "nlp_task.jsonl"), ["prompt", "answer"])

    def sample(model, contexts, seed):
        """One response per context: token lists (eot included when it ended), texts, ended flags."""
        gen = torch.Generator(device).manual_seed(seed)
        responses, texts, ended = [], [], []
        for i in range(0, len(contexts), 64):
            tokens, _, _, rmask = generate(model, contexts[i:i + 64], args.max_new_tokens, eot, args.temperature, generator=gen)
            P = tokens.size(1) - rmask.size(1)
            for row, m in zip(tokens[:, P:].tolist(), rmask.tolist()):
                r = row[:sum(m)]
                responses.append(r)
                ended.append(bool(r) and r[-1] == eot)
                texts.append(enc.decode(r[:-1] if ended[-1] else r))
        return responses, texts, ended

    # the baseline's samples, and a second independent draw so SFT's own row is measured, not assumed
    t0 = time.time()
    _, sft_texts, sft_ended = sample(sft, prompts, args.seed)
    results = {}
    for name, path, prefix in policies:
        ckpt = load_checkpoint(path, device)
        if ckpt["model_config"].get("head") != "lm":
            raise SystemExit(f"error: {path} is a reward/value checkpoint, not a policy")
        model = model_from_checkpoint(ckpt, device).eval()
        prefix_ids = enc.encode_ordinary(prefix)
        contexts = [prefix_ids + p for p in prompts]
        if max(map(len, contexts)) + args.max_new_tokens > model.config.block_size:
            raise SystemExit(f"error: {name}: a test prompt{' with the few-shot prefix' if prefix else ''} leaves no room for "
                             f"{args.max_new_tokens} response tokens in the {model.config.block_size}-token context")
        responses, texts, ended = sample(model, contexts, args.seed + 1 + len(results))
        kl = [a - b for a, b in zip(sequence_logprobs(model, contexts, responses, device),
                                    sequence_logprobs(sft, prompts, responses, device))]
        r = {"n": len(records)}
        for view, group in (("heldout", L.HELDOUT_LABELERS), ("train", L.TRAIN_LABELERS)):
            outcomes = [L.compare(rng.choice(group), rec["spec"], t, s, rng, ended_a=e, ended_b=se)
                        for rec, t, e, s, se in zip(records, texts, ended, sft_texts, sft_ended)]
            r[f"winrate_{view}"], r[f"winrate_{view}_ci"] = mean_ci(outcomes)
        r["likert"], r["likert_ci"] = mean_ci([L.score_1_to_7(rng.choice(L.HELDOUT_LABELERS), rec["spec"], t, rng, ended=e)
                                               for rec, t, e in zip(records, texts, ended)])
        judged = [(rec["spec"], L.judge(rec["spec"], t, ended=e)) for rec, t, e in zip(records, texts, ended)]

        def rate(key, where=lambda spec: True):  # share of the (selected) test prompts whose verdict has key set
            flags = [j[key] for spec, j in judged if where(spec)]
            return sum(flags) / len(flags) if flags else float("nan")
        r["fails_to_follow"] = 1 - rate("follows")
        r["violates_constraint"] = rate("violates_constraint", L.has_constraint)
        r["hallucinates"] = rate("hallucinates", L.is_closed_domain)
        r["inappropriate"] = rate("inappropriate")
        r["truthful"] = 1 - rate("hallucinates", L.is_open_qa)
        r["ended"] = sum(ended) / len(ended)
        r["response_tokens"] = sum(map(len, responses)) / len(responses)
        r["kl_from_sft"] = sum(kl) / len(kl)
        r["corpus_loss"] = corpus_loss(model, val_docs, eot, enc, device, model.config.block_size)
        r["nlp_task_acc"] = zero_shot_accuracy(model, nlp_items, enc, device)
        r["params"] = model.num_params()
        results[name] = r
        print(f"{name}: win rate vs SFT {r['winrate_heldout']:.3f} ± {r['winrate_heldout_ci']:.3f} | "
              f"likert {r['likert']:.2f} | kl {r['kl_from_sft']:.2f} | {time.time() - t0:.0f}s", flush=True)

    # the report
    cols = [("win rate vs SFT (held-out labelers)", "winrate_heldout", "{:.3f} ± {:.3f}"),
            ("win rate (training labelers)", "winrate_train", "{:.3f} ± {:.3f}"), ("1–7 score", "likert", "{:.2f} ± {:.2f}"),
            ("fails to follow", "fails_to_follow", "{:.1%}"), ("violates constraint", "violates_constraint", "{:.1%}"),
            ("hallucinates (closed domain)", "hallucinates", "{:.1%}"), ("inappropriate", "inappropriate", "{:.1%}"),
            ("truthful (open QA)", "truthful", "{:.1%}"), ("KL from SFT (nats)", "kl_from_sft", "{:.2f}"),
            ("held-out corpus loss", "corpus_loss", "{:.4f}"), ("zero-shot QA acc", "nlp_task_acc", "{:.1%}"),
            ("ends with eot", "ended", "{:.1%}"), ("response tokens", "response_tokens", "{:.1f}")]
    lines = ["| policy | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results.items():
        cells = [fmt.format(r[key], r.get(key + "_ci", 0)) for _, key, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    note = (f"{len(records)} test prompts from held-out users, seed {args.seed}, temperature {args.temperature}. "
            "Win rate: the held-out labelers' preference for the policy's response over the SFT model's; ties count half; "
            "± is a 95% confidence interval. SFT's row compares it with a second, independent SFT sample.")
    print("\n" + table + "\n\n" + note)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    plot(results, os.path.join(args.out_dir, "figure1.png"))
    return results


def plot(results, path):
    """Figure 1: win rate against SFT vs model size, one line per method (one point per size)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -r requirements-dev.txt): no figure")
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    methods = {}
    for name, r in results.items():
        method = name.split("@")[0]  # "PPO@m" = PPO at base size m
        methods.setdefault(method, []).append((r["params"], r["winrate_heldout"], r["winrate_heldout_ci"]))
    for method, points in methods.items():
        points.sort()
        xs, ys, es = zip(*points)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("win rate against SFT (held-out labelers)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
