"""
One training step, ours vs TRL 1.12.0, on the same random GPT-2 shape, same batch and sequence lengths, fp32:
  SFT: sft.py's step (collate, masked next-token loss on the response tokens, backward, clip, AdamW) vs
       TRL's SFTTrainer on {prompt, completion} data (loss on the completion, its default).
  RM:  reward.py's step (forward_rankings, ranking_loss with K = 2, backward, clip, AdamW) vs TRL's
       RewardTrainer on {prompt, chosen, rejected} pairs (-log σ(r_chosen − r_rejected)).
Each side uses its own script's defaults for what does not change the work: batch 32 and dropout 0.2 for
SFT, batch 16 and dropout 0 for the RM (sft.py / reward.py defaults), the same learning rate, weight decay,
cosine schedule and gradient clipping on TRL's side. Every sequence is --prompt_len + --response_len tokens
(the response ends in end-of-text on both sides), so there is no padding anywhere.

    pip install torch==2.13.0 && pip install -r bench/requirements.txt
    python bench/train_step.py                    # tiny: 4 layers, 128 dims, vocab 2048
    python bench/train_step.py --threads 1        # on a shared machine: one thread per process spins less
    python bench/train_step.py --profile          # and where our steps' time goes (torch.profiler)
    python bench/train_step.py --preset gpt2 --steps 3    # the 124M shape

The two are interleaved within one process: a callback at the Trainer's on_step_end runs our step, so a busy
spell of a shared machine hits both. TRL's step is the wall time from the end of our previous step to its
next on_step_end (data loading and collation, the step, its metrics and logging); ours is the whole step
too (collation included). The first step of each is a warm-up and is not counted.
Prints the versions, the config, the step times and, last,
`ratio ours/TRL SFT step: X.XXx faster | RM step: Y.YYx faster`.

TRL's configs default gradient_checkpointing=True and bf16=True: both are off here (ours does neither).
TRL's SFTTrainer defaults to loss_type "chunked_nll" (the unembedding only on completion tokens, in
checkpointed chunks); that default is kept (--trl_sft_loss nll for the plain loss).
"""
import argparse
import os
import statistics
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (add_model_args, header, hf_config, ms_summary, offline_tokenizer,  # noqa: E402
                     profile_top, quiet_trainer, random_ids, resolve_model_args, same_weights_pair,
                     scratch_dir, trainer_interleave)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
add_model_args(parser)
# workload
parser.add_argument("--sft_batch_size", type=int, default=32,
                    help="demonstrations per SFT step (sft.py --batch_size default)")
parser.add_argument("--rm_batch_size", type=int, default=16,
                    help="comparisons (prompts, K = 2 completions each) per RM step (reward.py --batch_size "
                         "default)")
parser.add_argument("--prompt_len", type=int, default=32,
                    help="prompt tokens; the world's prompts have a median of 32")
parser.add_argument("--response_len", type=int, default=16,
                    help="response (completion) tokens, end-of-text included; the world's have a median of "
                         "11 + 1")
parser.add_argument("--steps", type=int, default=10,
                    help="timed steps of each, after one warm-up; medians are reported")
parser.add_argument("--only", choices=["sft", "rm"], help="run one of the two comparisons")
parser.add_argument("--trl_sft_loss", default="chunked_nll", choices=["chunked_nll", "nll"],
                    help="SFTConfig.loss_type (TRL 1.12.0's default: chunked_nll)")
parser.add_argument("--profile", action="store_true",
                    help="after timing, profile one of our steps of each kind and print the top ops")
args = parser.parse_args()
device = resolve_model_args(args)
assert args.prompt_len >= 1 and args.response_len >= 2, \
    "--prompt_len >= 1 and --response_len >= 2 (the response ends in end-of-text)"
assert args.prompt_len + args.response_len <= args.block_size, \
    "--prompt_len + --response_len must fit in --block_size"
assert args.steps >= 1, "--steps must be at least 1"

import transformers  # noqa: E402  (after argparse, so --help works without them)
from datasets import Dataset  # noqa: E402

import datasets  # noqa: E402

warnings.filterwarnings("ignore")
datasets.disable_progress_bars()
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer  # noqa: E402

import reward  # noqa: E402  (the repository's reward.py and sft.py: harness put the root on sys.path)
import sft  # noqa: E402
from common import check_finite, cosine_lr, optimizer_step  # noqa: E402
from model import scalar_head_model  # noqa: E402

