"""
Step 1 of InstructGPT (paper §3.5, "Supervised fine-tuning"): fine-tune a pretrained LM on
labeler demonstrations, next-token loss on the response tokens only. With --pretrain the same
loop, unmasked, pretrains the default world's base model on its corpus: one code path, not two.

    python sft.py                                   # SFT of the default base on the default world
    python sft.py --pretrain --out_dir out/base     # pretrain the default world's base model
    python sft.py --init gpt2 --train my_demos.jsonl --val my_val.jsonl --tokenizer gpt2
    torchrun --standalone --nproc_per_node=8 sft.py --init gpt2 ...
    python sft.py --resume                          # continue an interrupted run exactly

Choices, and why:
- Defaults follow the paper's recipe (16 epochs, cosine decay, dropout 0.2) at toy scale: SFT runs
  16 epochs of batch 32 at lr 1e-3, dropout 0.2; --pretrain 4 epochs of batch 4 at lr 2e-3, no
  dropout. --init defaults to out/base/model.pt, and to a random model ('scratch', shaped by
  --n_layer, --n_head, --n_embd, --block_size) with --pretrain.
- --tokenizer (with --init scratch only; otherwise the init's): 'gpt2', 'gpt2-world' (GPT-2's
  tokens of the default world's text) or 'gpt2-V' (GPT-2's first V-1 merges).
- A step's examples are sorted by length before they are cut into micro-batches, so a
  micro-batch pads little; the gradient is the same. Demonstrations longer than the context are
  dropped, not truncated: a cut response would teach the model never to stop.
- The paper picks the SFT checkpoint by the reward model's mean score on validation prompts
  (--select_by rm, scoring as ppo.py and evaluate.py do); by default the lowest validation loss.
- On the default world the run ends with the held-out labelers' report: how often the model
  meets the prompts' explicit constraints, before and after SFT.
"""
import argparse
import math
import os
import time

import torch
import torch.distributed as dist

from common import (HelpFormatter, add_compute_args, check_finite, compute_cleanup, cosine_lr, epoch_batch,
                    load_reward_model, micro_batches, optimizer_step, peak_flops, print0,
                    read_documents, read_jsonl, restore_scaler, rm_scores, rng_state, run_log,
                    set_rng_state, stage_init, wrap_for_training)
from model import (GPT, GPTConfig, from_pretrained, get_tokenizer, load_checkpoint,
                   model_from_checkpoint, sample_responses, sample_texts, save_checkpoint)


# -----------------------------------------------------------------------------
# The maths: pure functions, tested against hand-computed values in tests/test_sft.py

