"""
Evaluation (paper §3.6 and §4): how often held-out labelers prefer each policy's response to the
SFT model's on test prompts from held-out users (Figure 1), the 1–7 quality score, the metadata of
Figure 4 (fails to follow, violates a constraint, hallucinates, inappropriate), truthfulness, the
"alignment tax" on the pretraining distribution (§4.2), and the KL of each policy from SFT. On real data,
which has no simulated labelers, a reward model judges instead (--judge rm): win rate and mean RM score.

    python evaluate.py                               # every policy of the default pipeline found under out/
    python evaluate.py --seed 7                      # another draw of the labelers' noise and of the samples
    python evaluate.py --policy PPO-beta0.1=out/ppo-b01/model.pt   # add any checkpoint as a row
    python evaluate.py --judge rm --rm out/hh-rm-judge/model.pt --test_prompts data/hh_rlhf/test_prompts.jsonl \
        --base gpt2 --sft out/hh-sft/model.pt --ppo '' --ppo_ptx out/hh-ppo-ptx/model.pt \
        --corpus_val '' --nlp_task '' --max_new_tokens 128 --device cuda --out_dir out/hh-eval   # real data: data/README.md

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

from model import (GPT2_SIZES, from_pretrained, generate, get_tokenizer, left_pad, load_checkpoint, model_from_checkpoint, read_documents,
                   read_jsonl, rewards_at_last_token, token_logprobs)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--world", default="data/world", help="folder of the generated default world")
parser.add_argument("--test_prompts", default=None, help="test prompts, from users held out of training; the labelers need the world's 'spec' of each task [default: <world>/test_prompts.jsonl]")
parser.add_argument("--corpus_val", default=None, help="held-out pretraining text for the 'held-out corpus loss' column ('': no column) [default: <world>/corpus_val.txt]")
parser.add_argument("--nlp_task", default=None, help="the public NLP task of the 'zero-shot QA acc' column ('': no column) [default: <world>/nlp_task.jsonl]")
# the judge
parser.add_argument("--judge", choices=["labelers", "rm"], default="labelers", help="who compares responses: the default world's simulated labelers, or a reward model (--rm; real data has no labelers)")
parser.add_argument("--rm", default=None, help="with --judge rm: the reward model that judges (scalar head, the SFT's tokenizer). Judging PPO with the RM it was trained against overstates its gains (PPO optimised that RM, its errors included): prefer a second RM trained on a disjoint split of the comparisons")
parser.add_argument("--missing_eot_penalty", type=float, default=-1.0, help="with --judge rm: the score, instead of the RM's, of a response that never emits <|endoftext|> within --max_new_tokens (as ppo.py)")
# the policies
parser.add_argument("--base", default="out/base/model.pt", help="the pretrained base: the 'GPT' row, and with the labelers' few-shot prefix the 'GPT-prompted' row; a .pt checkpoint, or a GPT-2 name / Hugging Face folder ('': no row)")
parser.add_argument("--sft", default="out/sft/model.pt", help="the SFT baseline every win rate is measured against")
parser.add_argument("--ppo", default="out/ppo/model.pt", help="the PPO policy (skipped when missing)")
parser.add_argument("--ppo_ptx", default="out/ppo-ptx/model.pt", help="the PPO-ptx policy (skipped when missing)")
parser.add_argument("--policy", action="append", default=[], metavar="NAME=PATH", help="another policy to evaluate as a row (repeatable)")
# sampling and output
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


def rm_winrate(scores, sft_scores):
    """The RM judge's win rate of a policy against SFT, over prompts x: mean of 1[r(x, y) > r(x, y_SFT)] + ½·1[r(x, y) = r(x, y_SFT)],
    with the 95% confidence half-width. A tie is in practice two responses that both got --missing_eot_penalty."""
    return mean_ci([1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, sft_scores)])


@torch.no_grad()
def rm_scores(rm, contexts, responses, ended, missing_eot_penalty, device, batch_size=64):
    """r_θ(x, y) of each context + response (token lists, eot included when it ended) at its last token, as ppo.py scores
    rollouts; a response that never ended scores missing_eot_penalty instead (ppo.final_score's rule, without the clip)."""
    out = []
    for i in range(0, len(contexts), batch_size):
        seqs = [c + r for c, r in zip(contexts[i:i + batch_size], responses[i:i + batch_size])]
        out += rewards_at_last_token(rm, *left_pad(seqs, 0, device)).tolist()
    return [s if e else missing_eot_penalty for s, e in zip(out, ended)]


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
    if len(stream) < block_size + 1:
        raise SystemExit(f"error: the held-out text has {len(stream)} tokens, not one {block_size + 1}-token sequence: "
                         "give --corpus_val more text, or '' to skip")
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


def labeler_verdicts(records, texts, ended, sft_texts, sft_ended, rng):
    """The simulated labelers' numbers for one policy's responses: win rates against SFT's, the 1–7 score and the
    metadata of Figure 4 (the default world only: the labelers read each prompt's 'spec')."""
    from data import labelers as L
    r = {}
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
    return r


def load_policy(path, device):
    """A policy row's model and metadata: our checkpoint (.pt, LM head), or a GPT-2 name / Hugging Face folder (the
    'GPT' row on real data), as sft.py --init reads them."""
    if not path.endswith(".pt"):
        return from_pretrained(path).to(device).eval(), {"tokenizer": "gpt2"}
    ckpt = load_checkpoint(path, device)
    if ckpt["model_config"].get("head") != "lm":
        raise SystemExit(f"error: {path} is a reward/value checkpoint, not a policy")
    return model_from_checkpoint(ckpt, device).eval(), ckpt


# -----------------------------------------------------------------------------
# the run

LABELER_COLUMNS = [("win rate vs SFT (held-out labelers)", "winrate_heldout", "{:.3f} ± {:.3f}"),
                   ("win rate (training labelers)", "winrate_train", "{:.3f} ± {:.3f}"), ("1–7 score", "likert", "{:.2f} ± {:.2f}"),
                   ("fails to follow", "fails_to_follow", "{:.1%}"), ("violates constraint", "violates_constraint", "{:.1%}"),
                   ("hallucinates (closed domain)", "hallucinates", "{:.1%}"), ("inappropriate", "inappropriate", "{:.1%}"),
                   ("truthful (open QA)", "truthful", "{:.1%}")]
RM_COLUMNS = [("win rate vs SFT (RM judge)", "winrate_rm", "{:.3f} ± {:.3f}"), ("mean RM score", "rm_score", "{:.3f} ± {:.3f}")]


def main(argv=None):
    args = parser.parse_args(argv)
    if args.judge == "rm" and not args.rm:
        parser.error("--judge rm needs --rm PATH, the reward model that judges")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    test_path = args.test_prompts or os.path.join(args.world, "test_prompts.jsonl")
    args.corpus_val = os.path.join(args.world, "corpus_val.txt") if args.corpus_val is None else args.corpus_val
    args.nlp_task = os.path.join(args.world, "nlp_task.jsonl") if args.nlp_task is None else args.nlp_task
    records = read_jsonl(test_path, ["prompt"])
    if args.n_prompts:
        records = records[:args.n_prompts]
    if args.judge == "labelers" and "spec" not in records[0]:
        raise SystemExit(f"error: {records[0]['_where']}: no 'spec': the simulated labelers judge only the world's own prompts "
                         "(on other data: --judge rm --rm PATH)")
    device = args.device
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)

    policies = [("GPT", args.base, "")]
    if args.judge == "labelers":  # the few-shot prefix is written in the world's task phrasing
        from data.world import few_shot_prefix
        policies.append(("GPT-prompted", args.base, few_shot_prefix()))
    policies += [("SFT", args.sft, ""), ("PPO", args.ppo, ""), ("PPO-ptx", args.ppo_ptx, "")]
    policies += [(spec.split("=", 1)[0], spec.split("=", 1)[1], "") for spec in args.policy]
    found = lambda path: os.path.exists(path) or path in GPT2_SIZES
    policies = [p for p in policies if p[0] == "SFT" or found(p[1])]
    missing = [n for n, p in (("GPT", args.base), ("PPO", args.ppo), ("PPO-ptx", args.ppo_ptx)) if p and not found(p)]
    if missing:
        print(f"note: no checkpoint for {', '.join(missing)}; those rows are skipped")

    sft_ckpt = load_checkpoint(args.sft, device)
    sft = model_from_checkpoint(sft_ckpt, device).eval()
    enc = get_tokenizer(sft_ckpt["tokenizer"])
    eot = enc.eot_token
    prompts = [enc.encode_ordinary(r["prompt"]) for r in records]
    val_docs = read_documents(args.corpus_val) if args.corpus_val else None
    nlp_items = read_jsonl(args.nlp_task, ["prompt", "answer"]) if args.nlp_task else None
    if args.judge == "rm":  # the checks ppo.py makes of its RM
        rm_ckpt = load_checkpoint(args.rm, device)
        if rm_ckpt["model_config"].get("head") != "scalar":
            raise SystemExit(f"error: {args.rm} is a language model checkpoint (LM head); --rm needs a reward model (python reward.py)")
        if rm_ckpt.get("tokenizer") != sft_ckpt["tokenizer"]:
            raise SystemExit(f"error: {args.rm} uses tokenizer {rm_ckpt.get('tokenizer')} but {args.sft} uses {sft_ckpt['tokenizer']}")
        rm = model_from_checkpoint(rm_ckpt, device).eval()
        if max(map(len, prompts)) + args.max_new_tokens > rm.config.block_size:
            raise SystemExit(f"error: {args.rm}: a test prompt and {args.max_new_tokens} response tokens do not fit in its "
                             f"{rm.config.block_size}-token context")
        judge = f"reward model {args.rm} (not human or simulated labelers)"
    else:
        judge = "simulated labelers of data/labelers.py (win rate and scores: the held-out group)"

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
    sft_responses, sft_texts, sft_ended = sample(sft, prompts, args.seed)
    if args.judge == "rm":
        sft_scores = rm_scores(rm, prompts, sft_responses, sft_ended, args.missing_eot_penalty, device)
    results, own_rm = {}, []
    for name, path, prefix in policies:
        model, meta = load_policy(path, device)
        if meta.get("tokenizer") != sft_ckpt["tokenizer"]:
            raise SystemExit(f"error: {name}: {path} uses tokenizer {meta.get('tokenizer')} but {args.sft} uses {sft_ckpt['tokenizer']}")
        used = meta.get("args", {})  # PPO's args name the RM it optimised; SFT's the RM it was selected by, if --select_by rm
        if args.judge == "rm" and used.get("select_by", "rm") == "rm" and os.path.realpath(used.get("rm") or "") == os.path.realpath(args.rm):
            own_rm.append(name)
        prefix_ids = enc.encode_ordinary(prefix)
        contexts = [prefix_ids + p for p in prompts]
        if max(map(len, contexts)) + args.max_new_tokens > model.config.block_size:
            raise SystemExit(f"error: {name}: a test prompt{' with the few-shot prefix' if prefix else ''} leaves no room for "
                             f"{args.max_new_tokens} response tokens in the {model.config.block_size}-token context")
        responses, texts, ended = sample(model, contexts, args.seed + 1 + len(results))
        kl = [a - b for a, b in zip(sequence_logprobs(model, contexts, responses, device),
                                    sequence_logprobs(sft, prompts, responses, device))]
        r = {"n": len(records)}
        if args.judge == "labelers":
            r.update(labeler_verdicts(records, texts, ended, sft_texts, sft_ended, rng))
        else:  # the RM reads the prompt without any few-shot prefix, as in training
            scores = rm_scores(rm, prompts, responses, ended, args.missing_eot_penalty, device)
            r["winrate_rm"], r["winrate_rm_ci"] = rm_winrate(scores, sft_scores)
            r["rm_score"], r["rm_score_ci"] = mean_ci(scores)
        r["ended"] = sum(ended) / len(ended)
        r["response_tokens"] = sum(map(len, responses)) / len(responses)
        r["kl_from_sft"] = sum(kl) / len(kl)
        if val_docs:
            r["corpus_loss"] = corpus_loss(model, val_docs, eot, enc, device, model.config.block_size)
        if nlp_items:
            r["nlp_task_acc"] = zero_shot_accuracy(model, nlp_items, enc, device)
        r["params"] = model.num_params()
        results[name] = r
        if args.judge == "labelers":
            print(f"{name}: win rate vs SFT {r['winrate_heldout']:.3f} ± {r['winrate_heldout_ci']:.3f} | "
                  f"likert {r['likert']:.2f} | kl {r['kl_from_sft']:.2f} | {time.time() - t0:.0f}s", flush=True)
        else:
            print(f"{name}: RM-judged win rate vs SFT {r['winrate_rm']:.3f} ± {r['winrate_rm_ci']:.3f} | "
                  f"RM score {r['rm_score']:.3f} | kl {r['kl_from_sft']:.2f} | {time.time() - t0:.0f}s", flush=True)

    # the report
    cols = (LABELER_COLUMNS if args.judge == "labelers" else RM_COLUMNS) + [("KL from SFT (nats)", "kl_from_sft", "{:.2f}")]
    cols += [("held-out corpus loss", "corpus_loss", "{:.4f}")] if val_docs else []
    cols += [("zero-shot QA acc", "nlp_task_acc", "{:.1%}")] if nlp_items else []
    cols += [("ends with eot", "ended", "{:.1%}"), ("response tokens", "response_tokens", "{:.1f}")]
    lines = ["| policy | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results.items():
        cells = [fmt.format(r[key], r.get(key + "_ci", 0)) for _, key, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    if args.judge == "labelers":
        how = "Win rate: the held-out labelers' preference for the policy's response over the SFT model's"
    else:
        how = (f"Win rate: how often the reward model scores the policy's response above the SFT model's (a response without "
               f"<|endoftext|> scores {args.missing_eot_penalty}); RM score: its mean")
        if own_rm:
            how = (f"Caution: {', '.join(own_rm)} trained against this same RM, which overstates their gains; "
                   "prefer an RM trained on a disjoint split. ") + how
    note = (f"judge: {judge}\n\n{len(records)} test prompts ({test_path}), seed {args.seed}, temperature {args.temperature}. "
            f"{how}; ties count half; ± is a 95% confidence interval. SFT's row compares it with a second, independent SFT sample.")
    print("\n" + table + "\n\n" + note)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"judge": judge, "args": vars(args), "results": results}, f, indent=1)
    key, judged_by = ("winrate_heldout", "held-out labelers") if args.judge == "labelers" else ("winrate_rm", "reward-model judge")
    plot(results, os.path.join(args.out_dir, "figure1.png"), key, judged_by)
    return results


def plot(results, path, key="winrate_heldout", judge="held-out labelers"):
    """Figure 1: win rate against SFT (results[...][key], judged by `judge`) vs model size, one line per method (one point per size)."""
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
        methods.setdefault(method, []).append((r["params"], r[key], r[key + "_ci"]))
    for method, points in methods.items():
        points.sort()
        xs, ys, es = zip(*points)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"win rate against SFT ({judge})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
