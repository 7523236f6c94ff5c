"""
Step 3 of InstructGPT (paper §3.5, "Reinforcement learning"): fine-tune the SFT policy with PPO
against the reward model in a bandit environment (a prompt, one sampled response, its score,
episode over), with a per-token KL penalty to the frozen SFT model. PPO-ptx also mixes pretraining
gradients in: equation (2).

    python ppo.py --out_dir out/ppo-ptx                # PPO-ptx on the default world: out/sft + out/rm
    python ppo.py --ptx_coef 0 --out_dir out/ppo       # plain PPO
    torchrun --standalone --nproc_per_node=8 ppo.py ...
    python ppo.py --resume                             # continue an interrupted run exactly

Choices, and why:
- The policy and the frozen reference π_SFT start from --policy; the value function starts from the
  reward model (paper), as its own network with its own optimizer and learning rate.
- Every log-prob (policy, old policy, reference) is taken at --temperature, the distribution the
  responses are sampled from; the old log-probs come from the same kind of forward as the update's,
  so the first minibatch's ratio π/π_old is 1 up to rounding (logged as ratio_dev_first).
- A response that never emits <|endoftext|> within --max_new_tokens scores --missing_eot_penalty
  instead of the RM's score. The RM is normalised so that demonstrations score 0: keep the penalty
  below what a poor finished answer scores.
- β (--kl_coef) is fixed, as in the paper; --adaptive_kl moves it towards --target_kl with
  Ziegler et al. (2019)'s controller (at most 20% per --horizon episodes).
- γ of equation (2) is --ptx_coef; the paper's 27.8 is for its scale, 1.0 suits the default world.
  With --ptx_coef 0 (plain PPO) no pretraining forward runs at all.
- 256 rollouts per iteration, each in one gradient step (--ppo_epochs 1, 16 minibatches of 16),
  instead of four passes over 64: the same 800 policy steps at the same cost of update, each on
  samples it has not stepped on; sampling and scoring are cheap next to the update. On 1,000 RM
  prompts of world 7, judged by the training labelers against SFT: 0.564 ± 0.031 against 0.518
  (RESULTS.md, "Eight draws, fresh rollouts").
- --iterations 50 on the default world is about where the held-out labelers' win rate stops rising
  while the RM score keeps climbing (RESULTS.md, over-optimization).
"""
import argparse
import glob
import os
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from common import (HelpFormatter, add_compute_args, check_finite, compute_cleanup, last_token_index,
                    load_reward_model, optimizer_step, print0, read_documents, read_jsonl,
                    restore_scaler, rng_state, run_log, set_rng_state, stage_init, wrap_for_training)
from model import (generate, get_tokenizer, load_checkpoint, model_from_checkpoint, sampling_logits,
                   save_checkpoint, token_logprobs)

# -----------------------------------------------------------------------------
# The maths: pure functions, tested against hand-computed values in tests/test_ppo.py

def kl_penalized_rewards(logprobs, ref_logprobs, score, response_mask, beta):
    """Per-token reward of the bandit episode (paper §3.5; Ziegler et al. 2019):
        R_t = −β·(log π_φ(y_t|x, y_<t) − log π_SFT(y_t|x, y_<t))  on every response token,
        + r_θ(x, y)                                  at the last real token (the <|endoftext|>),
    zero on padding. Summed over t it is r_θ(x, y) − β·log(π_φ(y|x)/π_SFT(y|x)), equation (2)'s
    first term. logprobs, ref_logprobs, response_mask (B, N); score (B,).
    Returns (rewards (B, N), kl (B, N) the masked log-ratio)."""
    kl = torch.where(response_mask, logprobs - ref_logprobs, 0.0)
    last = response_mask.long().sum(1) - 1  # responses are contiguous from column 0
    rewards = (-beta * kl).scatter_add(1, last[:, None], score[:, None].to(kl.dtype))
    return rewards, kl


def gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation over the response tokens, backwards from the last one:
        δ_t = R_t + γ·V(s_{t+1}) − V(s_t),   A_t = δ_t + γλ·A_{t+1},
    with R, V and A 0 past the last real token (R too: a reward on padding would reach the last
    real token's advantage through A_{t+1}). Returns (advantages, returns = advantages + values):
    the returns, taken before whitening, are the value targets."""
    values, rewards = torch.where(mask, values, 0.0), torch.where(mask, rewards, 0.0)
    advantages = torch.zeros_like(rewards)
    next_value, next_advantage = torch.zeros_like(rewards[:, 0]), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    advantages = torch.where(mask, advantages, 0.0)
    return advantages, torch.where(mask, advantages + values, 0.0)


def all_sum(t):
    """Sum over DDP ranks (in place) of a tensor, or of a dict of scalar tensors in one all-reduce
    (returned as a dict of the same keys); a single process gets its input back."""
    if isinstance(t, dict):
        return dict(zip(t, all_sum(torch.stack([v.float() for v in t.values()]))))
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_max(t):
    """Maximum of a tensor over DDP ranks (in place); a single process returns it as is."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def masked_mean_var(x, mask):
    """Mean and (biased) variance of x over the True entries of mask, over all DDP ranks."""
    total = all_sum(torch.stack([torch.where(mask, x, 0.0).sum(), mask.sum().to(x.dtype)]))
    mean = total[0] / total[1]
    var = all_sum(torch.where(mask, (x - mean) ** 2, 0.0).sum()) / total[1]
    return mean, var


def whiten(x, mask, eps=1e-8):
    """(x − mean) / std over the masked entries only (global across ranks); padding stays 0."""
    mean, var = masked_mean_var(x, mask)
    return torch.where(mask, (x - mean) * torch.rsqrt(var + eps), 0.0)


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange, n_tokens):
    """PPO's clipped surrogate, per response token t, with ρ_t = π_φ(y_t|·) / π_φ_old(y_t|·):
        L = −Σ_t min(ρ_t·A_t, clip(ρ_t, 1−ε, 1+ε)·A_t) / n_tokens
    n_tokens: the response tokens of the whole (global) minibatch, so that DDP ranks' shares add
    up to the mean. Returns (loss, stats), stats the same shares: clipfrac, approx_kl = ½(log ρ)²,
    and ratio_dev, the largest |ρ − 1|."""
    log_ratio = torch.where(mask, logprobs - old_logprobs, 0.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = torch.where(mask, torch.maximum(unclipped, clipped), 0.0).sum() / n_tokens
    with torch.no_grad():
        stats = {"clipfrac": (mask & (clipped > unclipped)).sum() / n_tokens,
                 "approx_kl": (0.5 * log_ratio ** 2).sum() / n_tokens,
                 "ratio_dev": (ratio - 1).abs().max()}
    return loss, stats


def value_loss(values, old_values, returns, mask, cliprange_value, n_tokens):
    """Clipped value loss: the prediction may move at most ε_v from its rollout value V_old before
    the loss stops rewarding it:
        L_V = ½·Σ_t max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε_v, ε_v) − R_t)²) / n_tokens
    Returns (loss, stats: vf_clipfrac, the share of tokens where the clipped branch is larger)."""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * torch.where(mask, torch.maximum(unclipped_loss, clipped_loss), 0.0).sum() / n_tokens
    with torch.no_grad():
        stats = {"vf_clipfrac": (mask & (clipped_loss > unclipped_loss)).sum() / n_tokens}
    return loss, stats


def pretraining_logprob(logits, targets, n_tokens):
    """Equation (2)'s second expectation, E_{x~D_pretrain}[log π_φ(x)]: the summed next-token
    log-likelihood of a pretraining batch / n_tokens (the global batch's tokens). The plain LM
    distribution (no temperature): it is the pretraining objective, the negative of the LM
    cross-entropy that is logged as ptx_loss."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).sum() / n_tokens


def objective(score, kl, beta, ptx_logprob, ptx_coef):
    """Equation (2), the quantity PPO-ptx maximises, estimated on a batch:
        objective(φ) = E_{(x,y)~π_φ}[r_θ(x,y) − β·log(π_φ(y|x)/π_SFT(y|x))]
                       + γ·E_{x~D_pretrain}[log π_φ(x)]
    score (B,) r_θ(x, y); kl (B,) log(π_φ(y|x)/π_SFT(y|x)), the per-token log-ratios summed;
    ptx_logprob the mean per-token log π_φ(x) of a pretraining batch; γ = ptx_coef (0: plain
    PPO's objective)."""
    return (score - beta * kl).mean() + ptx_coef * ptx_logprob


def ppo_ptx_loss(pg_loss, vf_loss, ptx_logprob, vf_coef, ptx_coef):
    """The loss one PPO-ptx step minimises, equation (2) turned into a loss. Its first expectation
    is maximised by the clipped surrogate pg_loss, whose advantages come from the KL-penalised
    rewards; the second enters directly, scaled by γ, in the same step. vf_loss trains the
    separate value network (disjoint parameters: it does not change the policy's gradient):
        loss = pg_loss + vf_coef·vf_loss − γ·ptx_logprob"""
    return pg_loss + vf_coef * vf_loss - ptx_coef * ptx_logprob


def adaptive_kl_coef(beta, kl, target, n_steps, horizon):
    """Ziegler et al. (2019)'s proportional controller, after a batch of n_steps episodes whose
    mean KL is kl:
        e = clip(KL / KL_target − 1, −0.2, 0.2),   β ← β·(1 + e·n_steps / horizon)"""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)


def final_score(rm_score, ended, missing_eot_penalty, reward_clip=0.0):
    """The score of an episode: the RM's (clipped to ±reward_clip if set), or the fixed penalty if
    the response never ended."""
    if reward_clip > 0:
        rm_score = rm_score.clamp(-reward_clip, reward_clip)
    return torch.where(ended, rm_score, torch.full_like(rm_score, missing_eot_penalty))


# -----------------------------------------------------------------------------
# Randomness: every draw is a fixed function of (seed, iteration, ...), which makes resume exact.
# (sft.py and reward.py order their data with common.epoch_batch instead: a different stream,
# which the default pipeline's numbers depend on, so the two orders stay as they are.)

ROLLOUT, MINIBATCH, PROMPTS, PTX = range(4)  # independent random streams


def seed_of(*parts):
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def batch_indices(n_items, batch_size, step, seed, stream):
    """The global batch of step `step`: consecutive slices of a fresh permutation of the items per
    pass over them (a batch may straddle two passes)."""
    perms, out = {}, []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(k, n_items)
        if epoch not in perms:
            generator = torch.Generator().manual_seed(seed_of(seed, stream, epoch))
            perms[epoch] = torch.randperm(n_items, generator=generator).tolist()
        out.append(perms[epoch][i])
    return out


def minibatch_rows(batch_size, minibatch_size, rank, world_size, generator):
    """A random split of the global rollout batch into batch_size/minibatch_size minibatches, the
    same whatever the number of processes: the batch is cut into blocks of n_minibatches
    consecutive rows and each block gives one row, at random, to every minibatch. Rank r holds
    global rows [r·B/W, (r+1)·B/W), i.e. whole blocks, so each rank's share of every minibatch is
    minibatch_size/W rows. Returns the rank's local row indices of each minibatch."""
    n_minibatches, blocks_per_rank = batch_size // minibatch_size, minibatch_size // world_size
    # (blocks, n_minibatches)
    choice = torch.rand(minibatch_size, n_minibatches, generator=generator).argsort(1)
    mine = choice[rank * blocks_per_rank:(rank + 1) * blocks_per_rank]
    return [torch.arange(blocks_per_rank) * n_minibatches + mine[:, k] for k in range(n_minibatches)]


# -----------------------------------------------------------------------------
# One PPO iteration: score the rollouts, then update on them

def right_align(tokens, mask, response_mask):
    """Rollout rows (left-padded prompt, then response, padded after its end) -> the same rows with
    all their padding moved to the end, where causal attention cannot see it: no attention mask is
    needed (positions are 0, 1, ... as generate() gave the real tokens), and a minibatch is cut to
    its own longest row instead of the batch's longest prompt plus longest response.
    Returns (aligned (B, T), lengths (B,), keep (B, T): the positions whose next token is a
    response token; taken row by row they are the response tokens in order, i.e. response_mask's
    True entries)."""
    T, P = tokens.size(1), tokens.size(1) - response_mask.size(1)
    prompt_len = mask[:, :P].sum(1)
    lengths = prompt_len + response_mask.sum(1)
    shift = P - prompt_len  # leading pads
    cols = torch.arange(T, device=tokens.device)
    # past a row's length: any real id, never read
    aligned = tokens.gather(1, (cols + shift[:, None]).clamp(max=T - 1))
    keep = (cols >= prompt_len[:, None] - 1) & (cols < lengths[:, None] - 1)
    return aligned, lengths, keep


def on_response(flat, response_mask):
    """Values of the response tokens, in order row by row (n,) -> their (B, N) grid, 0 on padding
    (differentiable)."""
    return flat.new_zeros(response_mask.shape).masked_scatter(response_mask, flat)


@torch.no_grad()
def score_rollouts(policy, ref, value, rm, tokens, mask, response_mask, eot, args, ctx=nullcontext(),
                   chunk=64):
    """One teacher-forced forward per model over prompt + response, in chunks of rows:
    log π_φ_old(y_t|·) (the same kind of forward, at the same temperature, as the update's, so the
    first ratio is 1 up to rounding), log π_SFT(y_t|·), the values V(s_t) read at the token before
    each response token, and the score. Returns the rollout as a dict of tensors."""
    P = tokens.size(1) - response_mask.size(1)
    aligned, lengths, keep = right_align(tokens, mask, response_mask)
    parts = {"logprobs": [], "ref_logprobs": [], "values": [], "rm_score": []}
    order = lengths.argsort(stable=True)  # chunks of rows of similar length, each cut to its longest
    for rows in order.split(chunk):
        T = int(lengths[rows].max())
        t, k, rmask = aligned[rows, :T], keep[rows, :T], response_mask[rows]
        targets = tokens[rows, P:][rmask]
        with ctx:
            for name, net in (("logprobs", policy), ("ref_logprobs", ref)):
                logprobs = token_logprobs(net(t, keep=k), targets, args.temperature)
                parts[name].append(on_response(logprobs, rmask))
            parts["values"].append(on_response(value(t)[k].float(), rmask))
            parts["rm_score"].append(rm(t).gather(1, (lengths[rows] - 1)[:, None]).squeeze(1).float())
    rollout = {k: torch.cat(v)[order.argsort()] for k, v in parts.items()}  # back in the rows' order
    ended = tokens.gather(1, last_token_index(mask)[:, None]).squeeze(1) == eot
    rollout["score"] = final_score(rollout["rm_score"], ended, args.missing_eot_penalty, args.reward_clip)
    rollout.update(tokens=tokens, mask=mask, response_mask=response_mask, ended=ended)
    return rollout


STEP_STATS = ("loss", "pg_loss", "vf_loss", "ptx_logprob", "clipfrac", "approx_kl", "entropy", "vf_clipfrac")


def ppo_update(policy, value, optimizers, rollout, beta, iteration, args, ctx=nullcontext(),
               scaler=None, ptx=None, saved=None):
    """PPO on one rollout batch (this rank's rows of it): KL-penalised rewards, GAE, whitening over
    the global batch, then --ppo_epochs passes of minibatch steps of the total loss (policy and
    value together; the pretraining term too when ptx_coef > 0, ptx(epoch, k) giving this rank's
    share of that step's pretraining batch as (x, y)). policy and value may be DDP-wrapped; saved:
    the iteration of this run's last.pt (None: none yet), named if the loss turns NaN.
    Returns global (all-reduced) statistics as floats."""
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    tokens, mask, response_mask = rollout["tokens"], rollout["mask"], rollout["response_mask"]
    assert tokens.size(0) * world_size == args.batch_size, \
        f"rollout of {tokens.size(0)} rows x {world_size} processes != --batch_size {args.batch_size}"
    P, device = tokens.size(1) - response_mask.size(1), tokens.device
    aligned, lengths, keep = right_align(tokens, mask, response_mask)
    old_logprobs, old_values = rollout["logprobs"], torch.where(response_mask, rollout["values"], 0.0)

    rewards, kl = kl_penalized_rewards(old_logprobs, rollout["ref_logprobs"], rollout["score"],
                                       response_mask, beta)
    advantages, returns = gae_advantages(rewards, old_values, response_mask, args.gamma, args.lam)
    advantages = whiten(advantages, response_mask)
    _, var_returns = masked_mean_var(returns, response_mask)
    _, var_error = masked_mean_var(returns - old_values, response_mask)
    totals = all_sum({"score": rollout["score"].sum(), "kl": kl.sum(1).sum(),
                      "length": response_mask.sum(), "eot": rollout["ended"].sum(),
                      "rm_score": rollout["rm_score"].sum()})
    mean = {k: v / args.batch_size for k, v in totals.items()}
    stats = {"score": mean["score"].item(), "kl": mean["kl"].item(),
             "reward": (mean["score"] - beta * mean["kl"]).item(),
             "length": mean["length"].item(), "eot": mean["eot"].item(), "rm_score": mean["rm_score"].item(),
             "explained_var": (1 - var_error / var_returns).item() if var_returns > 0 else 0.0}

    sums = dict.fromkeys(STEP_STATS, torch.zeros((), device=device))
    n_steps = 0
    for epoch in range(args.ppo_epochs):
        generator = torch.Generator().manual_seed(seed_of(args.seed, MINIBATCH, iteration, epoch))
        minibatches = minibatch_rows(args.batch_size, args.minibatch_size, rank, world_size, generator)
        for k, rows in enumerate(minibatches):
            rows = rows.to(device)
            n_tokens = all_sum(response_mask[rows].sum().float())
            step = dict.fromkeys(STEP_STATS, torch.zeros((), device=device))
            ratio_dev = torch.zeros((), device=device)  # the largest |ρ − 1| of this rank's rows
            # the minibatch in two passes, each over the rows of similar length cut to their
            # longest: the same gradient as one pass over all of them, much less padding
            halves = rows[lengths[rows].argsort(stable=True)].chunk(2)
            for h, part in enumerate(halves):
                for net in (policy, value):  # all-reduce once, at the minibatch's last backward
                    if isinstance(net, DistributedDataParallel):
                        net.require_backward_grad_sync = h == len(halves) - 1
                T = int(lengths[part].max())
                t, used, rmask = aligned[part, :T], keep[part, :T], response_mask[part]
                with ctx:
                    logits = policy(t, keep=used)  # (response tokens, V): the unembedding only where used
                    logprobs = token_logprobs(logits, tokens[part, P:][rmask], args.temperature)
                    logprobs = on_response(logprobs, rmask)
                    values = on_response(value(t)[used].float(), rmask)
                    pg_loss, pg_stats = policy_loss(logprobs, old_logprobs[part], advantages[part], rmask,
                                                    args.cliprange, n_tokens)
                    vf_loss, vf_stats = value_loss(values, old_values[part], returns[part], rmask,
                                                   args.cliprange_value, n_tokens)
                    ptx_logprob = torch.zeros((), device=device)
                    if args.ptx_coef > 0 and h == 0:  # once a minibatch; plain PPO: no pretraining forward
                        x, y = ptx(epoch, k)
                        ptx_logprob = pretraining_logprob(policy(x), y, y.numel() * world_size)
                    loss = ppo_ptx_loss(pg_loss, vf_loss, ptx_logprob, args.vf_coef, args.ptx_coef)
                with torch.no_grad():
                    logp = F.log_softmax(sampling_logits(logits, args.temperature), dim=-1)
                    entropy = -(logp.exp() * logp).sum() / n_tokens
                half = {"loss": loss.detach(), "pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach(),
                        "ptx_logprob": ptx_logprob.detach(), "clipfrac": pg_stats["clipfrac"],
                        "approx_kl": pg_stats["approx_kl"], "entropy": entropy,
                        "vf_clipfrac": vf_stats["vf_clipfrac"]}
                step = {name: step[name] + half[name].float() for name in STEP_STATS}
                ratio_dev = torch.maximum(ratio_dev, pg_stats["ratio_dev"].float())
                # DDP averages gradients over ranks; scaling by world_size turns that average back
                # into the global sum / n_tokens
                (scaler.scale(loss * world_size) if scaler else loss * world_size).backward()
            step = all_sum(step)
            # every rank sees the same global loss and stops together
            check_finite(step["loss"].item(), iteration + 1, args.out_dir, saved)
            if n_steps == 0:  # before any step the ratio is 1: old log-probs come from the same forward
                stats["ratio_dev_first"] = all_max(ratio_dev).item()  # every rank's rows, not one's
                stats["clipfrac_first"] = step["clipfrac"].item()
            optimizer_step((policy, value), optimizers, scaler, args.grad_clip)
            sums = {name: sums[name] + step[name] for name in STEP_STATS}
            n_steps += 1
    means = {name: (total / n_steps).item() for name, total in sums.items()}
    stats.update(means, ptx_loss=-means.pop("ptx_logprob"))
    stats["objective"] = objective(torch.tensor(stats["score"]), torch.tensor(stats["kl"]), beta,
                                   -stats["ptx_loss"], args.ptx_coef).item()
    return stats


def assert_ranks_agree(*models):
    """DDP keeps every rank's weights identical; checked at each save by comparing fingerprints with
    rank 0's."""
    if not dist.is_initialized():
        return
    fingerprint = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()])
                               for model in models for p in model.state_dict().values()]).flatten()
    reference = fingerprint.clone()
    dist.broadcast(reference, 0)
    differ = all_sum((fingerprint != reference).any().float())
    if differ.item() > 0:
        raise SystemExit("error: the processes' weights have diverged (a DDP bug or "
                         "non-deterministic hardware); not saving")


