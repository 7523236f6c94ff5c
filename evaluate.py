"""
Evaluation (paper §3.6 and §4): how often held-out labelers prefer each policy's response to the
SFT model's on test prompts from held-out users (Figure 1), the 1–7 quality score, the metadata of
Figure 4 (fails to follow, violates a constraint, hallucinates, inappropriate), truthfulness, the
"alignment tax" on the pretraining distribution (§4.2), and the KL of each policy from SFT. On real
data, which has no simulated labelers, a reward model judges instead (--judge rm): win rate and
mean RM score.

    python evaluate.py                        # every policy of the default pipeline found under out/
    python evaluate.py --seed 7               # another draw of the labelers' noise and of the samples
    python evaluate.py --policy PPO-beta0.1=out/ppo-b01/model.pt   # add any checkpoint as a row
    python evaluate.py --judge rm --rm out/hh-rm-judge/model.pt \
        --test_prompts data/hh_rlhf/test_prompts.jsonl --base gpt2 --sft out/hh-sft/model.pt \
        --ppo '' --ppo_ptx out/hh-ppo-ptx/model.pt --corpus_val '' --nlp_task '' \
        --max_new_tokens 128 --device cuda --out_dir out/hh-eval       # real data: data/README.md
    python evaluate.py --curve out/ppo --curve out/ppo-ptx --out_dir out/curve   # over-optimization
    python evaluate.py --size out/sizes/xs --size out/sizes/s --out_dir out/eval-sizes   # Figure 1 by size
    python evaluate.py --prompt "Write a sentence about Mira."   # every policy's answer, its RM score
    python evaluate.py --chat                 # the same for each instruction typed; an empty line ends
    python evaluate.py --prompt "List three foods." --response " bread" --response " bread, pie and rice"
                                              # the RM's score and the labelers' verdict of answers you write
    python evaluate.py --curves out/sft out/rm out/ppo out/ppo-ptx   # training curves of each log.jsonl

Writes <out_dir>/results.md (the table and, judged by the labelers, which explicit constraints each
policy breaks; also printed), results.json (every number), samples.md
(--show) and, when matplotlib is installed (requirements-dev.txt), figure1.png. With --curve:
curve.md, curve.json and curve.png instead; with --curves: curves.png, or without matplotlib a
text table of each run.

Modes, and why:
- --judge rm: judging PPO with the RM it was trained against overstates its gains (PPO optimised
  that RM, its errors included); prefer a second RM trained on a disjoint split of the
  comparisons. A response that never emits <|endoftext|> scores --missing_eot_penalty, as in
  ppo.py.
- Judged by the labelers, the table ends with the 'ideal answers' row, the world's own answer to
  every test prompt: the top of the scale (0.72-0.75 against SFT on the default world, which answers
  about half the test prompts as well as that already). Beside each win rate, how often the answer
  is better or worse than SFT's by the held-out labelers' noise-free verdict: what it is made of.
- --base is the 'GPT' row and, with the labelers' few-shot prefix, the 'GPT-prompted' row; '' or
  a missing checkpoint leaves a row out (never SFT's, the baseline of every win rate).
- --size DIR: a folder with base/, sft/, ppo/ and ppo-ptx/ runs of one model size (bash
  data/sizes.sh); its rows are named METHOD@<folder name>, judged against --sft like the others.
- --curve RUN_DIR (Gao et al. 2022): at --sft (iteration 0) and each RUN_DIR/iter<N>.pt, the KL
  from SFT, the proxy score (the run's own RM: the --rm in RUN_DIR/model.pt's saved args, as
  iter<N>.pt records none; else this --rm, else out/rm/model.pt) and the judge's win rate.
- --curves RUN_DIR...: the training curves in each log.jsonl of sft.py, reward.py or ppo.py.
- --prompt / --chat wrap a bare instruction in --template (the world's 'Instruction: {}\\nResponse:'
  by default; '' sends it as typed) and print every policy's answer with the RM's score. With
  --response, the answers given are scored instead of sampled, and when the prompt is one of the
  world's (--seed) the training labelers' noise-free verdict is printed beside the RM's score.
"""
import argparse
import json
import math
import os
import random
import re
import time

import torch
import torch.nn.functional as F

from common import HelpFormatter, load_reward_model, read_documents, read_jsonl, rm_scores
from model import (GPT2_SIZES, decode_responses, from_pretrained, get_tokenizer, left_pad, load_checkpoint,
                   model_from_checkpoint, sample_responses, token_logprobs)


# -----------------------------------------------------------------------------
# The statistics

def mean_ci(outcomes):
    """Mean and 95% confidence half-width (normal approximation) of per-prompt outcomes."""
    n = len(outcomes)
    mean = sum(outcomes) / n
    var = sum((x - mean) ** 2 for x in outcomes) / max(n - 1, 1)
    return mean, 1.96 * math.sqrt(var / n)


def rm_winrate(scores, sft_scores):
    """The RM judge's win rate of a policy against SFT, over prompts x:
        mean of 1[r(x, y) > r(x, y_SFT)] + ½·1[r(x, y) = r(x, y_SFT)],
    with the 95% confidence half-width. A tie is in practice two responses that both got
    --missing_eot_penalty."""
    return mean_ci([1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, sft_scores)])