header(args, ["transformers", "trl", "accelerate", "datasets"])
P, C, V = args.prompt_len, args.response_len, args.vocab_size
EOT, PAD = V - 1, 0
n_steps = args.steps + 1  # the warm-up, then the timed steps
tok = offline_tokenizer(V, PAD)
data_gen = torch.Generator().manual_seed(args.seed)
device_type = torch.device(device).type


def trainer_args(config_cls, batch_size, lr, weight_decay, grad_clip, warmup, **extra):
    """A TRL config that does what our step does: fp32, no gradient checkpointing, cosine schedule,
    clipping."""
    return config_cls(output_dir=scratch_dir("bench_train_step_"), use_cpu=device_type == "cpu", bf16=False,
                      fp16=False,
                      report_to="none", save_strategy="no", disable_tqdm=True, gradient_checkpointing=False,
                      seed=args.seed,
                      per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                      max_steps=n_steps, learning_rate=lr,
                      weight_decay=weight_decay, max_grad_norm=grad_clip, lr_scheduler_type="cosine",
                      warmup_steps=warmup,
                      dataloader_num_workers=0, **extra)


def adamw_kind(optimizer):
    """Which AdamW implementation torch picks for these parameters: fused, foreach or the per-tensor
    for-loop."""
    from torch.optim.optimizer import _default_to_fused_or_foreach
    params = [p for group in optimizer.param_groups for p in group["params"]]
    fused, foreach = optimizer.defaults.get("fused"), optimizer.defaults.get("foreach")
    if fused is None and foreach is None:
        fused, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
    return "fused" if fused else "foreach" if foreach else "for-loop (torch's CPU default)"


def run(trainer, ours_step):
    """Train TRL for n_steps with our step interleaved; returns (ours seconds, TRL seconds) without
    the warm-up."""
    interleave = trainer_interleave(ours_step, device)
    quiet_trainer(trainer).add_callback(interleave)
    trainer.train()
    assert len(interleave.theirs) == n_steps, f"TRL ran {len(interleave.theirs)} steps, expected {n_steps}"
    return interleave.ours[1:], interleave.theirs[1:]


results, profiles = {}, {}

# -----------------------------------------------------------------------------
# SFT: sft.py's training step (grad accumulation 1, no DDP)

if args.only in (None, "sft"):
    sft_defaults = sft.parser.parse_args([])
    dropout, lr = 0.2, 1e-3  # sft.py main()'s SFT defaults for --dropout and --lr (None in the parser)
    B = args.sft_batch_size
    torch.manual_seed(args.seed)
    hf_lm = transformers.GPT2LMHeadModel(hf_config(args, dropout=dropout, pad_token_id=PAD)).to(device)
    sft_model, max_diff = same_weights_pair(hf_lm, dropout=dropout)
    sft_model.train()
    sft_opt = sft_model.configure_optimizer(sft_defaults.weight_decay, lr, device_type=device_type)
    rows = torch.cat([random_ids(B * n_steps, P + C - 1, V, data_gen), torch.full((B * n_steps, 1), EOT)],
                     1).tolist()
    # (prompt + response + end-of-text, prompt length), as sft.py builds them
    examples = [(ids, P) for ids in rows]

    def sft_step(i):
        for group in sft_opt.param_groups:
            group["lr"] = cosine_lr(i, lr, sft_defaults.warmup_steps, n_steps, sft_defaults.min_lr_ratio)
        batch = examples[(i % n_steps) * B:(i % n_steps + 1) * B]
        n_tokens = sum(len(ids) - max(n_prompt, 1) for ids, n_prompt in batch)
        x, y = sft.collate(batch, EOT, device)
        logits = sft_model(x, keep=y >= 0)  # as sft.py: the unembedding on response positions only
        loss = sft.masked_lm_loss(logits, y[y >= 0], n_tokens)
        loss.backward()
        check_finite(loss.item(), i, "-")
        optimizer_step(sft_model, sft_opt, None, sft_defaults.grad_clip)

    # pre-tokenized prompt + completion
    dataset = Dataset.from_dict({"input_ids": rows, "completion_mask": [[0] * P + [1] * C] * len(rows)})
    trainer = SFTTrainer(model=hf_lm, processing_class=tok, train_dataset=dataset,
                         args=trainer_args(SFTConfig, B, lr, sft_defaults.weight_decay,
                                           sft_defaults.grad_clip, sft_defaults.warmup_steps,
                                           loss_type=args.trl_sft_loss, max_length=None,
                                           # inferred only for text {prompt, completion} data
                                           completion_only_loss=True))
    assert sum(label != -100 for label in trainer.train_dataset[0]["labels"]) == C, \
        "TRL's loss must cover the response tokens only"
    assert (sft.collate(examples[:1], EOT,
                        "cpu")[1] >= 0).sum() == C, "our loss must cover the response tokens only"
    print(f"SFT: batch {B} | prompt {P} + response {C} tokens (loss on the {C} response tokens) | dropout "
          f"{dropout} | clip "
          f"{sft_defaults.grad_clip} | TRL loss_type {args.trl_sft_loss}, optim {trainer.args.optim.value} | "
          f"ours AdamW {adamw_kind(sft_opt)} | "
          f"max logit diff {max_diff:.1e} | {args.steps} timed steps each after 1 warm-up, interleaved",
          flush=True)
    results["SFT"] = run(trainer, sft_step)
    profiles["SFT"] = sft_step