# -----------------------------------------------------------------------------
# Config

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
# data
parser.add_argument("--prompts", default="data/world/ppo_prompts.jsonl",
                    help="PPO prompts: JSONL of {prompt}")
parser.add_argument("--ptx_data", default="data/world/corpus_train.txt",
                    help="PPO-ptx's pretraining text: one document per line, or a .jsonl of {text}")
# models
parser.add_argument("--policy", default="out/sft/model.pt",
                    help="the SFT checkpoint: initial policy and π_SFT")
parser.add_argument("--rm", default="out/rm/model.pt",
                    help="the reward model; the value function starts from it")
# rollouts: the bandit environment
parser.add_argument("--iterations", type=int, default=50,
                    help="PPO iterations (rollout batch, score, update)")
parser.add_argument("--batch_size", type=int, default=256, help="rollouts per iteration, over all processes")
parser.add_argument("--max_new_tokens", type=int, default=48,
                    help="response length limit in tokens, eot included")
parser.add_argument("--temperature", type=float, default=1.0,
                    help="sampling temperature (> 0) of every log-prob")
parser.add_argument("--missing_eot_penalty", type=float, default=-1.0, help="score of a response without eot")
parser.add_argument("--reward_clip", type=float, default=0.0, help="clip the RM score to [-c, c] (0: off)")
# KL penalty to the SFT model
parser.add_argument("--kl_coef", type=float, default=0.05, help="β, the per-token KL penalty's weight")
parser.add_argument("--adaptive_kl", action="store_true", help="adapt β towards --target_kl (Ziegler et al.)")
parser.add_argument("--target_kl", type=float, default=6.0, help="with --adaptive_kl: KL per response, nats")
parser.add_argument("--horizon", type=int, default=10000,
                    help="with --adaptive_kl: controller horizon, episodes")