@torch.no_grad()
def sequence_logprobs(model, contexts, responses, device, temperature=1.0, batch_size=64):
    """Σ_t log π(y_t | x, y_<t) of each response (token list, eot included when it ended) given its
    context, under the distribution the responses were sampled from (logits / temperature)."""
    out = []
    for i in range(0, len(contexts), batch_size):
        seqs = [c + r for c, r in zip(contexts[i:i + batch_size], responses[i:i + batch_size])]
        tokens, mask = left_pad(seqs, 0, device)
        logp = token_logprobs(model(tokens, attention_mask=mask)[:, :-1], tokens[:, 1:], temperature)
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
        raise SystemExit(f"error: the held-out text has {len(stream)} tokens, not one {block_size + 1}-token "
                         "sequence: give --corpus_val more text, or '' to skip")
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
    """A 'public NLP task' of the world, in the corpus's own phrasing: the greedy answer contains the
    gold answer. {"nlp_task_acc": all items, "nlp_task_acc_<skill>": the items of each skill (the
    world's: facts, reading)}."""
    prompts = [enc.encode_ordinary(it["prompt"]) for it in items]
    responses = sample_responses(model, prompts, max_new_tokens, enc.eot_token, temperature=0)
    correct = {}
    for r, it in zip(responses, items):
        answer = enc.decode([t for t in r if t != enc.eot_token]).split("\n")[0]
        for key in ("nlp_task_acc",) + (("nlp_task_acc_" + it["skill"],) if "skill" in it else ()):
            correct.setdefault(key, []).append(it["answer"].lower() in answer.lower())
    return {key: sum(c) / len(c) for key, c in correct.items()}


def labeler_verdicts(records, texts, ended, sft_texts, sft_ended, rng):
    """The simulated labelers' numbers for one policy's responses: win rates against SFT's, the 1–7
    score and the metadata of Figure 4 (the default world only: the labelers read each prompt's
    'spec')."""
    from data import labelers as L
    r = {}
    for view, group in (("heldout", L.HELDOUT_LABELERS), ("train", L.TRAIN_LABELERS)):
        outcomes = [L.compare(rng.choice(group), rec["spec"], t, s, rng, ended_a=e, ended_b=se)
                    for rec, t, e, s, se in zip(records, texts, ended, sft_texts, sft_ended)]
        r[f"winrate_{view}"], r[f"winrate_{view}_ci"] = mean_ci(outcomes)
    r["likert"], r["likert_ci"] = mean_ci([L.score_1_to_7(rng.choice(L.HELDOUT_LABELERS), rec["spec"], t, rng,
                                                          ended=e)
                                           for rec, t, e in zip(records, texts, ended)])
    judged = [(rec["spec"], L.judge(rec["spec"], t, ended=e)) for rec, t, e in zip(records, texts, ended)]
    # answer by answer, the held-out labelers' noise-free verdict against SFT's: what the win rate is
    # made of (a tie counts half whatever the noise), and how much room SFT leaves
    mine = [L.mean_utility(j, L.HELDOUT_LABELERS, "evaluation") for _, j in judged]
    sft = [L.mean_utility(L.judge(rec["spec"], s, ended=se), L.HELDOUT_LABELERS, "evaluation")
           for rec, s, se in zip(records, sft_texts, sft_ended)]
    r["better_than_sft"] = sum(a > b + 1e-9 for a, b in zip(mine, sft)) / len(mine)
    r["worse_than_sft"] = sum(a < b - 1e-9 for a, b in zip(mine, sft)) / len(mine)

    def rate(key, where=lambda spec: True):  # share of the (selected) test prompts whose verdict has key set
        flags = [j[key] for spec, j in judged if where(spec)]
        return sum(flags) / len(flags) if flags else float("nan")
    r["fails_to_follow"] = 1 - rate("follows")
    r["violates_constraint"] = rate("violates_constraint", L.has_constraint)
    r["hallucinates"] = rate("hallucinates", L.is_closed_domain)
    r["inappropriate"] = rate("inappropriate")
    r["truthful"] = 1 - rate("hallucinates", L.is_open_qa)
    r["refuses_benign"] = rate("refuses_benign", lambda spec: not spec.get("harmful", False))
    # each explicit constraint, broken / asked (the judge calls list_format 'format'), and lists
    # shorter than asked: what a reward model that pays for length buys (RESULTS.md)
    for key in L.CONSTRAINTS:
        name = "format" if key == "list_format" else key
        r["broken_" + name] = [sum(name in j["violations"] for spec, j in judged if key in spec),
                               sum(key in spec for spec, _ in judged)]
    lists = [(spec["items"], j["items_given"]) for spec, j in judged if "items" in spec]
    r["fewer_items"] = [sum(given < asked for asked, given in lists), len(lists)]
    return r


# -----------------------------------------------------------------------------
# Config

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
parser.add_argument("--world", default="data/world", help="folder of the generated default world")
parser.add_argument("--test_prompts", default=None, help="test prompts of held-out users, JSONL "
                    "[default: <world>/test_prompts.jsonl]")
parser.add_argument("--corpus_val", default=None, help="held-out pretraining text ('': no column) "
                    "[default: <world>/corpus_val.txt]")
parser.add_argument("--nlp_task", default=None, help="the zero-shot QA task ('': no column) "
                    "[default: <world>/nlp_task.jsonl]")
# the judge
parser.add_argument("--judge", choices=["labelers", "rm"], default="labelers",
                    help="who compares responses: the simulated labelers, or a reward model")
parser.add_argument("--rm", default=None, help="the reward model of --judge rm, --curve, --prompt and --chat "
                    "[default: out/rm/model.pt]")
parser.add_argument("--missing_eot_penalty", type=float, default=-1.0,
                    help="RM score of a response without eot")
# the policies
parser.add_argument("--base", default="out/base/model.pt",
                    help="the base model: .pt, GPT-2 name or folder ('': none)")
