"""
Step 2 of InstructGPT (paper §3.5, "Reward modeling"): the SFT model with its unembedding removed
and a scalar head, trained on labelers' rankings of K completions per prompt with the K-wise loss
of equation (1), then shifted so the labelers' demonstrations score 0 on average.

    python reward.py                        # the default world: out/sft/model.pt -> out/rm/model.pt
    python reward.py --flat_pairs --out_dir out/rm-flat    # the ablation: C(K,2) pairs as examples
    python reward.py --train my_rankings.jsonl --val my_val.jsonl --demos my_demos.jsonl
    torchrun --standalone --nproc_per_node=8 reward.py ...

Choices, and why:
- Three epochs by default. The paper trained one ("more overfits") on 33k prompts with a 6B model;
  on the default world's eight draws of rankings (data/collect.py --draws) three epochs order more
  of the training labelers' validation comparisons (RESULTS.md, "Four draws, three epochs" and
  "Eight draws, fresh rollouts").
  --flat_pairs is the ablation the paper warns against: every ranking split into its C(K,2) pairs,
  shuffled as separate examples.
- --init_rm continues a reward model for a later round (paper §3.1: steps 2 and 3 iterated) on
  new and old rankings, instead of starting from --sft; the shift is set anew at the end.
- The shift lives in the scalar head's bias, so every user of the RM reads the normalised score.
- --val_heldout: the same validation prompts ranked by held-out labelers (paper: 72.4% accuracy
  on training labelers vs 69.6% on held-out ones).
"""
import argparse
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from common import (HelpFormatter, add_compute_args, check_finite, compute_cleanup, cosine_lr, epoch_batch,
                    micro_batches, optimizer_step, print0, read_jsonl, restore_scaler,
                    rewards_at_last_token, rng_state, run_log, set_rng_state, stage_init,
                    wrap_for_training)
from model import (get_tokenizer, left_pad, load_checkpoint, model_from_checkpoint, save_checkpoint,
                   scalar_head_model)


# -----------------------------------------------------------------------------
# The maths: pure functions, tested against hand-computed values in tests/test_reward.py

def ranking_loss(rewards, k):
    """Equation (1): loss(θ) = −1/C(K,2) · Σ_{(y_w, y_l)} log σ(r_θ(x, y_w) − r_θ(x, y_l)).
    rewards (B, Kmax): r_θ(x, y_i) with each row's completions ranked best first, padded past its
    k (B,) completions. All C(K,2) comparisons of a prompt form ONE batch element; the batch loss
    is the mean over prompts. Returns (loss, pairwise accuracy as (correct pairs, pairs) per prompt)."""
    i = torch.arange(rewards.size(1), device=rewards.device)
    # (B, Kmax, Kmax): winner i ranked above loser j, both real
    pairs = (i[:, None] < i[None, :]) & (i[None, None, :] < k[:, None, None])
    diff = rewards[:, :, None] - rewards[:, None, :]  # r(x, y_w) − r(x, y_l)
    nll = torch.where(pairs, F.softplus(-diff), 0.0)  # −log σ(d) = softplus(−d); padding never enters
    n_pairs = pairs.sum((1, 2))  # C(K,2) of each prompt
    per_prompt = nll.sum((1, 2)) / n_pairs  # 1/C(K,2) Σ over the prompt's pairs
    correct = ((diff > 0) & pairs).sum((1, 2))
    return per_prompt.mean(), (correct, n_pairs)


def accuracy_interval(correct, pairs, correct_sq, correct_pairs, pairs_sq, n):
    """Pairwise accuracy Σc/Σp over n prompts and its 95% half-width, from the sums of each prompt's
    correct pairs c, pairs p and their products. A prompt's C(K,2) comparisons share its prompt and
    K completions, so the prompt is the independent draw: the ratio estimator's standard error,
    sqrt(n/(n−1) · Σ(c − acc·p)²) / Σp."""
    acc = correct / pairs
    residual = correct_sq - 2 * acc * correct_pairs + acc ** 2 * pairs_sq  # Σ(c − acc·p)²
    return acc, 1.96 * math.sqrt(n / max(n - 1, 1) * max(residual, 0.0)) / pairs


def normalizing_shift(demo_rewards):
    """The RM loss is invariant to a constant shift: choose it so the demonstrations score 0 on
    average."""
    return -demo_rewards.mean()