# PPO
parser.add_argument("--ppo_epochs", type=int, default=1, help="passes over each rollout batch")
parser.add_argument("--minibatch_size", type=int, default=16,
                    help="rollouts per gradient step, all processes")
parser.add_argument("--lr", type=float, default=5e-5, help="policy learning rate (AdamW, constant)")
parser.add_argument("--value_lr", type=float, default=1e-4,
                    help="value-function learning rate (AdamW, constant)")
parser.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay on matrices")
parser.add_argument("--grad_clip", type=float, default=1.0, help="max gradient norm per network (0: off)")
parser.add_argument("--cliprange", type=float, default=0.2, help="ε: ratio π/π_old clipped to [1-ε, 1+ε]")
parser.add_argument("--cliprange_value", type=float, default=0.2, help="ε_v of the clipped value loss")
parser.add_argument("--vf_coef", type=float, default=0.1, help="weight of the value loss")
parser.add_argument("--gamma", type=float, default=1.0, help="GAE discount γ over response tokens")
parser.add_argument("--lam", type=float, default=0.95, help="GAE λ")
# PPO-ptx: equation (2)'s second term
parser.add_argument("--ptx_coef", type=float, default=1.0, help="γ of equation (2) (0: plain PPO)")
parser.add_argument("--ptx_batch_size", type=int, default=4, help="pretraining sequences per policy step")
# output
parser.add_argument("--sample_interval", type=int, default=10,
                    help="print samples every N iterations (0: never)")