parser.add_argument("--sft", default="out/sft/model.pt", help="the SFT baseline of every win rate")
parser.add_argument("--ppo", default="out/ppo/model.pt", help="the PPO policy ('': none)")
parser.add_argument("--ppo_ptx", default="out/ppo-ptx/model.pt", help="the PPO-ptx policy ('': none)")
parser.add_argument("--policy", action="append", default=[], metavar="NAME=PATH",
                    help="another policy as a row")
parser.add_argument("--size", action="append", default=[], metavar="DIR", help="another model size's runs")
parser.add_argument("--curve", action="append", default=[], metavar="RUN_DIR",
                    help="instead of the table: a ppo.py run's over-optimization curve")
parser.add_argument("--curves", nargs="+", default=[], metavar="RUN_DIR",
                    help="instead of the table: the training curves of each run's log.jsonl")
# talking to the models
parser.add_argument("--prompt", action="append", default=[],
                    help="instead of the table: every policy's answer to this instruction")
parser.add_argument("--response", action="append", default=[],
                    help="with --prompt: score this answer instead of sampling one (a leading space is added)")
parser.add_argument("--chat", action="store_true", help="instead of the table: answers to instructions typed")
parser.add_argument("--template", default=None,
                    help="how --prompt and --chat wrap an instruction, \\n a newline "
                    "[default: the world's]")
# sampling and output
parser.add_argument("--n_prompts", type=int, default=0, help="evaluate on the first N test prompts (0: all)")
parser.add_argument("--max_new_tokens", type=int, default=48, help="response length limit, tokens")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of every policy")
parser.add_argument("--seed", type=int, default=1234, help="seed of the samples and of the labelers' noise")
parser.add_argument("--show", type=int, default=3, help="test prompts printed with every policy's answer")
parser.add_argument("--out_dir", default="out/eval", help="where the tables and figures go")
parser.add_argument("--device", default="cpu", help="where the policies run")


# -----------------------------------------------------------------------------
# The run

def load_policy(path, device, tokenizer=None, sft_path=None):
    """A policy row's model and metadata: our checkpoint (.pt, LM head), or a GPT-2 name / Hugging
    Face folder (the 'GPT' row on real data), as sft.py --init reads them. With tokenizer, the
    policy must use it (the SFT model's, of sft_path): every row is compared on the same tokens."""
    if not path.endswith(".pt"):
        model, meta = from_pretrained(path).to(device).eval(), {"tokenizer": "gpt2"}
    else:
        meta = load_checkpoint(path, device)
        if meta["model_config"].get("head") != "lm":
            raise SystemExit(f"error: {path} is a reward/value checkpoint, not a policy")
        model = model_from_checkpoint(meta, device).eval()
    if tokenizer is not None and meta.get("tokenizer") != tokenizer:
        raise SystemExit(f"error: {path} uses tokenizer {meta.get('tokenizer')} but {sft_path} uses "
                         f"{tokenizer}")
    return model, meta


def load_rm(path, args, sft_ckpt, prompts):
    """A reward model (the judge, or a run's proxy RM), with the checks ppo.py makes of its RM."""
    ckpt = load_reward_model(path, sft_ckpt["tokenizer"], args.sft, args.device)
    rm = model_from_checkpoint(ckpt, args.device).eval()
    if max(map(len, prompts)) + args.max_new_tokens > rm.config.block_size:
        raise SystemExit(f"error: {path}: a test prompt and {args.max_new_tokens} response tokens do not fit "
                         f"in its {rm.config.block_size}-token context")
    return rm


def markdown_table(rows, cols, heads=("policy",)):
    """rows: (leading cells, numbers); cols: (title, key, format), the format's second value being
    numbers[key + '_ci']."""
    lines = ["| " + " | ".join(list(heads) + [c[0] for c in cols]) + " |",
             "|---" * (len(heads) + len(cols)) + "|"]
    for lead, r in rows:
        cells = [fmt.format(r[key], r.get(key + "_ci", 0)) if key in r else "-" for _, key, fmt in cols]
        lines.append("| " + " | ".join(list(lead) + cells) + " |")
    return "\n".join(lines)


IDEAL = "ideal answers"  # the labelers' row for the world's own answers: the top of every column
LABELER_COLUMNS = [("win rate vs SFT (held-out labelers)", "winrate_heldout", "{:.3f} ± {:.3f}"),
                   ("win rate (training labelers)", "winrate_train", "{:.3f} ± {:.3f}"),
                   ("better than SFT's answer", "better_than_sft", "{:.1%}"),
                   ("worse than SFT's", "worse_than_sft", "{:.1%}"),
                   ("1–7 score", "likert", "{:.2f} ± {:.2f}"),
                   ("fails to follow", "fails_to_follow", "{:.1%}"),
                   ("violates constraint", "violates_constraint", "{:.1%}"),
                   ("hallucinates (closed domain)", "hallucinates", "{:.1%}"),
                   ("inappropriate", "inappropriate", "{:.1%}"),
                   ("truthful (open QA)", "truthful", "{:.1%}"),
                   ("refuses a benign request", "refuses_benign", "{:.1%}")]
RM_COLUMNS = [("win rate vs SFT (RM judge)", "winrate_rm", "{:.3f} ± {:.3f}"),
              ("mean RM score", "rm_score", "{:.3f} ± {:.3f}")]