# -----------------------------------------------------------------------------
# Data, and the forward pass over rankings

def load_rankings(path, enc, block_size, flat_pairs=False):
    """Rankings as token lists: [(prompt+completion+eot for each completion, best first)], the
    rankings dropped as too long, and each kept ranking's 'category' (the task type, when the file
    has one; None otherwise)."""
    rankings, too_long, categories = [], [], []
    for r in read_jsonl(path, ["prompt"]):
        where = r["_where"]
        if "completions" in r:
            completions = r["completions"]
        elif "chosen" in r and "rejected" in r:
            completions = [r["chosen"], r["rejected"]]
        else:
            raise SystemExit(f"error: {where}: needs 'completions' (a list, best first) or 'chosen' and "
                             "'rejected'")
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise SystemExit(f"error: {where}: 'completions' must be a list of strings")
        if len(completions) < 2:
            raise SystemExit(f"error: {where}: a ranking needs K >= 2 completions, got {len(completions)}")
        if any(not c.strip() for c in completions):
            empty = [not c.strip() for c in completions].index(True) + 1
            raise SystemExit(f"error: {where}: completion {empty} is empty")
        if len(set(completions)) < len(completions):
            raise SystemExit(f"error: {where}: duplicate completions: a ranking of identical texts says "
                             "nothing")
        prompt = enc.encode_ordinary(r["prompt"])
        seqs = [prompt + enc.encode_ordinary(c) + [enc.eot_token] for c in completions]
        if max(map(len, seqs)) > block_size:
            too_long.append(where)
            continue
        if flat_pairs:  # the ablation: every comparison its own example
            rankings += [[seqs[a], seqs[b]] for a in range(len(seqs)) for b in range(a + 1, len(seqs))]
        else:
            rankings.append(seqs)
        categories += [r.get("category")] * (len(rankings) - len(categories))
    return rankings, too_long, categories


def pack_ranking(seqs):
    """A ranking's K sequences as one row: the tokens they all begin with (the prompt, at least)
    once, then each completion's own. Returns (tokens, segments: 0 on the shared prefix, i on
    completion i's tokens, the index of each completion's last token)."""
    shared = 0
    while shared < min(map(len, seqs)) - 1 and len({s[shared] for s in seqs}) == 1:
        shared += 1  # the last token stays each sequence's own: its reward is read there
    tokens, segments, ends = seqs[0][:shared], [0] * shared, []
    for i, s in enumerate(seqs, 1):
        tokens += s[shared:]
        segments += [i] * (len(s) - shared)
        ends.append(len(tokens) - 1)
    return tokens, segments, ends


def forward_rankings(model, batch, device, rows=8):
    """One forward pass per prompt, not per completion: each ranking packed as one row
    (pack_ranking), the prompt computed once and seen by each of the K completions, each reward
    read at its completion's last token, as (B, Kmax) with k (B,). The prompt is most of a
    ranking's tokens (75% in the default world's, encoded K times apart), so this is ~3x less work.
    Rows go through in groups of similar length, each padded to its own longest: groups of 8 rows
    take 27% less time than one of 16, whose longest is twice its mean."""
    packed = [pack_ranking(r) for r in batch]
    lengths = torch.tensor([len(tokens) for tokens, _, _ in packed])
    k = torch.tensor([len(r) for r in batch], device=device)
    kmax = int(k.max())
    order = lengths.argsort(stable=True)
    parts = []
    for group in order.split(rows):
        T = int(lengths[group].max())
        tokens = torch.zeros(len(group), T, dtype=torch.long)
        segments = torch.full((len(group), T), -1, dtype=torch.long)
        ends = torch.zeros(len(group), kmax, dtype=torch.long)
        for i, j in enumerate(group.tolist()):
            row, row_segments, row_ends = packed[j]
            tokens[i, :len(row)], segments[i, :len(row)] = torch.tensor(row), torch.tensor(row_segments)
            ends[i, :len(row_ends)] = torch.tensor(row_ends)
        values = model(tokens.to(device), segments=segments.to(device))  # (n, T)
        parts.append(values.gather(1, ends.to(device)).float())
    rewards = torch.cat(parts)[order.argsort().to(device)]  # back to the batch's order
    real = torch.arange(kmax, device=device)[None] < k[:, None]
    return torch.where(real, rewards, 0.0), k


