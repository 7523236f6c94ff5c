"""
One PPO iteration, ours vs TRL 1.12.0's PPOTrainer (the last TRL release with PPO), doing the same work: a
rollout of --batch_size prompts with exactly --response_len sampled tokens each, then reference / value /
reward scoring, then --ppo_epochs passes of --batch_size/--minibatch_size minibatch steps of the clipped
policy + value loss, AdamW. Same random GPT-2 shape on both sides, fp32, same temperature (1), same
KL coefficient, clip ranges, GAE γ/λ and learning rates. Ours runs ppo.py's own functions (generate,
score_rollouts, ppo_update) with ppo.parser's defaults; plain PPO (--ptx_coef 0), as TRL has no PPO-ptx.

    pip install torch==2.13.0 && pip install -r bench/requirements.txt python bench/ppo.py
    # tiny: 4 layers, 128 dims, vocab 2048; batch 64, prompt 32, response 48 python bench/ppo.py
    --threads 1            # on a shared machine: one thread per process spins less python
    bench/ppo.py --profile              # and where our iteration's time goes (torch.profiler)
    python bench/ppo.py --preset gpt2 --batch_size 16 --minibatch_size 8 --repeats 2   # the 124M
    shape (slow on CPU)

The two are interleaved within one process (TRL iteration, our iteration, TRL, ours, ...): a callback at
TRL's on_step_end runs ours, so a busy spell of a shared machine hits both. TRL's iteration is the wall
time from the end of our previous iteration to its next on_step_end (data loading, generation, scoring,
update, its metrics and logging). The first iteration of each is a warm-up and is not counted.
Prints the versions, the config, per-phase medians (rollout / score / update) and, last,
`ratio ours/TRL PPO iteration: X.XXx faster`.

What differs by design (each side as shipped, its fastest fair settings):
  - TRL takes the old log-probs from generate's output scores; ours re-runs a teacher-forced policy forward in
    score_rollouts (so the first PPO ratio is exactly 1): 4 scoring forwards against TRL's 3.
  - TRL steps one AdamW over policy + value and does not clip gradients; ours steps two AdamWs (policy and
    value, their own learning rates) and clips each network's gradient norm to --grad_clip 1.0.
  - TRL's PPOConfig defaults gradient_checkpointing=True and bf16=True: both are turned off here (fp32, no
    recomputation), as ours does neither. Its rollout batch is generated in one call
    (local_rollout_forward_batch_size = batch), ours in one call too; ours scores in chunks of
    --minibatch_size rows, TRL in chunks of the batch.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (add_model_args, header, hf_config, ms_summary, offline_tokenizer,  # noqa: E402
                     profile_top, quiet_trainer, random_ids, resolve_model_args, same_weights_pair,
                     scratch_dir, sync, trainer_interleave)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
add_model_args(parser)
# workload: ppo.py's defaults
parser.add_argument("--batch_size", type=int, default=64,
                    help="rollouts (prompts) per iteration (ppo.py --batch_size)")
parser.add_argument("--minibatch_size", type=int, default=16,
                    help="rollouts per gradient step (ppo.py --minibatch_size)")
parser.add_argument("--ppo_epochs", type=int, default=4,
                    help="passes over each rollout batch (ppo.py --ppo_epochs)")
parser.add_argument("--prompt_len", type=int, default=32,
                    help="tokens in each (random) prompt; the world's PPO prompts have a median of 31")
parser.add_argument("--response_len", type=int, default=48,
                    help="sampled tokens per response (ppo.py --max_new_tokens)")
parser.add_argument("--repeats", type=int, default=5,
                    help="timed iterations of each, after one warm-up; medians are reported")
parser.add_argument("--profile", action="store_true",
                    help="after timing, profile one of our iterations and print the top ops")
parser.add_argument("--trl_gradient_checkpointing", action="store_true",
                    help="TRL as shipped: PPOConfig's default gradient_checkpointing=True (recomputes "
                         "activations; off by default here, as ours never does)")
args = parser.parse_args()
device = resolve_model_args(args)
assert args.batch_size % args.minibatch_size == 0, "--batch_size must be a multiple of --minibatch_size"
assert args.prompt_len + args.response_len <= args.block_size, \
    "--prompt_len + --response_len must fit in --block_size"
assert args.repeats >= 1, "--repeats must be at least 1"

import transformers  # noqa: E402  (after argparse, so --help works without them)
from datasets import Dataset  # noqa: E402

warnings.filterwarnings("ignore")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
import trl.experimental.ppo.ppo_trainer as trl_ppo  # noqa: E402
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: E402

import ppo  # noqa: E402  (the repository's ppo.py: harness put the root first on sys.path)
from model import generate, scalar_head_model  # noqa: E402

header(args, ["transformers", "trl", "accelerate", "datasets"])
B, P, N, V = args.batch_size, args.prompt_len, args.response_len, args.vocab_size
# end of text: the last id, as in our gpt2-V tokenizers; TRL needs a padding id of its own
EOT, PAD = V - 1, 0

# -----------------------------------------------------------------------------
# models: policy, frozen reference, value and reward; same shape both sides, ours with the policy's weights

torch.manual_seed(args.seed)
hf_policy = transformers.GPT2LMHeadModel(hf_config(args, pad_token_id=PAD)).to(device)
hf_ref = transformers.GPT2LMHeadModel(hf_config(args, pad_token_id=PAD)).to(device)
hf_ref.load_state_dict(hf_policy.state_dict())
hf_value = transformers.GPT2ForSequenceClassification(hf_config(args, pad_token_id=PAD,
                                                                num_labels=1)).to(device)
hf_reward = transformers.GPT2ForSequenceClassification(hf_config(args, pad_token_id=PAD,
                                                                 num_labels=1)).to(device)
hf_policy.generation_config.pad_token_id = PAD

policy, max_diff = same_weights_pair(hf_policy)
ref = same_weights_pair(hf_policy)[0].eval().requires_grad_(False)
value = scalar_head_model(policy)
rm = scalar_head_model(policy).eval().requires_grad_(False)
policy.train(), value.train()

# ours: ppo.py's functions with ppo.parser's defaults; plain PPO (TRL has no PPO-ptx)
ppo_args = ppo.parser.parse_args([])
ppo_args.batch_size, ppo_args.minibatch_size, ppo_args.ppo_epochs = B, args.minibatch_size, args.ppo_epochs
ppo_args.max_new_tokens, ppo_args.ptx_coef, ppo_args.out_dir = N, 0.0, tempfile.gettempdir()
device_type = torch.device(device).type
optimizers = (policy.configure_optimizer(ppo_args.weight_decay, ppo_args.lr, device_type=device_type),
              value.configure_optimizer(ppo_args.weight_decay, ppo_args.value_lr, device_type=device_type))
prompts = random_ids(B, P, V, torch.Generator().manual_seed(args.seed))
prompt_lists = prompts.tolist()
phases = {"rollout": [], "score": [], "update": []}


def ours_iteration(i):
    generator = torch.Generator(device).manual_seed(args.seed + i)
    t0 = time.perf_counter()
    tokens, mask, _, response_mask = generate(policy, prompt_lists, N, EOT, ppo_args.temperature,
                                              generator=generator)
    sync(device)
    t1 = time.perf_counter()
    assert response_mask.size(1) == N, \
        f"ours sampled {response_mask.size(1)} columns, expected {N} (every row ended early?)"
    rollout = ppo.score_rollouts(policy, ref, value, rm, tokens, mask, response_mask, EOT, ppo_args,
                                 chunk=args.minibatch_size)
    sync(device)
    t2 = time.perf_counter()
    stats = ppo.ppo_update(policy, value, optimizers, rollout, ppo_args.kl_coef, i, ppo_args)
    sync(device)
    t3 = time.perf_counter()
    for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
        phases[name].append(dt)
    return stats


# -----------------------------------------------------------------------------
# TRL: the same work, configured to match ppo.parser's defaults

tok = offline_tokenizer(V, PAD)
trl_phases = {"rollout": [], "score": [], "update": []}
marks = {}
_batch_generation, _forward = trl_ppo.batch_generation, trl_ppo.forward


def timed_batch_generation(*a, **k):  # TRL's rollout: generate with output scores
    sync(device)
    marks["gen0"] = time.perf_counter()
    out = _batch_generation(*a, **k)
    sync(device)
    marks["gen1"], marks["update0"] = time.perf_counter(), None
    assert out[0].size(1) == P + N, \
        f"TRL sampled {out[0].size(1) - P} columns, expected {N} (every row ended early?)"
    return out


def timed_forward(model, *a, **k):  # the first forward with gradients starts TRL's update phase
    if torch.is_grad_enabled() and marks.get("update0") is None:
        sync(device)
        marks["update0"] = time.perf_counter()
    return _forward(model, *a, **k)


trl_ppo.batch_generation, trl_ppo.forward = timed_batch_generation, timed_forward

config = PPOConfig(
    output_dir=scratch_dir("bench_ppo_"), use_cpu=device_type == "cpu", bf16=False, fp16=False,
    report_to="none",
    save_strategy="no", num_sample_generations=0, disable_tqdm=True,
    gradient_checkpointing=args.trl_gradient_checkpointing, seed=args.seed,
    total_episodes=B * (args.repeats + 1), per_device_train_batch_size=B, gradient_accumulation_steps=1,
    num_mini_batches=B // args.minibatch_size, num_ppo_epochs=args.ppo_epochs,
    local_rollout_forward_batch_size=B,
    response_length=N, temperature=ppo_args.temperature, stop_token="eos", missing_eos_penalty=1.0,
    learning_rate=ppo_args.lr, kl_coef=ppo_args.kl_coef, cliprange=ppo_args.cliprange,
    cliprange_value=ppo_args.cliprange_value,
    vf_coef=ppo_args.vf_coef, gamma=ppo_args.gamma, lam=ppo_args.lam, dataloader_num_workers=0)
train_dataset = Dataset.from_dict({"input_ids": prompt_lists})
trainer = quiet_trainer(PPOTrainer(args=config, processing_class=tok, model=hf_policy, ref_model=hf_ref,
                                   reward_model=hf_reward,
                                   value_model=hf_value, train_dataset=train_dataset, eval_dataset=None))


def ours_after_trl(i):  # runs at TRL's on_step_end: first close TRL's phase split, then our iteration
    trl_phases["rollout"].append(marks["gen1"] - marks["gen0"])
    trl_phases["score"].append(marks["update0"] - marks["gen1"])
    trl_phases["update"].append(time.perf_counter() - marks["update0"])
    ours_iteration(i)


# optimizer steps actually taken (TRL's accelerate wrapper may skip some under accumulation)
steps = {"ours": 0, "TRL": 0}
optimizers[0].register_step_post_hook(lambda *_: steps.__setitem__("ours", steps["ours"] + 1))
getattr(trainer.optimizer, "optimizer",
        trainer.optimizer).register_step_post_hook(lambda *_: steps.__setitem__("TRL", steps["TRL"] + 1))
interleave = trainer_interleave(ours_after_trl, device)
trainer.add_callback(interleave)
print(f"workload: batch {B} | prompt {P} | response {N} (exactly: no row ends early on random weights) | "
      f"{B // args.minibatch_size} "
      f"minibatches of {args.minibatch_size} x {args.ppo_epochs} epochs = "
      f"{B // args.minibatch_size * args.ppo_epochs} optimizer steps | "
      f"plain PPO (ptx_coef 0) | fp32 | TRL attention {hf_policy.config._attn_implementation}, gradient "
      "checkpointing "
      f"{'on' if args.trl_gradient_checkpointing else 'off'} | "
      f"{args.repeats} timed iterations each after 1 warm-up, interleaved", flush=True)
trainer.train()
assert len(interleave.theirs) == args.repeats + 1, \
    f"TRL ran {len(interleave.theirs)} iterations, expected {args.repeats + 1}"
expected = B // args.minibatch_size * args.ppo_epochs * (args.repeats + 1)
assert steps["ours"] == steps["TRL"] == expected, \
    f"optimizer steps: ours {steps['ours']}, TRL {steps['TRL']}, expected {expected}"

# -----------------------------------------------------------------------------

times = {"ours": interleave.ours[1:], "TRL": interleave.theirs[1:]}
split = {"ours": {k: v[1:] for k, v in phases.items()}, "TRL": {k: v[1:] for k, v in trl_phases.items()}}
for name in times:
    parts = " | ".join(f"{k} {statistics.median(v) * 1e3:,.0f}" for k, v in split[name].items())
    print(f"{name:>5} iteration: {ms_summary(times[name])}   [phase medians, ms: {parts}]")
# model FLOPs per iteration (analytical, as model.flops_per_token; sampling counted as one forward
# over prompt + response)
T = P + N
# one forward over the rollout batch
lm, scalar = (m.flops_per_token(T) // 3 * B * T for m in (policy, value))
rollout, update = lm, 3 * args.ppo_epochs * (lm + scalar)
flops = {"ours": rollout + 2 * lm + 2 * scalar + update,  # scoring: policy, reference, value, reward
         # scoring: reference, value, reward (old log-probs from generate's scores)
         "TRL": rollout + lm + 2 * scalar + update}
print("model FLOPs per iteration (analytical): " + " | ".join(
    f"{name} {flops[name] / 1e9:,.0f} GFLOP, {flops[name] / statistics.median(times[name]) / 1e9:,.1f} "
    "GFLOP/s achieved" for name in times))
if args.profile:
    print("\nours, one iteration under torch.profiler (self CPU time):")
    profile_top(lambda: ours_iteration(args.repeats + 1), device=device)
ratio = statistics.median(times["TRL"]) / statistics.median(times["ours"])
print(f"ratio ours/TRL PPO iteration: {ratio:.2f}x faster")