def policy_rows(args):
    """(name, checkpoint, few-shot prefix) of every policy to evaluate: Figure 1's methods, those of
    each --size folder, then each --policy; a missing checkpoint's row is left out (never SFT's)."""
    prefix = None
    if args.judge == "labelers":  # the few-shot prefix: solved examples of the test prompts' own world
        from data.world import few_shot_prefix
        first = read_jsonl(args.test_prompts, ["prompt"])[0] if os.path.exists(args.test_prompts) else {}
        prefix = few_shot_prefix(first.get("spec", {}).get("seed", 1234))

    def method_rows(tag, base, sft, ppo, ppo_ptx):
        """Figure 1's methods at one model size; tag '@<size>' names the rows of a --size folder."""
        rows = [("GPT" + tag, base, "")] + ([("GPT-prompted" + tag, base,
                                              prefix)] if prefix is not None else [])
        return rows + [("SFT" + tag, sft, ""), ("PPO" + tag, ppo, ""), ("PPO-ptx" + tag, ppo_ptx, "")]

    found = lambda path: os.path.exists(path) or path in GPT2_SIZES
    policies = method_rows("", args.base, args.sft, args.ppo, args.ppo_ptx)
    for folder in args.size:
        if not os.path.isdir(folder):
            raise SystemExit(f"error: --size {folder}: no such folder (bash data/sizes.sh writes "
                             "out/sizes/<size>/)")
        tag = "@" + os.path.basename(os.path.normpath(folder))
        paths = (os.path.join(folder, s, "model.pt") for s in ("base", "sft", "ppo", "ppo-ptx"))
        policies += [row for row in method_rows(tag, *paths) if found(row[1])]
    for spec in args.policy:
        name, _, path = spec.partition("=")
        if not name or not found(path):
            raise SystemExit(f"error: --policy {spec}: expected NAME=PATH with an existing checkpoint")
        policies.append((name, path, ""))
    policies = [p for p in policies if p[0] == "SFT" or found(p[1])]
    missing = [n for n, p in (("GPT", args.base), ("PPO", args.ppo), ("PPO-ptx",
                                                                      args.ppo_ptx)) if p and not found(p)]
    if missing and not args.curve:
        print(f"note: no checkpoint for {', '.join(missing)}; those rows are skipped")
    return policies


class Evaluation:
    """What every policy is measured against: the test prompts, the SFT model and its samples (the
    baseline of every win rate), and the judge (the simulated labelers, or a reward model)."""

    def __init__(self, args):
        self.args, device = args, args.device
        self.test_path = args.test_prompts
        records = read_jsonl(self.test_path, ["prompt"])
        self.records = records[:args.n_prompts] if args.n_prompts else records
        if args.judge == "labelers" and "spec" not in self.records[0]:
            raise SystemExit(f"error: {self.records[0]['_where']}: no 'spec': the simulated labelers judge "
                             "only the world's own prompts (on other data: --judge rm --rm PATH)")
        self.rng = random.Random(args.seed)  # the labelers' noise, drawn policy after policy
        torch.manual_seed(args.seed)
        self.sft_ckpt = load_checkpoint(args.sft, device)
        self.sft = model_from_checkpoint(self.sft_ckpt, device).eval()
        self.enc = get_tokenizer(self.sft_ckpt["tokenizer"])
        self.prompts = [self.enc.encode_ordinary(r["prompt"]) for r in self.records]
        if args.judge == "rm":
            self.rm = load_rm(args.rm, args, self.sft_ckpt, self.prompts)
            self.judge = f"reward model {args.rm} (not human or simulated labelers)"
        else:
            self.judge = "simulated labelers of data/labelers.py (win rate and scores: the held-out group)"
        # the baseline's samples; each row, SFT's too, is measured on a second, independent draw
        self.t0 = time.time()
        self.sft_responses, self.sft_texts, self.sft_ended = self.sample(self.sft, self.prompts, args.seed)
        if args.judge == "rm":
            self.sft_scores = rm_scores(self.rm, self.prompts, self.sft_responses, self.sft_ended,
                                        args.missing_eot_penalty, device)

    def sample(self, model, contexts, seed):
        """One response per context: token lists (eot included when it ended), texts, ended flags."""
        args, eot = self.args, self.enc.eot_token
        generator = torch.Generator(args.device).manual_seed(seed)
        responses = sample_responses(model, contexts, args.max_new_tokens, eot, args.temperature,
                                     generator=generator)
        texts, ended = decode_responses(self.enc, responses)
        return responses, texts, ended

    def measure(self, name, model, seed, prefix="", proxy=None):
        """One policy's numbers: its responses to the test prompts (after a few-shot prefix, if any)
        judged against SFT's, its KL from SFT (the sampled estimate E_y~π[log π(y|x) − log π_SFT(y|x)])
        and, given proxy = (RM, penalty), that RM's mean score. Returns (numbers, texts, ended)."""
        args, device, prompts = self.args, self.args.device, self.prompts
        contexts = [self.enc.encode_ordinary(prefix) + p for p in prompts]
        if max(map(len, contexts)) + args.max_new_tokens > model.config.block_size:
            raise SystemExit(f"error: {name}: a test prompt{' with the few-shot prefix' if prefix else ''} "
                             f"leaves no room for {args.max_new_tokens} response tokens in the "
                             f"{model.config.block_size}-token context")
        responses, texts, ended = self.sample(model, contexts, seed)
        own = sequence_logprobs(model, contexts, responses, device, args.temperature)
        sft = sequence_logprobs(self.sft, prompts, responses, device, args.temperature)
        kl = [a - b for a, b in zip(own, sft)]
        r = {"n": len(self.records)}
        if args.judge == "labelers":
            r.update(labeler_verdicts(self.records, texts, ended, self.sft_texts, self.sft_ended, self.rng))
        else:  # the RM reads the prompt without any few-shot prefix, as in training
            scores = rm_scores(self.rm, prompts, responses, ended, args.missing_eot_penalty, device)
            r["winrate_rm"], r["winrate_rm_ci"] = rm_winrate(scores, self.sft_scores)
            r["rm_score"], r["rm_score_ci"] = mean_ci(scores)
        if proxy:
            proxy_scores = rm_scores(proxy[0], prompts, responses, ended, proxy[1], device)
            r["proxy_rm_score"], r["proxy_rm_score_ci"] = mean_ci(proxy_scores)
        r["ended"] = sum(ended) / len(ended)
        r["response_tokens"] = sum(map(len, responses)) / len(responses)
        r["kl_from_sft"] = sum(kl) / len(kl)
        if args.judge == "labelers":
            line = (f"win rate vs SFT {r['winrate_heldout']:.3f} ± {r['winrate_heldout_ci']:.3f} | "
                    f"likert {r['likert']:.2f}")
        else:
            line = (f"RM-judged win rate vs SFT {r['winrate_rm']:.3f} ± {r['winrate_rm_ci']:.3f} | "
                    f"RM score {r['rm_score']:.3f}")
        line += f" | proxy RM score {r['proxy_rm_score']:.3f}" if proxy else ""
        print(f"{name}: {line} | kl {r['kl_from_sft']:.2f} | {time.time() - self.t0:.0f}s", flush=True)
        return r, texts, ended