# -----------------------------------------------------------------------------
# Config

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
# data
parser.add_argument("--world", default="data/world", help="folder of the generated default world")
parser.add_argument("--train", default=None,
                    help="rankings JSONL {prompt, completions: [best, ..., worst]} or {prompt, chosen, "
                    "rejected} [default: <world>/rm_train.jsonl]")
parser.add_argument("--val", default=None,
                    help="validation rankings, training labelers [default: <world>/rm_val.jsonl]")
parser.add_argument("--val_heldout", default=None, help="the same prompts ranked by held-out labelers "
                    "('': none) [default: <world>/rm_val_heldout.jsonl]")
parser.add_argument("--demos", default=None, help="demonstrations JSONL {prompt, response}, scored 0 on "
                    "average after the shift [default: <world>/sft_train.jsonl]")
parser.add_argument("--flat_pairs", action="store_true",
                    help="ablation: the C(K,2) pairs as separate examples")
# model
parser.add_argument("--sft", default="out/sft/model.pt", help="the SFT checkpoint the RM starts from")
parser.add_argument("--init_rm", default=None, help="a reward model to continue instead (a later round)")
parser.add_argument("--dropout", type=float, default=0.0, help="dropout while training the RM")
# optimisation
parser.add_argument("--epochs", type=int, default=3, help="passes over the training rankings")
parser.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: epochs decide)")
parser.add_argument("--batch_size", type=int, default=16, help="rankings per optimizer step, all processes")
parser.add_argument("--micro_batch_size", type=int, default=16, help="rankings per forward pass")
parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (cosine decay to 10%%)")
parser.add_argument("--warmup_steps", type=int, default=10, help="linear warm-up steps")
parser.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay on matrices")
parser.add_argument("--grad_clip", type=float, default=1.0, help="max gradient norm (0: off)")
parser.add_argument("--seed", type=int, default=1337, help="seed of the data order")
# evaluation and output
parser.add_argument("--eval_interval", type=int, default=250, help="validation every N steps and at the end")
parser.add_argument("--log_interval", type=int, default=10, help="a progress line every N steps")
parser.add_argument("--out_dir", default="out/rm", help="writes last.pt, model.pt, log.jsonl")
parser.add_argument("--resume", action="store_true", help="continue exactly from out_dir/last.pt")
add_compute_args(parser)


# -----------------------------------------------------------------------------
# The run

def load_model(args, device):
    """The SFT model with a scalar head (or the reward model of --init_rm, or our own last.pt to
    resume). Returns (model, tokenizer, last.pt or None)."""
    if args.resume:
        last = load_checkpoint(os.path.join(args.out_dir, "last.pt"), device)
        return model_from_checkpoint(last, device, args.dropout), last["tokenizer"], last
    if args.init_rm:
        init = load_checkpoint(args.init_rm)
        if init["model_config"].get("head") != "scalar":
            raise SystemExit(f"error: {args.init_rm} is a language model checkpoint; --init_rm continues "
                             "a reward model (python reward.py)")
        return model_from_checkpoint(init, device, args.dropout), init["tokenizer"], None
    sft = load_checkpoint(args.sft)
    if sft["model_config"].get("head") != "lm":
        raise SystemExit(f"error: {args.sft} is already a reward/value model; the RM starts from an SFT "
                         "(language model) checkpoint")
    return scalar_head_model(model_from_checkpoint(sft, device, args.dropout)), sft["tokenizer"], None