parser.add_argument("--num_samples", type=int, default=3, help="samples printed each --sample_interval")
parser.add_argument("--save_interval", type=int, default=10,
                    help="checkpoints every N iterations and at the end")
parser.add_argument("--out_dir", default="out/ppo", help="writes last.pt, model.pt, iter<N>.pt, log.jsonl")
parser.add_argument("--resume", action="store_true", help="continue exactly from out_dir/last.pt")
parser.add_argument("--seed", type=int, default=1337,
                    help="seed of prompts, samples, minibatches, ptx batches")
add_compute_args(parser, compile=False)


# -----------------------------------------------------------------------------
# The run

def load_models(args, device):
    """The policy and the frozen reference π_SFT from --policy, the frozen RM and the value function
    from --rm (or, resuming, policy and value from last.pt); dropout off in all.
    Returns (tokenizer, policy, value, ref, rm, last)."""
    sft = load_checkpoint(args.policy)
    if sft["model_config"].get("head") != "lm":
        raise SystemExit(f"error: {args.policy} is a reward/value checkpoint (scalar head); "
                         "--policy needs the SFT language model")
    tokenizer = sft["tokenizer"]
    rm_ckpt = load_reward_model(args.rm, tokenizer, args.policy)
    ref = model_from_checkpoint(sft, device, dropout=0.0).eval().requires_grad_(False)
    rm = model_from_checkpoint(rm_ckpt, device, dropout=0.0).eval().requires_grad_(False)
    last = load_checkpoint(os.path.join(args.out_dir, "last.pt")) if args.resume else None
    policy = model_from_checkpoint(last or sft, device, dropout=0.0)
    value = model_from_checkpoint(last["value"] if last else rm_ckpt, device, dropout=0.0)
    return tokenizer, policy, value, ref, rm, last