def constraint_table(results):
    """Which explicit constraints each policy breaks: broken / asked, by kind of constraint."""
    kinds = [k[len("broken_"):] for k in next(iter(results.values())) if k.startswith("broken_")]
    def counts(r, key):
        return f"{r[key][0]} / {r[key][1]}" if r[key][1] else "-"
    lines = ["| breaks (of those asked) | " + " | ".join(kinds) + " | fewer list items than asked |",
             "|---" * (len(kinds) + 2) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(counts(r, "broken_" + k) for k in kinds)
                     + f" | {counts(r, 'fewer_items')} |")
    return "\n".join(lines)


def write_report(args, name, table, note, numbers):
    """The table and its note, printed and in <out_dir>/<name>.md; every number in <name>.json."""
    print("\n" + table + "\n\n" + note)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, name + ".md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")
    with open(os.path.join(args.out_dir, name + ".json"), "w") as f:
        json.dump(numbers, f, indent=1)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.curves:  # the logs alone: no checkpoint, no test prompt
        return draw_curves(args.curves, args.out_dir)
    if args.judge == "rm" and not args.rm:
        parser.error("--judge rm needs --rm PATH, the reward model that judges")
    args.test_prompts = args.test_prompts or os.path.join(args.world, "test_prompts.jsonl")
    policies = policy_rows(args)
    if args.response and not args.prompt:
        parser.error("--response scores an answer to a --prompt: give the prompt too")
    if args.prompt or args.chat:
        return chat(args, policies)
    args.corpus_val = os.path.join(args.world,
                                   "corpus_val.txt") if args.corpus_val is None else args.corpus_val
    args.nlp_task = os.path.join(args.world, "nlp_task.jsonl") if args.nlp_task is None else args.nlp_task
    if args.curve:
        return over_optimization(args, Evaluation(args))
    val_docs = read_documents(args.corpus_val) if args.corpus_val else None
    nlp_items = read_jsonl(args.nlp_task, ["prompt", "answer"]) if args.nlp_task else None
    return figure1(args, Evaluation(args), policies, val_docs, nlp_items)


def figure1(args, ev, policies, val_docs, nlp_items):
    """The table: every policy's numbers against SFT's, written to results.md / results.json,
    figure1.png, and samples.md (--show)."""
    results, own_rm, answers = {}, [], {}
    for name, path, prefix in policies:
        model, meta = load_policy(path, args.device, ev.sft_ckpt["tokenizer"], args.sft)
        # PPO's args name the RM it optimised; SFT's the RM it was selected by, if --select_by rm
        used = meta.get("args", {})
        same_rm = os.path.realpath(used.get("rm") or "") == os.path.realpath(args.rm or "")
        if args.judge == "rm" and used.get("select_by", "rm") == "rm" and same_rm:
            own_rm.append(name)
        r, *answers[name] = ev.measure(f"{name} ({path})", model, args.seed + 1 + len(results), prefix)
        if val_docs:
            r["corpus_loss"] = corpus_loss(model, val_docs, ev.enc.eot_token, ev.enc, args.device,
                                           model.config.block_size)
        if nlp_items:
            r.update(zero_shot_accuracy(model, nlp_items, ev.enc, args.device))
        r["params"] = model.num_params()
        results[name] = r
    if args.judge == "labelers":  # the top of the scale: the world's own answer to every test prompt
        texts = [" " + rec["spec"]["ideal"] for rec in ev.records]
        answers[IDEAL] = texts, [True] * len(texts)
        results[IDEAL] = labeler_verdicts(ev.records, *answers[IDEAL], ev.sft_texts, ev.sft_ended, ev.rng)
        print(f"{IDEAL}: win rate vs SFT {results[IDEAL]['winrate_heldout']:.3f} ± "
              f"{results[IDEAL]['winrate_heldout_ci']:.3f}", flush=True)

    cols = [("parameters", "params", "{:,}")] + (LABELER_COLUMNS if args.judge == "labelers" else RM_COLUMNS)
    cols += [("KL from SFT (nats)", "kl_from_sft", "{:.2f}")]
    cols += [("held-out corpus loss", "corpus_loss", "{:.4f}")] if val_docs else []
    skills = sorted({it["skill"] for it in nlp_items if "skill" in it}) if nlp_items else []
    cols += [("zero-shot QA acc", "nlp_task_acc", "{:.1%}")] if nlp_items else []
    cols += [(f"zero-shot QA: {skill}", "nlp_task_acc_" + skill, "{:.1%}") for skill in skills]
    cols += [("ends with eot", "ended", "{:.1%}"), ("response tokens", "response_tokens", "{:.1f}")]
    table = markdown_table([((name,), r) for name, r in results.items()], cols)
    if args.judge == "labelers":
        how = "Win rate: the held-out labelers' preference for the policy's response over the SFT model's"
    else:
        how = (f"Win rate: how often the reward model scores the policy's response above the SFT model's (a "
               f"response without <|endoftext|> scores {args.missing_eot_penalty}); RM score: its mean")
        if own_rm:
            how = (f"Caution: {', '.join(own_rm)} trained against this same RM, which overstates their "
                   "gains; prefer an RM trained on a disjoint split. ") + how
    note = (f"judge: {ev.judge}\n\n{len(ev.records)} test prompts ({ev.test_path}), seed {args.seed}, "
            f"temperature {args.temperature}. {how}; ties count half; ± is a 95% confidence interval. SFT's "
            "row compares it with a second, independent SFT sample.")
    if args.judge == "labelers":
        note += (f" '{IDEAL}': the world's own answer to every test prompt, the highest win rate a policy "
                 "can reach. Better / worse than SFT's answer: by the held-out labelers' verdict without "
                 "noise, answer by answer.")
        table += "\n\n" + constraint_table(results)
    write_report(args, "results", table, note, {"judge": ev.judge, "args": vars(args), "results": results})
    if args.show:
        samples = show_samples(ev.records, answers, args.show, args.judge == "labelers")
        print("\n" + samples)
        with open(os.path.join(args.out_dir, "samples.md"), "w") as f:
            f.write(samples)
    key, judged_by = (("winrate_heldout", "held-out labelers") if args.judge == "labelers"
                      else ("winrate_rm", "reward-model judge"))
    plot(results, os.path.join(args.out_dir, "figure1.png"), key, judged_by)
    return results