@torch.no_grad()
def evaluate(model, rankings, micro, device, ctx):
    """Validation loss (mean over prompts), pairwise accuracy and its 95% half-width, over all
    processes."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model.eval()
    totals = torch.zeros(7, device=device)  # loss sum, prompts, accuracy_interval's sums
    for i in range(rank * micro, len(rankings), micro * world_size):
        batch = rankings[i:i + micro]
        with ctx:
            rewards, k = forward_rankings(model, batch, device)
        loss, (c, p) = ranking_loss(rewards, k)
        c, p = c.float(), p.float()
        totals += torch.stack([loss * len(batch), torch.tensor(len(batch), device=device).float(), c.sum(),
                               p.sum(), (c * c).sum(), (c * p).sum(), (p * p).sum()])
    if dist.is_initialized():
        dist.all_reduce(totals)
    model.train()
    loss, n, *sums = totals.tolist()
    return (loss / n, *accuracy_interval(*sums, n))


@torch.no_grad()
def scores(model, seqs, device, ctx):
    """r_θ of each whole sequence (prompt + completion + eot) at its last token."""
    out = []
    for i in range(0, len(seqs), 64):
        with ctx:
            out.append(rewards_at_last_token(model, *left_pad(seqs[i:i + 64], 0, device)))
    return torch.cat(out)


def accuracy_by_category(model, val, val_categories, heldout, heldout_categories, micro, device, ctx):
    """Where the RM is right and where it guesses: validation accuracy per task type (the world's
    prompts carry theirs)."""
    by_category = {}
    for c in sorted(set(val_categories) - {None}):
        mine = [r for r, rc in zip(val, val_categories) if rc == c]
        row = {"rankings": val_categories.count(c), "val_acc": evaluate(model, mine, micro, device, ctx)[1]}
        if heldout:
            mine = [r for r, rc in zip(heldout, heldout_categories) if rc == c]
            row["heldout_acc"] = evaluate(model, mine, micro, device, ctx)[1]
        by_category[c] = row
    print0("RM accuracy by category (training / held-out labelers' validation rankings): " + ", ".join(
        f"{c} {r['val_acc']:.1%}" + (f" / {r['heldout_acc']:.1%}" if heldout else "")
        for c, r in by_category.items()))
    return by_category


def main(argv=None):
    args = parser.parse_args(argv)
    w = lambda name: os.path.join(args.world, name)
    args.train = args.train or w("rm_train.jsonl")
    args.val = args.val or w("rm_val.jsonl")
    args.val_heldout = w("rm_val_heldout.jsonl") if args.val_heldout is None else args.val_heldout
    args.demos = args.demos or w("sft_train.jsonl")
    ddp, rank, world_size, device, ctx, scaler = stage_init(args)
    master, device_type = rank == 0, torch.device(device).type
    _, micro, grad_accum = micro_batches(args.batch_size, args.micro_batch_size, world_size)

    # model
    model, tokenizer, last = load_model(args, device)
    enc = get_tokenizer(tokenizer)
    block_size = model.config.block_size
    print0(f"reward model: {model.num_params() / 1e6:.2f}M parameters from {args.init_rm or args.sft}, "
           f"tokenizer {tokenizer}")

    # data
    train, dropped, _ = load_rankings(args.train, enc, block_size, args.flat_pairs)
    val, _, val_categories = load_rankings(args.val, enc, block_size)
    heldout, _, heldout_categories = (load_rankings(args.val_heldout, enc, block_size) if args.val_heldout
                                      else ([], [], []))
    if dropped:
        print0(f"warning: dropped {len(dropped)} rankings with a completion longer than the "
               f"{block_size}-token context (first: {dropped[0]})")
    if len(train) < args.batch_size:
        raise SystemExit(f"error: {len(train)} training rankings is fewer than --batch_size {args.batch_size}")
    steps_per_epoch = len(train) // args.batch_size
    max_steps = args.max_steps or args.epochs * steps_per_epoch
    n_pairs = sum(len(r) * (len(r) - 1) // 2 for r in train)
    kind = "pairs (flat)" if args.flat_pairs else "rankings"
    print0(f"data: {len(train)} {kind} with {n_pairs} comparisons, {len(val)} validation rankings, "
           f"{len(heldout)} by held-out labelers; {max_steps} steps")

    # optimizer, resume
    optimizer = model.configure_optimizer(args.weight_decay, args.lr, device_type=device_type)
    step = 0
    if last:
        optimizer.load_state_dict(last["optimizer"])
        restore_scaler(scaler, last)
        step = last["step"]
        set_rng_state(last["rng"])
        print0(f"resumed from {args.out_dir}/last.pt at step {step}")
        del last
    raw_model = model
    model = wrap_for_training(model, device, args.compile, ddp)
    log = run_log(args.out_dir, master, step if args.resume else None, total=max_steps)
    saved = step if args.resume else None  # this run's last.pt, named if the loss turns NaN
    lr_at = lambda step: cosine_lr(step, args.lr, args.warmup_steps, max_steps, 0.1)

    def validate(logged=True):
        record = {"step": step}
        record["val_loss"], record["val_acc"], record["val_acc_ci"] = evaluate(model, val, micro, device, ctx)
        if heldout:
            record["heldout_loss"], record["heldout_acc"], record["heldout_acc_ci"] = evaluate(
                model, heldout, micro, device, ctx)
        if logged:
            log(record)
        return record

    # the loop
    final = validate() if step == 0 else None
    model.train()
    t0, seen = time.time(), 0
    while step < max_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        mine = epoch_batch(train, step, args.batch_size, args.seed)[rank::world_size]
        loss_sum, acc = 0.0, torch.zeros(2)
        for a in range(grad_accum):
            batch = mine[a * micro:(a + 1) * micro]
            if ddp:
                model.require_backward_grad_sync = a == grad_accum - 1
            with ctx:
                rewards, k = forward_rankings(model, batch, device)
                loss, (correct, pairs) = ranking_loss(rewards, k)
                loss = loss / grad_accum  # equal micro-batches: the mean of means is the mean over prompts
            (scaler.scale(loss) if scaler else loss).backward()
            loss_sum += loss.item()
            acc += torch.stack([correct.sum(), pairs.sum()]).float().cpu()
            seen += sum(len(r) for r in batch)
        check_finite(loss_sum, step + 1, args.out_dir, saved)  # the step that failed, from 1
        optimizer_step(model, optimizer, scaler, args.grad_clip)
        step += 1
        if step % args.log_interval == 0 or step == max_steps:
            dt = time.time() - t0
            log({"step": step, "loss": loss_sum, "acc": (acc[0] / acc[1]).item(), "lr": lr_at(step - 1),
                 "completions/s": round(seen * world_size / dt, 1)})
            t0, seen = time.time(), 0
        if step % args.eval_interval == 0 or step == max_steps:
            final = validate()
            rng = rng_state()  # every rank's
            if master:
                save_checkpoint(os.path.join(args.out_dir, "last.pt"), raw_model, optimizer, scaler,
                                tokenizer=tokenizer, step=step, args=vars(args), rng=rng)
            saved = step

    # normalisation (paper: "so that the labeler demonstrations achieve a mean score of 0 before
    # doing RL"); the rankings' completions are samples of the SFT policy
    model.eval()
    demos = read_jsonl(args.demos, ["prompt", "response"])
    demo_seqs = [enc.encode_ordinary(d["prompt"]) + enc.encode_ordinary(d["response"]) + [enc.eot_token]
                 for d in demos]
    demo_seqs = [s for s in demo_seqs if len(s) <= block_size]
    sample_seqs = [s for r in val for s in r]
    shift = normalizing_shift(scores(raw_model, demo_seqs, device, ctx))
    with torch.no_grad():
        raw_model.score.bias += shift  # r ← r + shift: stored in the head, every user of the RM sees it
    demo_r, sample_r = scores(raw_model, demo_seqs, device, ctx), scores(raw_model, sample_seqs, device, ctx)

    # the report, and the normalised RM
    if final is None or final["step"] != step:  # a resumed run that had already finished: its log
        final = validate(logged=False)  # has this row; the metrics are shift-invariant
    if any(val_categories):
        final["by_category"] = accuracy_by_category(model, val, val_categories, heldout, heldout_categories,
                                                    micro, device, ctx)
    if master:
        save_checkpoint(os.path.join(args.out_dir, "model.pt"), raw_model, tokenizer=tokenizer, step=step,
                        args=vars(args), normalizing_shift=shift.item(), metrics=final)
    print0(f"normalised: shift {shift.item():+.4f} | demonstrations mean {demo_r.mean().item():+.4f} "
           f"std {demo_r.std().item():.4f} | SFT samples mean {sample_r.mean().item():+.4f} "
           f"std {sample_r.std().item():.4f}")
    summary = (f"RM accuracy: training labelers' validation {final['val_acc']:.1%} "
               f"(± {final['val_acc_ci']:.1%})")
    if heldout:
        summary += (f" | held-out labelers {final['heldout_acc']:.1%} (± {final['heldout_acc_ci']:.1%}; "
                    "paper: 72.4% vs 69.6%)")
    print0(summary + f" -> {args.out_dir}/model.pt")
    if ddp:
        del model  # the DDP wrapper holds the process group: free it first, or exit can abort
    compute_cleanup()
    return final


if __name__ == "__main__":
    main()