def load_prompts(path, enc, max_new_tokens, block_size):
    """The prompts' token lists, each checked to leave room for a response."""
    prompts = []
    for r in read_jsonl(path, ["prompt"]):
        ids = enc.encode_ordinary(r["prompt"])
        if not ids:
            raise SystemExit(f"error: {r['_where']}: empty prompt")
        if len(ids) + max_new_tokens > block_size:
            raise SystemExit(f"error: {r['_where']}: prompt of {len(ids)} tokens leaves no room for a "
                             f"{max_new_tokens}-token response in the {block_size}-token context "
                             "(shorten it or lower --max_new_tokens)")
        prompts.append(ids)
    return prompts


def load_ptx_stream(path, enc, block_size):
    """PPO-ptx's pretraining text as one token stream, documents joined by <|endoftext|>: sequence j
    is tokens [j·C, (j+1)·C] (C + 1 of them), as in pretraining. Returns (stream, sequences)."""
    docs = enc.encode_ordinary_batch(read_documents(path))
    stream = np.concatenate([np.array(ids + [enc.eot_token], dtype=np.int64) for ids in docs])
    stream = torch.from_numpy(stream)
    n_ptx = (len(stream) - 1) // block_size
    if n_ptx == 0:
        raise SystemExit(f"error: {path} holds fewer than {block_size + 1} tokens: not one pretraining "
                         "sequence")
    return stream, n_ptx