def over_optimization(args, ev):
    """--curve (Gao et al. 2022): along a PPO run the proxy RM's score keeps rising with √KL; does
    the judge's verdict? Measures --sft (iteration 0) and each RUN_DIR/iter<N>.pt, one seed for
    every checkpoint (common random numbers along the run); writes curve.md, curve.json, curve.png."""
    curves, rms = {}, {}
    for run_dir in args.curve:
        names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
        iters = sorted((int(f[4:-3]), os.path.join(run_dir, f))
                       for f in names if re.fullmatch(r"iter\d+\.pt", f))
        if not iters:
            raise SystemExit(f"error: --curve {run_dir}: no iter<N>.pt checkpoints there (ppo.py writes one "
                             "every --save_interval)")
        # the run's policy with its args; iter<N>.pt: the policy alone
        final = os.path.join(run_dir, "model.pt")
        run_args = load_checkpoint(final, args.device).get("args", {}) if os.path.exists(final) else {}
        if run_args.get("policy") and os.path.realpath(run_args["policy"]) != os.path.realpath(args.sft):
            print(f"note: {run_dir} started from {run_args['policy']}, not --sft {args.sft}: its KL and win "
                  "rates are measured from --sft")
        rm_path = run_args.get("rm") or args.rm or "out/rm/model.pt"
        if rm_path not in rms:
            rms[rm_path] = load_rm(rm_path, args, ev.sft_ckpt, ev.prompts)
        # the score PPO maximised
        proxy = (rms[rm_path], run_args.get("missing_eot_penalty", args.missing_eot_penalty))
        points = []
        for n, path in [(0, args.sft)] + iters:
            if n == 0:
                model = ev.sft
            else:
                model = load_policy(path, args.device, ev.sft_ckpt["tokenizer"], args.sft)[0]
            r = ev.measure(f"{run_dir} iter{n}", model, args.seed + 1, proxy=proxy)[0]
            points.append({"iter": n, "path": path, "sqrt_kl": math.sqrt(max(r["kl_from_sft"], 0.0)), **r})
        curves[run_dir] = {"rm": rm_path, "points": points}
    along = ("winrate_heldout", "better_than_sft", "worse_than_sft", "likert")
    gold = [c for c in LABELER_COLUMNS if c[1] in along] if args.judge == "labelers" else RM_COLUMNS[:1]
    cols = [("√KL", "sqrt_kl", "{:.2f}"), ("KL from SFT (nats)", "kl_from_sft", "{:.2f}"),
            ("proxy: run's RM score", "proxy_rm_score", "{:.3f} ± {:.3f}")]
    cols += gold + [("ends with eot", "ended", "{:.1%}")]
    rows = [((run, str(p["iter"])), p) for run, c in curves.items() for p in c["points"]]
    table = markdown_table(rows, cols, ("run", "iteration"))
    proxies = ", ".join(sorted(set(c["rm"] for c in curves.values())))
    note = (f"judge: {ev.judge}\n\n{len(ev.records)} test prompts ({ev.test_path}), seed {args.seed}, "
            f"temperature {args.temperature}; iteration 0 is --sft {args.sft}, the rest each run's "
            f"iter<N>.pt. Proxy: mean score of the run's own RM ({proxies}) on the same responses, a "
            "response without <|endoftext|> scoring the run's penalty; win rate vs an SFT sample, ties count "
            "half; ± is a 95% confidence interval.")
    write_report(args, "curve", table, note, {"judge": ev.judge, "args": vars(args), "curves": curves})
    judged_by = "held-out labelers" if args.judge == "labelers" else "reward-model judge"
    plot_curve(curves, os.path.join(args.out_dir, "curve.png"), gold[0][1], judged_by)
    return curves