# -----------------------------------------------------------------------------
# RM: reward.py's training step (K = 2, grad accumulation 1, no DDP)

if args.only in (None, "rm"):
    rm_defaults = reward.parser.parse_args([])
    B = args.rm_batch_size
    torch.manual_seed(args.seed)
    hf_rm = transformers.GPT2ForSequenceClassification(hf_config(args, dropout=rm_defaults.dropout,
                                                                 pad_token_id=PAD, num_labels=1)).to(device)
    hf_lm = transformers.GPT2LMHeadModel(hf_config(args)).to(device)
    hf_lm.transformer.load_state_dict(hf_rm.transformer.state_dict())  # the same trunk on both sides
    rm_model = scalar_head_model(same_weights_pair(hf_lm)[0])
    rm_model.train()
    rm_opt = rm_model.configure_optimizer(rm_defaults.weight_decay, rm_defaults.lr, device_type=device_type)
    prompts = random_ids(B * n_steps, P, V, data_gen)
    eot = torch.full((B * n_steps, 1), EOT)
    chosen = torch.cat([prompts, random_ids(B * n_steps, C - 1, V, data_gen), eot], 1).tolist()
    rejected = torch.cat([prompts, random_ids(B * n_steps, C - 1, V, data_gen), eot], 1).tolist()
    rankings = [[c, r] for c, r in zip(chosen, rejected)]  # best first, as reward.load_rankings builds them

    def rm_step(i):
        for group in rm_opt.param_groups:
            group["lr"] = cosine_lr(i, rm_defaults.lr, rm_defaults.warmup_steps, n_steps, 0.1)
        batch = rankings[(i % n_steps) * B:(i % n_steps + 1) * B]
        rewards, k = reward.forward_rankings(rm_model, batch, device)
        loss, (correct, pairs) = reward.ranking_loss(rewards, k)
        loss.backward()
        check_finite(loss.item(), i, "-")
        torch.stack([correct.sum(), pairs.sum()]).float().cpu()  # the accuracy reward.py accumulates every step
        optimizer_step(rm_model, rm_opt, None, rm_defaults.grad_clip)

    # pre-tokenized prompt + completion pairs
    dataset = Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
    trainer = RewardTrainer(model=hf_rm, processing_class=tok, train_dataset=dataset,
                            args=trainer_args(RewardConfig, B, rm_defaults.lr, rm_defaults.weight_decay,
                                              rm_defaults.grad_clip,
                                              rm_defaults.warmup_steps, max_length=None))
    print(f"RM: batch {B} comparisons = {2 * B} sequences of {P} + {C} tokens | dropout "
          f"{rm_defaults.dropout} | clip {rm_defaults.grad_clip} | "
          f"TRL optim {trainer.args.optim.value} | ours AdamW {adamw_kind(rm_opt)} | {args.steps} timed "
          "steps each after 1 warm-up, interleaved", flush=True)
    results["RM"] = run(trainer, rm_step)
    profiles["RM"] = rm_step

# -----------------------------------------------------------------------------

for name, (ours_t, theirs_t) in results.items():
    print(f"{name:>3} step   ours: {ms_summary(ours_t)}")
    print(f"{name:>3} step    TRL: {ms_summary(theirs_t)}")
if args.profile:
    for name, step in profiles.items():
        print(f"\nours, one {name} step under torch.profiler (self CPU time):")
        with torch.enable_grad():
            profile_top(lambda: step(0), device=device)
print(f"threads at the end: {torch.get_num_threads()} (asked {args.threads})")
ratios = [f"{name} step: {statistics.median(t) / statistics.median(o):.2f}x faster" for name, (o, t) in results.items()]
print("ratio ours/TRL " + " | ".join(ratios))