def print_samples(args, enc, prompts, idx, rollout, beta):
    """A few of the iteration's responses, with score, KL and the total reward they earned."""
    tokens, response_mask, ended = rollout["tokens"], rollout["response_mask"], rollout["ended"]
    P = tokens.size(1) - response_mask.size(1)
    seq_kl = torch.where(response_mask, rollout["logprobs"] - rollout["ref_logprobs"], 0.0).sum(1)
    for i in range(min(args.num_samples, tokens.size(0))):
        n = int(response_mask[i].sum())
        response = tokens[i, P:P + n - int(ended[i])].tolist()
        score, k = rollout["score"][i].item(), seq_kl[i].item()
        print0(f"--- sample {i} | score {score:.3f} | kl {k:.3f} | total {score - beta * k:.3f}"
               + ("" if ended[i] else " | no <|endoftext|>: penalty score"))
        print0(f"prompt:   {enc.decode(prompts[idx[i]])!r}\nresponse: {enc.decode(response)!r}")


LOGGED = ["score", "kl", "reward", "length", "eot", "entropy", "approx_kl", "clipfrac", "ratio_dev_first",
          "clipfrac_first", "vf_loss", "explained_var", "ptx_loss", "objective"]


def main(argv=None):
    args = parser.parse_args(argv)
    if args.temperature <= 0:
        parser.error("--temperature must be > 0: PPO needs the log-probs of the distribution it samples from")
    ddp, rank, world_size, device, ctx, scaler = stage_init(args)
    master, device_type = rank == 0, torch.device(device).type
    assert args.batch_size % args.minibatch_size == 0, \
        f"--batch_size {args.batch_size} must be a multiple of --minibatch_size {args.minibatch_size}"
    assert args.minibatch_size % world_size == 0, \
        f"--minibatch_size {args.minibatch_size} must be a multiple of the {world_size} processes"
    assert args.ptx_coef == 0 or args.ptx_batch_size % world_size == 0, \
        f"--ptx_batch_size {args.ptx_batch_size} must be a multiple of the {world_size} processes"
    rows_per_rank = args.batch_size // world_size

    # models
    tokenizer, policy, value, ref, rm, last = load_models(args, device)
    enc = get_tokenizer(tokenizer)
    eot, block_size = enc.eot_token, policy.config.block_size
    print0(f"policy: {policy.num_params() / 1e6:.2f}M parameters, context {block_size}, tokenizer "
           f"{tokenizer}; value function from {os.path.join(args.out_dir, 'last.pt') if last else args.rm}; "
           f"{'PPO-ptx, γ = ' + str(args.ptx_coef) if args.ptx_coef else 'plain PPO'}")

    # data
    prompts = load_prompts(args.prompts, enc, args.max_new_tokens, block_size)
    n_minibatches = args.batch_size // args.minibatch_size
    if args.ptx_coef > 0:
        ptx_stream, n_ptx = load_ptx_stream(args.ptx_data, enc, block_size)
    print0(f"data: {len(prompts)} prompts from {args.prompts}; {args.batch_size} rollouts/iteration, "
           f"{n_minibatches} minibatches x {args.ppo_epochs} epochs"
           + (f"; {n_ptx} pretraining sequences from {args.ptx_data}" if args.ptx_coef > 0 else ""))

    def ptx_batch(iteration):
        def batch(epoch, k):  # this rank's share of the global pretraining batch of that policy step
            step = (iteration * args.ppo_epochs + epoch) * n_minibatches + k
            idx = batch_indices(n_ptx, args.ptx_batch_size, step, args.seed, PTX)
            share = args.ptx_batch_size // world_size
            x = torch.stack([ptx_stream[j * block_size:(j + 1) * block_size + 1]
                             for j in idx[rank * share:(rank + 1) * share]]).to(device)
            return x[:, :-1], x[:, 1:]
        return batch

    # optimizers, resume
    policy_opt = policy.configure_optimizer(args.weight_decay, args.lr, device_type=device_type)
    value_opt = value.configure_optimizer(args.weight_decay, args.value_lr, device_type=device_type)
    iteration, beta = 0, args.kl_coef
    if last:
        policy_opt.load_state_dict(last["optimizer"])
        value_opt.load_state_dict(last["value_optimizer"])
        restore_scaler(scaler, last)
        iteration, beta = last["iteration"], last["beta"]
        set_rng_state(last["rng"])
        print0(f"resumed from {args.out_dir}/last.pt at iteration {iteration} (β = {beta:.4g})")
        del last
    raw_policy, raw_value = policy, value
    policy, value = (wrap_for_training(net, device, ddp=ddp) for net in (policy, value))
    log = run_log(args.out_dir, master, iteration if args.resume else None, key="iter",
                  total=args.iterations)
    saved = iteration if args.resume else None  # this run's last.pt, named if the loss turns NaN
    stale = [] if args.resume or not master else glob.glob(os.path.join(args.out_dir, "iter*.pt"))
    for path in stale:  # an earlier run's policies would pass for this one's in evaluate.py --curve
        os.remove(path)
    if stale:
        print0(f"removed {len(stale)} iter<N>.pt of an earlier run from {args.out_dir}")

    def save(iteration):
        assert_ranks_agree(raw_policy, raw_value)
        rng = rng_state()  # every rank's
        if not master:
            return
        meta = dict(tokenizer=tokenizer, iteration=iteration, args=vars(args))  # evaluate --curve reads args
        save_checkpoint(os.path.join(args.out_dir, f"iter{iteration}.pt"), raw_policy, **meta)
        save_checkpoint(os.path.join(args.out_dir, "model.pt"), raw_policy, **meta)
        save_checkpoint(os.path.join(args.out_dir, "last.pt"), raw_policy, policy_opt, scaler,
                        **meta, beta=beta, rng=rng,
                        value={"model": raw_value.state_dict(), "model_config": asdict(raw_value.config)},
                        value_optimizer=value_opt.state_dict())

    def sync():
        if device_type == "cuda":
            torch.cuda.synchronize()

    # the loop: sample, score, update
    stats = None
    while iteration < args.iterations:
        t0 = time.time()
        idx = batch_indices(len(prompts), args.batch_size, iteration, args.seed, PROMPTS)
        idx = idx[rank * rows_per_rank:(rank + 1) * rows_per_rank]
        generator = torch.Generator(device).manual_seed(seed_of(args.seed, ROLLOUT, iteration, rank))
        with ctx:  # plain sampling at --temperature from the current policy, KV cache
            tokens, mask, _, response_mask = generate(raw_policy, [prompts[i] for i in idx], args.max_new_tokens,
                                                      eot, args.temperature, generator=generator)
        sync()
        t1 = time.time()
        rollout = score_rollouts(raw_policy, ref, raw_value, rm, tokens, mask, response_mask, eot, args, ctx,
                                 chunk=args.minibatch_size // world_size)
        sync()
        t2 = time.time()
        stats = ppo_update(policy, value, (policy_opt, value_opt), rollout, beta, iteration, args, ctx,
                           scaler, ptx_batch(iteration) if args.ptx_coef > 0 else None, saved)
        t3 = time.time()
        iteration += 1
        logged = [k for k in LOGGED if k != "ptx_loss" or args.ptx_coef > 0]
        log({"iter": iteration, **{k: stats[k] for k in logged}, "beta": beta,
             "t_rollout": round(t1 - t0, 2), "t_score": round(t2 - t1, 2), "t_update": round(t3 - t2, 2)})
        if master and args.sample_interval and iteration % args.sample_interval == 0:
            print_samples(args, enc, prompts, idx, rollout, beta)
        if args.adaptive_kl:  # the controller sees the global batch's mean KL, identical on every rank
            beta = adaptive_kl_coef(beta, stats["kl"], args.target_kl, args.batch_size, args.horizon)
        if iteration % args.save_interval == 0 or iteration == args.iterations:
            save(iteration)
            saved = iteration

    if ddp:
        del policy, value  # the DDP wrappers hold the process group: free them first, or exit can abort
    compute_cleanup()
    return stats


if __name__ == "__main__":
    main()