def show_samples(records, answers, n, judged):
    """Markdown: n test prompts, the first of each task kind in file order, with every policy's
    answer (its first sample, the one the table judged) and, in the default world, the labelers'
    verdict on it."""
    from data import labelers as L
    chosen, kinds = [], set()
    for i, rec in enumerate(records):
        kind = rec.get("category", i)
        if kind not in kinds and len(chosen) < n:
            chosen.append(i)
            kinds.add(kind)
    out = []
    for i in chosen:
        rec = records[i]
        out.append(f"### {rec.get('id', i)} ({rec.get('category', 'prompt')})\n\n" +
                   "".join(f"> {line}\n" for line in rec["prompt"].split("\n")) + "\n")
        verdict = " follows | broken constraints | hallucinates | 1–7 |"
        out.append("| policy | answer |" + (verdict if judged else "") + "\n")
        out.append("|---|---|" + ("---|---|---|---|" if judged else "") + "\n")
        for name, (texts, ended) in answers.items():
            answer = json.dumps(texts[i], ensure_ascii=False)[1:-1].replace("|", "\\|")
            answer += "" if ended[i] else " (cut off)"
            row = f"| {name} | {answer} |"
            if judged:
                j = L.judge(rec["spec"], texts[i], ended=ended[i])
                row += (f" {'yes' if j['follows'] else 'no'} | {', '.join(j['violations']) or '-'} |"
                        f" {'yes' if j['hallucinates'] else 'no'} | {j['quality']} |")
            out.append(row + "\n")
        out.append("\n")
    return "".join(out)


def chat(args, policies):
    """--prompt / --chat: every policy's answer to each instruction, with the reward model's score
    of it (the score PPO maximised: a response that never ends gets --missing_eot_penalty)."""
    device = args.device
    sft_ckpt = load_checkpoint(args.sft, device)
    tokenizer = sft_ckpt["tokenizer"]
    enc = get_tokenizer(tokenizer)
    eot = enc.eot_token
    models = []
    for name, path, prefix in [] if args.response else policies:  # answers given: no policy samples
        model = load_policy(path, device, tokenizer, args.sft)[0]
        models.append((name, model, enc.encode_ordinary(prefix)))
    rm_path = args.rm or ("out/rm/model.pt" if os.path.exists("out/rm/model.pt") else None)
    rm = load_rm(rm_path, args, sft_ckpt, [[]]) if rm_path else None  # each prompt's fit is checked below
    if rm is None:
        print("note: no reward model at out/rm/model.pt (python reward.py): answers without scores")
    if args.template is None:
        from data.world import TEMPLATE
        args.template = TEMPLATE
    template = args.template.replace("\\n", "\n")
    tail = template.split("{}")[-1].strip()  # "Response:": a prompt that has it is wrapped already

    def answer(instruction):
        wrap = template and not (tail and tail in instruction)
        prompt = template.format(instruction) if wrap else instruction
        ids = enc.encode_ordinary(prompt)
        print(f"\n{prompt}\n")
        if args.response:
            from data.world import prompt_specs
            spec = prompt_specs(args.seed).get(prompt)
            if spec is None:
                print(f"note: not a prompt of world {args.seed} (--seed): the RM's scores alone")
            return {"prompt": prompt, "answers": [judge_given(spec, ids, text) for text in args.response]}
        answers = {}
        for name, model, prefix in models:
            if len(prefix) + len(ids) + args.max_new_tokens > model.config.block_size:
                print(f"{name}: the prompt and {args.max_new_tokens} tokens overflow its context\n")
                continue
            generator = torch.Generator(device).manual_seed(args.seed)  # one seed for every policy
            response = sample_responses(model, [prefix + ids], args.max_new_tokens, eot,
                                        args.temperature, generator=generator)[0]
            (text,), (ended,) = decode_responses(enc, [response])
            text = text.strip()
            score = None
            if rm is not None and len(ids) + len(response) <= rm.config.block_size:
                penalty = args.missing_eot_penalty
                score = rm_scores(rm, [ids], [response], [ended], penalty, device)[0]
            answers[name] = {"text": text, "ended": ended, "score": score}
            head = name + ("" if ended else " | cut off")
            if score is not None:
                head += f" | RM score {score:.2f}" if ended else f": penalty score {score:.2f}"
            print(head + "\n" + "".join(f"  {line}\n" for line in (text or "(empty)").split("\n")))
        return {"prompt": prompt, "answers": answers}

    def judge_given(spec, ids, text):
        text = text if text.startswith((" ", "\n")) else " " + text
        score = rm_scores(rm, [ids], [enc.encode_ordinary(text) + [eot]], [True], None, device)[0] if rm else None
        verdict = None
        if spec:
            from data import labelers as L
            j = L.judge(spec, text)
            verdict = {"utility": L.mean_utility(j),
                       **{k: j[k] for k in ("done", "violations", "hallucinates", "quality")}}
        line = f"  {text!r}" + (f" | RM score {score:.2f}" if score is not None else "")
        if verdict:
            line += (f" | labelers' utility {verdict['utility']:.2f} | done {verdict['done']:.2f} | broken: "
                     f"{', '.join(verdict['violations']) or '-'} | hallucinates: "
                     f"{'yes' if verdict['hallucinates'] else 'no'} | 1-7: {verdict['quality']}")
        print(line)
        return {"text": text, "score": score, "verdict": verdict}

    if args.prompt:
        return [answer(p) for p in args.prompt]
    print("type an instruction; an empty line or Ctrl-D ends")
    said = []
    while True:
        try:
            line = input("> ").strip().replace("\\n", "\n")  # "\n" typed: a newline
        except EOFError:
            break
        if not line:
            break
        said.append(answer(line))
    return said