def masked_lm_loss(logits, targets, n_tokens):
    """Next-token cross-entropy summed over target tokens, divided by the tokens of the whole global
    batch, so accumulated micro-batches and DDP ranks add up to the per-token mean:
    L = −(1/N) Σ_t log p(y_t | y_<t, x) over response tokens t."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = targets >= 0
    nll = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (nll * mask).sum() / n_tokens


def collate(batch, eot, device):
    """Right-padded inputs and targets (-1 = no loss): right padding is invisible to causal
    attention."""
    T = max(len(ids) for ids, _ in batch) - 1
    x = torch.full((len(batch), T), eot, dtype=torch.long)
    y = torch.full((len(batch), T), -1, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(batch):
        ids = torch.tensor(ids)
        x[i, :len(ids) - 1] = ids[:-1]
        y[i, :len(ids) - 1] = ids[1:]
        y[i, :max(n_prompt - 1, 0)] = -1  # prompt tokens are context, not targets
    return x.to(device), y.to(device)


# -----------------------------------------------------------------------------
# Config

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
# data
parser.add_argument("--pretrain", action="store_true", help="pretrain on plain text: loss on every token")
parser.add_argument("--train", default=None,
                    help="demonstrations JSONL {prompt, response}; with --pretrain a text file, one document "
                    "a line [default: <world>/sft_train.jsonl; <world>/corpus_train.txt]")
parser.add_argument("--val", default=None, help="validation data, as --train "
                    "[default: <world>/sft_val.jsonl; <world>/corpus_val.txt]")
parser.add_argument("--world", default="data/world", help="folder of the generated default world")
# model
parser.add_argument("--init", default=None, help="a .pt of ours, a GPT-2 name or folder, or 'scratch' "
                    "[default: out/base/model.pt; scratch with --pretrain]")
parser.add_argument("--tokenizer", default="gpt2-world",
                    help="with --init scratch: gpt2, gpt2-world or gpt2-V")
parser.add_argument("--n_layer", type=int, default=4, help="with --init scratch: transformer blocks")
parser.add_argument("--n_head", type=int, default=4, help="with --init scratch: attention heads")
parser.add_argument("--n_embd", type=int, default=128, help="with --init scratch: width")
parser.add_argument("--block_size", type=int, default=256, help="with --init scratch: context length, tokens")
parser.add_argument("--dropout", type=float, default=None, help="dropout while training "
                    "[default: 0.2; 0 with --pretrain]")
# optimisation
parser.add_argument("--epochs", type=int, default=None, help="passes over the training data "
                    "[default: 16; 4 with --pretrain]")
parser.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: epochs decide)")
parser.add_argument("--batch_size", type=int, default=None, help="examples per optimizer step, all processes "
                    "[default: 32; 4 with --pretrain]")
parser.add_argument("--micro_batch_size", type=int, default=None, help="examples per forward pass "
                    "[default: 8 or a divisor of the examples per process; all of them with --pretrain]")
parser.add_argument("--lr", type=float, default=None,
                    help="peak learning rate [default: 1e-3; 2e-3 with --pretrain]")
parser.add_argument("--min_lr_ratio", type=float, default=0.1, help="cosine decay ends at lr * this")
parser.add_argument("--warmup_steps", type=int, default=20, help="linear warm-up steps")
parser.add_argument("--weight_decay", type=float, default=0.1, help="AdamW weight decay on matrices")
parser.add_argument("--grad_clip", type=float, default=1.0, help="max gradient norm (0: off)")
parser.add_argument("--seed", type=int, default=1337, help="seed of the data order and dropout")
# evaluation, selection and output
parser.add_argument("--eval_interval", type=int, default=100,
                    help="validation every N steps and each epoch end")
parser.add_argument("--log_interval", type=int, default=10, help="a progress line every N steps")
parser.add_argument("--select_by", choices=["val_loss", "rm"], default="val_loss",
                    help="which epoch's checkpoint becomes model.pt")
parser.add_argument("--rm", default="out/rm/model.pt", help="with --select_by rm: the reward model")
parser.add_argument("--sample_tokens", type=int, default=48, help="response length of samples, tokens")
parser.add_argument("--missing_eot_penalty", type=float, default=-1.0,
                    help="with --select_by rm: the score of a response without eot")
parser.add_argument("--out_dir", default=None, help="writes last.pt, step<N>.pt, model.pt, log.jsonl "
                    "[default: out/sft; out/base with --pretrain]")
parser.add_argument("--resume", action="store_true", help="continue exactly from out_dir/last.pt")
add_compute_args(parser)


# -----------------------------------------------------------------------------
# The run

def load_model(args, device):
    """The model to train (our last.pt to resume, a checkpoint, GPT-2 weights, or a random one) and
    its tokenizer's name. Returns (model, tokenizer, last.pt or None)."""
    if args.resume:
        last = load_checkpoint(os.path.join(args.out_dir, "last.pt"))
        return model_from_checkpoint(last, device, args.dropout), last["tokenizer"], last
    if args.init == "scratch":
        config = GPTConfig(block_size=args.block_size, vocab_size=get_tokenizer(args.tokenizer).n_vocab,
                           n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
        return GPT(config).to(device), args.tokenizer, None
    if args.init.endswith(".pt"):
        init = load_checkpoint(args.init)  # a missing file stops here, naming it
        if init["model_config"].get("head") != "lm":
            raise SystemExit(f"error: {args.init} is a reward/value checkpoint; SFT starts from a language "
                             "model")
        return model_from_checkpoint(init, device, args.dropout), init["tokenizer"], None
    # a GPT-2 name or a Hugging Face folder
    return from_pretrained(args.init, dropout=args.dropout).to(device), "gpt2", None


def load_examples(path, enc, block_size, pretrain):
    """Examples (token ids, n_prompt), the loss covering predictions of ids[n_prompt:], and the
    demonstrations dropped as longer than the context. --pretrain: documents joined by
    <|endoftext|> and cut into context-sized chunks, loss on every token."""
    eot = enc.eot_token
    if pretrain:
        stream = []
        for doc in read_documents(path):
            stream += enc.encode_ordinary(doc) + [eot]
        return [(stream[i:i + block_size + 1], 0) for i in range(0, len(stream) - block_size, block_size)], []
    examples, too_long = [], []
    for r in read_jsonl(path, ["prompt", "response"]):
        if not r["response"].strip():
            raise SystemExit(f"error: {r['_where']}: empty response (a demonstration must say something)")
        prompt = enc.encode_ordinary(r["prompt"])
        ids = prompt + enc.encode_ordinary(r["response"]) + [eot]  # eot closes every response and is trained
        if len(ids) > block_size + 1:
            too_long.append(r["_where"])
        else:
            examples.append((ids, len(prompt)))
    return examples, too_long


@torch.no_grad()
def evaluate_loss(model, examples, micro, eot, device, ctx):
    """The mean loss per target token over examples, over all processes."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model.eval()
    totals = torch.zeros(2, device=device)  # summed loss, tokens
    for i in range(rank * micro, len(examples), micro * world_size):
        x, y = collate(examples[i:i + micro], eot, device)
        with ctx:
            logits = model(x, keep=y >= 0)
        totals += torch.stack([masked_lm_loss(logits, y[y >= 0], 1.0), (y >= 0).sum().float()])
    if dist.is_initialized():
        dist.all_reduce(totals)
    model.train()
    return (totals[0] / totals[1]).item()


def rm_selection(args, history, rm_ckpt, val_path, enc, device, ctx):
    """The paper's choice: the epoch checkpoint whose samples on (up to 256) validation prompts the
    reward model scores highest on average, scored as by ppo.py and evaluate.py's RM judge (a
    response that never ends gets the penalty). Returns the index into history."""
    eot = enc.eot_token
    rm = model_from_checkpoint(rm_ckpt, device).eval()
    prompts = [r["prompt"] for r in read_jsonl(val_path, ["prompt"])][:256]
    contexts = [enc.encode_ordinary(p) for p in prompts]
    scores = []
    for s, _ in history:
        ckpt = load_checkpoint(os.path.join(args.out_dir, f"step{s}.pt"))
        policy = model_from_checkpoint(ckpt, device).eval()
        generator = torch.Generator(device).manual_seed(0)
        responses = sample_responses(policy, contexts, args.sample_tokens, eot, generator=generator, ctx=ctx)
        ended = [bool(r) and r[-1] == eot for r in responses]
        with ctx:
            rewards = rm_scores(rm, contexts, responses, ended, args.missing_eot_penalty, device)
        scores.append(sum(rewards) / len(rewards))
        print0(f"checkpoint step{s}.pt: mean RM score {scores[-1]:.3f} on {len(contexts)} validation prompts")
    return max(range(len(history)), key=lambda i: scores[i])


def labeler_report(args, records, selected, enc, device, ctx):
    """The default world's labelers on the validation prompts, before and after SFT: the share that
    meets every explicit constraint, and that follows the instruction and every constraint."""
    from data.labelers import has_constraint, judge
    init = load_checkpoint(args.init) if args.init.endswith(".pt") else None
    before = model_from_checkpoint(init, device).eval() if init else None
    after = model_from_checkpoint(selected, device).eval()
    for name, policy in (("before SFT", before), ("after SFT", after)):
        if policy is None:
            continue
        responses = sample_texts(policy, enc, [r["prompt"] for r in records], args.sample_tokens,
                                 generator=torch.Generator(device).manual_seed(0), ctx=ctx)
        verdicts = [judge(r["spec"], text, ended) for r, (text, ended) in zip(records, responses)]
        constrained = [v for r, v in zip(records, verdicts) if has_constraint(r["spec"])]
        meets = sum(not v["violates_constraint"] for v in constrained) / len(constrained)
        ok = sum(v["follows"] and not v["violates_constraint"] for v in verdicts) / len(verdicts)
        print0(f"{name}: meets every explicit constraint on {meets:.1%} of the {len(constrained)} validation "
               f"prompts that have one; follows the instruction and every constraint on {ok:.1%} of all "
               f"{len(records)}")


def main(argv=None):
    args = parser.parse_args(argv)
    args.init = args.init or ("scratch" if args.pretrain else "out/base/model.pt")
    args.out_dir = args.out_dir or ("out/base" if args.pretrain else "out/sft")
    defaults = (("dropout", 0.2, 0.0), ("epochs", 16, 4), ("batch_size", 32, 4), ("lr", 1e-3, 2e-3))
    for name, sft_default, pretrain_default in defaults:
        if getattr(args, name) is None:
            setattr(args, name, pretrain_default if args.pretrain else sft_default)
    if args.pretrain and args.select_by == "rm":
        parser.error("--select_by rm is for SFT; pretraining selects by validation loss")
    ddp, rank, world_size, device, ctx, scaler = stage_init(args)
    master, device_type = rank == 0, torch.device(device).type
    per_rank = args.batch_size // world_size
    micro = args.micro_batch_size or (per_rank if args.pretrain else math.gcd(8, per_rank))
    _, micro, grad_accum = micro_batches(args.batch_size, micro, world_size)

    # model (and the reward model that will select it, checked before training, not after it)
    model, tokenizer, last = load_model(args, device)
    if args.select_by == "rm":
        rm_ckpt = load_reward_model(args.rm, tokenizer, args.init)
    enc = get_tokenizer(tokenizer)
    eot, block_size = enc.eot_token, model.config.block_size
    print0(f"model: {model.num_params() / 1e6:.2f}M parameters, {model.config.n_layer} layers, "
           f"context {block_size}, tokenizer {tokenizer}")

    # data
    mode = "corpus" if args.pretrain else "sft"
    train_path = args.train or os.path.join(args.world,
                                            "corpus_train.txt" if args.pretrain else "sft_train.jsonl")
    val_path = args.val or os.path.join(args.world, "corpus_val.txt" if args.pretrain else "sft_val.jsonl")
    train_examples, dropped = load_examples(train_path, enc, block_size, args.pretrain)
    val_examples, val_dropped = load_examples(val_path, enc, block_size, args.pretrain)
    # the loss is a sum over examples: batches in length order pad little
    val_examples.sort(key=lambda e: len(e[0]))
    for name, d, kept in (("training", dropped, train_examples), ("validation", val_dropped, val_examples)):
        if d:
            print0(f"warning: dropped {len(d)} {name} demonstrations longer than the {block_size}-token "
                   f"context (first: {d[0]})")
        if not kept:
            raise SystemExit(f"error: no {name} examples fit the {block_size}-token context "
                             f"({train_path if name == 'training' else val_path})")
    if len(train_examples) < args.batch_size:
        raise SystemExit(f"error: {len(train_examples)} training examples is fewer than --batch_size "
                         f"{args.batch_size}")
    steps_per_epoch = len(train_examples) // args.batch_size
    max_steps = args.max_steps or args.epochs * steps_per_epoch
    print0(f"data: {len(train_examples)} train / {len(val_examples)} val {mode} examples from {train_path}; "
           f"{steps_per_epoch} steps/epoch, {max_steps} steps, grad accumulation {grad_accum}")

    # optimizer, resume
    optimizer = model.configure_optimizer(args.weight_decay, args.lr, device_type=device_type)
    step, history = 0, []  # history: (step, val loss) of each epoch's checkpoint
    if last:
        optimizer.load_state_dict(last["optimizer"])
        restore_scaler(scaler, last)
        step, history = last["step"], last["history"]
        set_rng_state(last["rng"])
        print0(f"resumed from {args.out_dir}/last.pt at step {step}")
        del last
    raw_model = model
    model = wrap_for_training(model, device, args.compile, ddp)
    log = run_log(args.out_dir, master, step if args.resume else None, total=max_steps)
    saved = step if args.resume else None  # this run's last.pt, named if the loss turns NaN
    lr_at = lambda step: cosine_lr(step, args.lr, args.warmup_steps, max_steps, args.min_lr_ratio)
    validation_loss = lambda: evaluate_loss(model, val_examples, micro, eot, device, ctx)

    def checkpoint(name, optimizer=None, **extra):
        if master:
            save_checkpoint(os.path.join(args.out_dir, name), raw_model, optimizer, tokenizer=tokenizer,
                            step=step, args=vars(args), **extra)

    base_val_loss = None
    if step == 0:
        base_val_loss = validation_loss()
        log({"step": 0, "val_loss": base_val_loss})

    # the loop
    model.train()
    peak = peak_flops(device)
    t0, tokens_seen = time.time(), 0
    while step < max_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        batch = epoch_batch(train_examples, step, args.batch_size, args.seed)
        n_tokens = sum(len(ids) - max(n_prompt, 1) for ids, n_prompt in batch)  # loss tokens, global batch
        # micro-batches of similar lengths: less padding, the same gradient
        mine = sorted(batch[rank::world_size], key=lambda e: len(e[0]))
        loss_sum = 0.0
        for k in range(grad_accum):
            part = mine[k * micro:(k + 1) * micro]
            x, y = collate(part, eot, device)
            if ddp:
                model.require_backward_grad_sync = k == grad_accum - 1
            with ctx:
                logits = model(x, keep=y >= 0)  # (N, V): response positions only
                # DDP averages gradients over ranks; scaling by world_size turns that average back
                # into the global sum / n_tokens
                loss = masked_lm_loss(logits, y[y >= 0], n_tokens) * world_size
            (scaler.scale(loss) if scaler else loss).backward()
            loss_sum += loss.item() / world_size
            tokens_seen += sum(len(ids) - 1 for ids, _ in part)  # real tokens, not padding
        check_finite(loss_sum, step + 1, args.out_dir, saved)  # the step that failed, from 1
        optimizer_step(model, optimizer, scaler, args.grad_clip)
        step += 1
        if ddp:  # the logged loss is the global batch's
            t = torch.tensor(loss_sum, device=device)
            dist.all_reduce(t)
            loss_sum = t.item()
        if step % args.log_interval == 0 or step == max_steps:
            dt = time.time() - t0
            record = {"step": step, "loss": loss_sum, "lr": lr_at(step - 1),
                      "tok/s": round(tokens_seen * world_size / dt)}
            if peak:
                record["mfu"] = raw_model.flops_per_token() * tokens_seen / dt / peak
            log(record)
            t0, tokens_seen = time.time(), 0
        epoch_end = step % steps_per_epoch == 0
        if step % args.eval_interval == 0 or epoch_end or step == max_steps:
            val_loss = validation_loss()
            log({"step": step, "epoch": round(step / steps_per_epoch, 2), "val_loss": val_loss})
            if epoch_end or step == max_steps:
                history.append((step, val_loss))
                checkpoint(f"step{step}.pt")
            checkpoint("last.pt", optimizer=optimizer, scaler=scaler, history=history, rng=rng_state())
            saved = step

    # selection: the paper picks the SFT model by RM score on validation prompts, not validation loss
    if master:
        if args.select_by == "rm":
            best = rm_selection(args, history, rm_ckpt, val_path, enc, device, ctx)
        else:
            best = min(range(len(history)), key=lambda i: history[i][1])
        best_step, best_val = history[best]
        selected = load_checkpoint(os.path.join(args.out_dir, f"step{best_step}.pt"))
        save_checkpoint(os.path.join(args.out_dir, "model.pt"), model_from_checkpoint(selected),
                        tokenizer=tokenizer, step=best_step, args=vars(args), val_loss=best_val)
        print0(f"selected step{best_step}.pt by {args.select_by} -> {args.out_dir}/model.pt | val_loss "
               f"{best_val:.4f}"
               + (f" (before training: {base_val_loss:.4f})" if base_val_loss is not None else ""))
        records = [] if args.pretrain or args.resume else read_jsonl(val_path, ["prompt"])
        if records and "spec" in records[0]:  # the default world: ask its held-out labelers too
            labeler_report(args, records, selected, enc, device, ctx)

    if ddp:
        del model  # the DDP wrapper holds the process group: free it first, or exit can abort
    compute_cleanup()


if __name__ == "__main__":
    main()