# --curves: (panel, keys of log.jsonl drawn in it); ppo.py logs per "iter", sft.py and reward.py
# per "step", which tells a run's kind
PPO_PANELS = [("RM score", ["score"]), ("KL from SFT (nats)", ["kl"]),
              ("reward (score - β·KL)", ["reward"]), ("response length (tokens)", ["length"]),
              ("entropy (nats/token)", ["entropy"]), ("clip fraction", ["clipfrac"]),
              ("value loss", ["vf_loss"]), ("explained variance", ["explained_var"]),
              ("ptx loss", ["ptx_loss"])]
STEP_PANELS = [("loss", ["loss", "val_loss", "heldout_loss"]),
               ("accuracy", ["acc", "val_acc", "heldout_acc"])]
LINE_NAMES = {"loss": "train", "val_loss": "validation", "heldout_loss": "held-out labelers",
              "acc": "train", "val_acc": "validation", "heldout_acc": "held-out labelers"}


def read_curves(run_dir):
    """(x key, {log key: [(x, value)]}) of a run directory's log.jsonl."""
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"error: --curves {run_dir}: no log.jsonl (sft.py, reward.py, ppo.py "
                         "write one)")
    rows = [json.loads(line) for line in open(path) if line.strip()]
    x = "iter" if any("iter" in r for r in rows) else "step"
    series = {}
    for r in rows:
        for k, v in r.items():
            if k != x and isinstance(v, (int, float)):
                series.setdefault(k, []).append((r[x], v))
    return x, series


def draw_curves(run_dirs, out_dir, rows=6):
    """--curves: the training curves of each run into out_dir/curves.png, PPO runs sharing panels;
    without matplotlib a text table of each run, `rows` rows along it. Returns each read_curves."""
    runs = {run: read_curves(run) for run in run_dirs}
    panels = []  # (title, x label, [(run, key, line label)])
    for title, keys in PPO_PANELS:
        lines = [(run, k, run) for run, (x, series) in runs.items() if x == "iter"
                 for k in keys if k in series]
        panels += [(title, "iteration", lines)] if lines else []
    for run, (x, series) in runs.items():
        for title, keys in STEP_PANELS if x == "step" else []:
            lines = [(run, k, LINE_NAMES[k]) for k in keys if k in series]
            panels += [(f"{run}: {title}", "step", lines)] if lines else []
    plt = pyplot("no curves.png; the curves in text")
    if plt is None:
        for run, (x, series) in runs.items():
            keys = [k for _, ks in (PPO_PANELS if x == "iter" else STEP_PANELS) for k in ks]
            print(curves_table(run, x, series, [k for k in keys if k in series], rows))
        return runs
    cols = min(len(panels), 4)
    n_rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.6 * cols, 2.8 * n_rows), squeeze=False)
    for ax, (title, xlabel, lines) in zip(axes.flat, panels):
        for run, k, label in lines:
            xs, ys = zip(*runs[run][1][k])
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, ms=3, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if len(lines) > 1 or xlabel == "iteration":  # a PPO panel names its run even when alone
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "curves.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
    return runs


def curves_table(run, x, series, keys, rows):
    """A run's curves as text: `rows` x values along the run, each key's latest value then."""
    xs = sorted({at for k in keys for at, _ in series[k]})
    picked = xs if len(xs) <= rows else sorted({xs[round(i * (len(xs) - 1) / (rows - 1))]
                                                for i in range(rows)})
    widths = [max(10, len(k) + 2) for k in keys]
    lines = [f"{run}/log.jsonl, {len(xs)} logged {x}s",
             f"{x:>6}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))]
    for at in picked:
        cells = []
        for k, w in zip(keys, widths):  # the latest so far: validation is logged less often
            seen = [v for px, v in series[k] if px <= at]
            cells.append(f"{seen[-1]:>{w}.3g}" if seen else f"{'-':>{w}}")
        lines.append(f"{at:>6}" + "".join(cells))
    return "\n".join(lines) + "\n"


def plot(results, path, key="winrate_heldout", judge="held-out labelers"):
    """Figure 1: win rate against SFT (results[...][key], judged by `judge`) vs model size, one
    line per method (one point per size)."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    methods = {}
    for name, r in results.items():
        if name == IDEAL:
            ax.axhline(r[key], color="gray", ls="--", lw=1, label=IDEAL)
            continue
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


def plot_curve(curves, path, key="winrate_heldout", judge="held-out labelers"):
    """Gao et al. (2022)'s over-optimization figure: the proxy RM's score (left) and the judge's
    win rate against SFT (right) vs √(KL from SFT), one line per run, one point per checkpoint."""
    plt = pyplot()
    if plt is None:
        return
    fig, (proxy, gold) = plt.subplots(1, 2, figsize=(9, 4))
    for run, c in curves.items():
        xs = [p["sqrt_kl"] for p in c["points"]]
        for ax, k in ((proxy, "proxy_rm_score"), (gold, key)):
            ys, es = [p[k] for p in c["points"]], [p[k + "_ci"] for p in c["points"]]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=run)
    gold.axhline(0.5, color="gray", lw=0.5)
    for ax, label in ((proxy, "proxy: mean score of the run's own RM"), (gold,
                                                                         f"win rate against SFT ({judge})")):
        ax.set_xlabel("√(KL from SFT), √nats")
        ax.set_ylabel(label)
    proxy.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def pyplot(instead="no figure"):
    """matplotlib.pyplot drawing to files, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed (pip install -r requirements-dev.txt): {instead}")
        return None
    return plt


if __name__ == "__main__":
    main()
