"""
Step 3 of InstructGPT (paper §3.5, "Reinforcement learning"): fine-tune the SFT policy with PPO against
the reward model in a bandit environment (a prompt, one sampled response, its score, episode over), with a
per-token KL penalty to the frozen SFT model. PPO-ptx also mixes pretraining gradients in: equation (2).

    python ppo.py                                          # PPO-ptx on the default world: out/sft + out/rm -> out/ppo
    python ppo.py --ptx_coef 0 --out_dir out/ppo-noptx     # plain PPO
    torchrun --standalone --nproc_per_node=8 ppo.py ...
    python ppo.py --resume                                 # continue an interrupted run exactly
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
from torch.nn.parallel import DistributedDataParallel as DDP

from common import (check_finite, compute_cleanup, compute_init, elastic_resume, last_token_index,
                    load_reward_model, read_documents, read_jsonl, restore_scaler, rng_state,
                    run_log, set_rng_state)
from model import (generate, get_tokenizer, load_checkpoint, model_from_checkpoint, sampling_logits,
                   save_checkpoint, token_logprobs)

# -----------------------------------------------------------------------------
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
# data
parser.add_argument("--prompts", default="data/world/ppo_prompts.jsonl", help="PPO prompts: JSONL with a 'prompt' field (other fields ignored)")
parser.add_argument("--ptx_data", default="data/world/corpus_train.txt", help="pretraining text for PPO-ptx: one document per line, or a .jsonl of {text}")
# models
parser.add_argument("--policy", default="out/sft/model.pt", help="the SFT checkpoint (LM head): the initial policy and the frozen reference π_SFT of the KL penalty")
parser.add_argument("--rm", default="out/rm/model.pt", help="the reward-model checkpoint (scalar head, normalised): scores responses; the value function starts from it (paper)")
# rollouts: the bandit environment
parser.add_argument("--iterations", type=int, default=50, help="PPO iterations: each samples a rollout batch, scores it, then updates on it (50 on the default world: about where the held-out labelers' win rate stops rising while the RM score keeps climbing; README, Over-optimization)")
parser.add_argument("--batch_size", type=int, default=64, help="rollouts (prompts, one response each) per iteration over all processes")
parser.add_argument("--max_new_tokens", type=int, default=48, help="response length limit in tokens (<|endoftext|> included)")
parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0); every log-prob (policy, old, reference) is taken at it")
parser.add_argument("--missing_eot_penalty", type=float, default=-1.0, help="score given instead of the RM's to a response that never emits <|endoftext|> within --max_new_tokens (the RM is normalised so demonstrations score 0; keep this below what a poor finished answer scores)")
parser.add_argument("--reward_clip", type=float, default=0.0, help="clip the RM score to [-c, c] (0: off)")
# KL penalty to the SFT model
parser.add_argument("--kl_coef", type=float, default=0.05, help="β: weight of the per-token KL penalty to π_SFT (fixed, as in the paper; the initial β with --adaptive_kl)")
parser.add_argument("--adaptive_kl", action="store_true", help="adapt β towards --target_kl with the proportional controller of Ziegler et al. (2019) instead of keeping it fixed")
parser.add_argument("--target_kl", type=float, default=6.0, help="with --adaptive_kl: target KL to π_SFT per response (summed over its tokens, nats)")
parser.add_argument("--horizon", type=int, default=10000, help="with --adaptive_kl: controller horizon in episodes (β moves at most 20%% per horizon)")
# PPO
parser.add_argument("--ppo_epochs", type=int, default=4, help="passes over each rollout batch")
parser.add_argument("--minibatch_size", type=int, default=16, help="rollouts per gradient step over all processes (batch_size/minibatch_size steps per epoch)")
parser.add_argument("--lr", type=float, default=5e-5, help="policy learning rate (AdamW, constant)")
parser.add_argument("--value_lr", type=float, default=1e-4, help="value-function learning rate (AdamW, constant; its own optimizer)")
parser.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay on matrices, both networks")
parser.add_argument("--grad_clip", type=float, default=1.0, help="clip each network's gradient norm to this (0: off)")
parser.add_argument("--cliprange", type=float, default=0.2, help="ε of the clipped surrogate: the ratio π/π_old is clipped to [1-ε, 1+ε]")
parser.add_argument("--cliprange_value", type=float, default=0.2, help="the value prediction moves at most this far from its rollout value in the clipped value loss")
parser.add_argument("--vf_coef", type=float, default=0.1, help="weight of the value loss in the total loss")
parser.add_argument("--gamma", type=float, default=1.0, help="GAE discount γ over response tokens")
parser.add_argument("--lam", type=float, default=0.95, help="GAE λ")
# PPO-ptx: equation (2)'s second term
parser.add_argument("--ptx_coef", type=float, default=1.0, help="γ of equation (2): weight of the pretraining log-likelihood in each policy step (the paper's 27.8 is for its scale); 0 = plain PPO, no pretraining forward at all")
parser.add_argument("--ptx_batch_size", type=int, default=4, help="pretraining sequences (context-length chunks of --ptx_data) per policy step over all processes")
# output
parser.add_argument("--sample_interval", type=int, default=10, help="print a few sampled responses with score / kl / total every this many iterations (0: never)")
parser.add_argument("--num_samples", type=int, default=3, help="how many responses to print at each --sample_interval")
parser.add_argument("--save_interval", type=int, default=10, help="every this many iterations (and at the end) write last.pt (resume), model.pt and iter<N>.pt (the policy alone)")
parser.add_argument("--out_dir", default="out/ppo", help="writes last.pt, model.pt (the policy, loadable like an SFT checkpoint), iter<N>.pt, log.jsonl")
parser.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt: policy, value, both optimizers, iteration, β and RNG")
parser.add_argument("--seed", type=int, default=1337, help="seed of prompt order, sampling, minibatches and pretraining batches")
# system
parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="autocast precision (auto: bf16 on GPUs that have it, else fp16 with a grad scaler; fp32 on CPU)")

# -----------------------------------------------------------------------------
# the maths: pure functions, tested against hand-computed values in tests/test_ppo.py


def kl_penalized_rewards(logprobs, ref_logprobs, score, response_mask, beta):
    """Per-token reward of the bandit episode (paper §3.5; Ziegler et al. 2019):
        R_t = −β·(log π_φ(y_t|x, y_<t) − log π_SFT(y_t|x, y_<t))  on every response token,
        + r_θ(x, y)                                             at the last real token (the <|endoftext|>),
    zero on padding. Summed over t it is r_θ(x, y) − β·log(π_φ(y|x)/π_SFT(y|x)), equation (2)'s first term.
    logprobs, ref_logprobs, response_mask (B, N); score (B,). Returns (rewards (B, N), kl (B, N) the masked log-ratio)."""
    kl = torch.where(response_mask, logprobs - ref_logprobs, 0.0)
    last = response_mask.long().sum(1) - 1  # responses are contiguous from column 0
    rewards = (-beta * kl).scatter_add(1, last[:, None], score[:, None].to(kl.dtype))
    return rewards, kl


def gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation over the response tokens, backwards from the last one:
        δ_t = R_t + γ·V(s_{t+1}) − V(s_t),   A_t = δ_t + γλ·A_{t+1},
    with R, V and A 0 past the last real token (R too: a reward on padding would reach the last real
    token's advantage through A_{t+1}).
    Returns (advantages, returns = advantages + values): the returns, taken before whitening, are the value targets."""
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
    """Sum a tensor over DDP ranks (in place); a single process returns it as is."""
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
    n_tokens: the response tokens of the whole (global) minibatch, so DDP ranks' shares add up to the mean.
    Returns (loss, stats) with stats the same shares: clipfrac, approx_kl = ½(log ρ)², and the largest |ρ − 1|."""
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
    """Clipped value loss: the prediction may move at most ε_v from its rollout value V_old before the loss stops rewarding it:
        L_V = ½·Σ_t max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε_v, ε_v) − R_t)²) / n_tokens
    Returns (loss, stats: vf_clipfrac, the share of tokens where the clipped branch is larger)."""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * torch.where(mask, torch.maximum(unclipped_loss, clipped_loss), 0.0).sum() / n_tokens
    with torch.no_grad():
        stats = {"vf_clipfrac": (mask & (clipped_loss > unclipped_loss)).sum() / n_tokens}
    return loss, stats


def pretraining_logprob(logits, targets, n_tokens):
    """Equation (2)'s second expectation, E_{x~D_pretrain}[log π_φ(x)]: the summed next-token log-likelihood of a
    pretraining batch / n_tokens (the global batch's tokens). The plain LM distribution (no temperature): it is the
    pretraining objective, the negative of the LM cross-entropy that is logged as ptx_loss."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).sum() / n_tokens


def objective(score, kl, beta, ptx_logprob, ptx_coef):
    """Equation (2), the quantity PPO-ptx maximises, estimated on a batch:
        objective(φ) = E_{(x,y)~π_φ}[r_θ(x,y) − β·log(π_φ(y|x)/π_SFT(y|x))] + γ·E_{x~D_pretrain}[log π_φ(x)]
    score (B,) r_θ(x, y); kl (B,) log(π_φ(y|x)/π_SFT(y|x)), the per-token log-ratios summed; ptx_logprob the mean
    per-token log π_φ(x) of a pretraining batch; γ = ptx_coef (0: plain PPO's objective)."""
    return (score - beta * kl).mean() + ptx_coef * ptx_logprob


def ppo_ptx_loss(pg_loss, vf_loss, ptx_logprob, vf_coef, ptx_coef):
    """The loss one PPO-ptx step minimises, equation (2) turned into a loss:
        objective(φ) = E_{(x,y)~π_φ}[r_θ(x,y) − β·log(π_φ(y|x)/π_SFT(y|x))] + γ·E_{x~D_pretrain}[log π_φ(x)]
    The first expectation is maximised by the clipped surrogate pg_loss, whose advantages come from the KL-penalised
    rewards; the second enters directly, scaled by γ, in the same step. vf_loss trains the separate value network
    (disjoint parameters, so it does not change the policy's gradient):
        loss = pg_loss + vf_coef·vf_loss − γ·ptx_logprob"""
    return pg_loss + vf_coef * vf_loss - ptx_coef * ptx_logprob


def adaptive_kl_coef(beta, kl, target, n_steps, horizon):
    """Ziegler et al. (2019)'s proportional controller, after a batch of n_steps episodes whose mean KL is kl:
        e = clip(KL / KL_target − 1, −0.2, 0.2),   β ← β·(1 + e·n_steps / horizon)"""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)


def final_score(rm_score, ended, missing_eot_penalty, reward_clip=0.0):
    """The score of an episode: the RM's (clipped to ±reward_clip if set), or the fixed penalty if the response never ended."""
    if reward_clip > 0:
        rm_score = rm_score.clamp(-reward_clip, reward_clip)
    return torch.where(ended, rm_score, torch.full_like(rm_score, missing_eot_penalty))


# -----------------------------------------------------------------------------
# randomness: every draw is a fixed function of (seed, iteration, ...), which makes resume exact

ROLLOUT, MINIBATCH, PROMPTS, PTX = range(4)  # independent random streams


def seed_of(*parts):
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def batch_indices(n_items, batch_size, step, seed, stream):
    """The global batch of step `step`: consecutive slices of a fresh permutation of the items per pass over them."""
    perms, out = {}, []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(k, n_items)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed_of(seed, stream, epoch))).tolist()
        out.append(perms[epoch][i])
    return out


def minibatch_rows(batch_size, minibatch_size, rank, world_size, generator):
    """A random split of the global rollout batch into batch_size/minibatch_size minibatches, the same whatever the
    number of processes: the batch is cut into blocks of n_minibatches consecutive rows and each block gives one row,
    at random, to every minibatch. Rank r holds global rows [r·B/W, (r+1)·B/W), i.e. whole blocks, so each rank's
    share of every minibatch is minibatch_size/W rows. Returns the rank's local row indices of each minibatch."""
    n_minibatches, blocks_per_rank = batch_size // minibatch_size, minibatch_size // world_size
    choice = torch.rand(minibatch_size, n_minibatches, generator=generator).argsort(1)  # (blocks, n_minibatches)
    mine = choice[rank * blocks_per_rank:(rank + 1) * blocks_per_rank]
    return [torch.arange(blocks_per_rank) * n_minibatches + mine[:, k] for k in range(n_minibatches)]


# -----------------------------------------------------------------------------
# one PPO iteration: score the rollouts, then update on them


def right_align(tokens, mask, response_mask):
    """Rollout rows (left-padded prompt, then response, padded after its end) -> the same rows with all their padding
    moved to the end, where causal attention cannot see it: no attention mask is needed (positions are 0, 1, ... as
    generate() gave the real tokens), and a minibatch is cut to its own longest row instead of the batch's longest
    prompt plus longest response. Returns (aligned (B, T), lengths (B,), keep (B, T): the positions whose next token is a
    response token; taken row by row they are the response tokens in order, i.e. response_mask's True entries)."""
    T, P = tokens.size(1), tokens.size(1) - response_mask.size(1)
    prompt_len = mask[:, :P].sum(1)
    lengths = prompt_len + response_mask.sum(1)
    shift = P - prompt_len  # leading pads
    cols = torch.arange(T, device=tokens.device)
    aligned = tokens.gather(1, (cols + shift[:, None]).clamp(max=T - 1))  # past a row's length: any real id, never read
    keep = (cols >= prompt_len[:, None] - 1) & (cols < lengths[:, None] - 1)
    return aligned, lengths, keep


def on_response(flat, response_mask):
    """Values of the response tokens, in order row by row (n,) -> their (B, N) grid, 0 on padding (differentiable)."""
    return flat.new_zeros(response_mask.shape).masked_scatter(response_mask, flat)


@torch.no_grad()
def score_rollouts(policy, ref, value, rm, tokens, mask, response_mask, eot, args, ctx=nullcontext(), chunk=64):
    """One teacher-forced forward per model over prompt + response, in chunks of rows: log π_φ_old(y_t|·) (the same
    forward, same temperature, as the update's, so the first ratio is exactly 1), log π_SFT(y_t|·), the values
    V(s_t) read at the token before each response token, and the score. Returns the rollout as a dict of tensors."""
    P = tokens.size(1) - response_mask.size(1)
    aligned, lengths, keep = right_align(tokens, mask, response_mask)
    parts = {"logprobs": [], "ref_logprobs": [], "values": [], "rm_score": []}
    order = lengths.argsort(stable=True)  # chunks of rows of similar length, each cut to its longest
    for rows in order.split(chunk):
        T = int(lengths[rows].max())
        t, k, rmask = aligned[rows, :T], keep[rows, :T], response_mask[rows]
        targets = tokens[rows, P:][rmask]
        with ctx:
            parts["logprobs"].append(on_response(token_logprobs(policy(t, keep=k), targets, args.temperature), rmask))
            parts["ref_logprobs"].append(on_response(token_logprobs(ref(t, keep=k), targets, args.temperature), rmask))
            parts["values"].append(on_response(value(t)[k].float(), rmask))
            parts["rm_score"].append(rm(t).gather(1, (lengths[rows] - 1)[:, None]).squeeze(1).float())
    rollout = {k: torch.cat(v)[order.argsort()] for k, v in parts.items()}  # back in the rows' order
    ended = tokens.gather(1, last_token_index(mask)[:, None]).squeeze(1) == eot
    rollout["score"] = final_score(rollout["rm_score"], ended, args.missing_eot_penalty, args.reward_clip)
    rollout.update(tokens=tokens, mask=mask, response_mask=response_mask, ended=ended)
    return rollout


def ppo_update(policy, value, optimizers, rollout, beta, iteration, args, ctx=nullcontext(),
               scaler=None, ptx=None, saved=None):
    """PPO on one rollout batch (this rank's rows of it): KL-penalised rewards, GAE, whitening over the global batch,
    then --ppo_epochs passes of minibatch steps of the total loss (policy and value together; the pretraining term
    too when ptx_coef > 0, ptx(epoch, k) giving this rank's share of that step's pretraining batch as (x, y)).
    policy and value may be DDP-wrapped; saved: the iteration of this run's last.pt (None: none
    yet), named if the loss turns NaN. Returns global (all-reduced) statistics as floats."""
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    tokens, mask, response_mask = rollout["tokens"], rollout["mask"], rollout["response_mask"]
    assert tokens.size(0) * world_size == args.batch_size, f"rollout of {tokens.size(0)} rows x {world_size} processes != --batch_size {args.batch_size}"
    P, device = tokens.size(1) - response_mask.size(1), tokens.device
    aligned, lengths, keep = right_align(tokens, mask, response_mask)
    old_logprobs, old_values = rollout["logprobs"], torch.where(response_mask, rollout["values"], 0.0)

    rewards, kl = kl_penalized_rewards(old_logprobs, rollout["ref_logprobs"], rollout["score"], response_mask, beta)
    advantages, returns = gae_advantages(rewards, old_values, response_mask, args.gamma, args.lam)
    advantages = whiten(advantages, response_mask)
    _, var_returns = masked_mean_var(returns, response_mask)
    _, var_error = masked_mean_var(returns - old_values, response_mask)
    seq_kl = kl.sum(1)
    n = args.batch_size
    totals = all_sum(torch.stack([rollout["score"].sum(), seq_kl.sum(), response_mask.sum(), rollout["ended"].sum(),
                                  rollout["rm_score"].sum()]).float()) / n
    stats = {"score": totals[0].item(), "kl": totals[1].item(), "reward": (totals[0] - beta * totals[1]).item(),
             "length": totals[2].item(), "eot": totals[3].item(), "rm_score": totals[4].item(),
             "explained_var": (1 - var_error / var_returns).item() if var_returns > 0 else 0.0}

    names = ["loss", "pg_loss", "vf_loss", "ptx_logprob", "clipfrac", "approx_kl", "entropy", "vf_clipfrac"]
    sums = torch.zeros(len(names), device=device)
    n_steps = 0
    for epoch in range(args.ppo_epochs):
        generator = torch.Generator().manual_seed(seed_of(args.seed, MINIBATCH, iteration, epoch))
        for k, rows in enumerate(minibatch_rows(args.batch_size, args.minibatch_size, rank, world_size, generator)):
            rows = rows.to(device)
            n_tokens = all_sum(response_mask[rows].sum().float())
            step_stats = torch.zeros(len(names), device=device)
            ratio_dev = torch.zeros((), device=device)  # the largest |ρ − 1| of this rank's rows
            # the minibatch in two passes, each over the rows of similar length cut to their longest: the same gradient
            # as one pass over all of them, much less padding
            halves = rows[lengths[rows].argsort(stable=True)].chunk(2)
            for h, part in enumerate(halves):
                for net in (policy, value):
                    if isinstance(net, DDP):
                        net.require_backward_grad_sync = h == len(halves) - 1  # all-reduce once, at the minibatch's last backward
                T = int(lengths[part].max())
                t, used, rmask = aligned[part, :T], keep[part, :T], response_mask[part]
                with ctx:
                    logits = policy(t, keep=used)  # (response tokens, V): the unembedding only where it is used
                    logprobs = on_response(token_logprobs(logits, tokens[part, P:][rmask], args.temperature), rmask)
                    values = on_response(value(t)[used].float(), rmask)
                    pg_loss, pg_stats = policy_loss(logprobs, old_logprobs[part], advantages[part], rmask, args.cliprange, n_tokens)
                    vf_loss, vf_stats = value_loss(values, old_values[part], returns[part], rmask, args.cliprange_value, n_tokens)
                    ptx_logprob = torch.zeros((), device=device)
                    if args.ptx_coef > 0 and h == 0:  # once a minibatch; plain PPO does no pretraining forward at all
                        x, y = ptx(epoch, k)
                        ptx_logprob = pretraining_logprob(policy(x), y, y.numel() * world_size)
                    loss = ppo_ptx_loss(pg_loss, vf_loss, ptx_logprob, args.vf_coef, args.ptx_coef)
                with torch.no_grad():
                    logp = F.log_softmax(sampling_logits(logits, args.temperature), dim=-1)
                    entropy = -(logp.exp() * logp).sum() / n_tokens
                step_stats += torch.stack([loss.detach(), pg_loss.detach(), vf_loss.detach(), ptx_logprob.detach(), pg_stats["clipfrac"],
                                           pg_stats["approx_kl"], entropy, vf_stats["vf_clipfrac"]]).float()
                ratio_dev = torch.maximum(ratio_dev, pg_stats["ratio_dev"].float())
                # DDP averages gradients over ranks; scaling by world_size turns that average back into the global sum / n_tokens
                (scaler.scale(loss * world_size) if scaler else loss * world_size).backward()
            step_stats = all_sum(step_stats)
            # every rank sees the same global loss and stops together
            check_finite(step_stats[0].item(), iteration + 1, args.out_dir, saved)
            if n_steps == 0:  # before any step the ratio is 1: a check that old log-probs come from the same forward
                stats["ratio_dev_first"] = all_max(ratio_dev).item()  # every rank's rows, not one's
                stats["clipfrac_first"] = step_stats[4].item()
            optimizer_steps((policy, value), optimizers, scaler, args.grad_clip)
            sums += step_stats
            n_steps += 1
    means = dict(zip(names, (sums / n_steps).tolist()))
    stats.update(means, ptx_loss=-means.pop("ptx_logprob"))
    stats["objective"] = objective(torch.tensor(stats["score"]), torch.tensor(stats["kl"]), beta, -stats["ptx_loss"], args.ptx_coef).item()
    return stats


def optimizer_steps(models, optimizers, scaler, grad_clip):
    """Unscale (fp16), clip each network's gradient norm, step both optimizers, one GradScaler update, zero the gradients."""
    for model, optimizer in zip(models, optimizers):
        if scaler:
            scaler.unscale_(optimizer)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for optimizer in optimizers:
        scaler.step(optimizer) if scaler else optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if scaler:
        scaler.update()


def assert_ranks_agree(*models):
    """DDP keeps every rank's weights identical; checked at each save by comparing fingerprints with rank 0's."""
    if not dist.is_initialized():
        return
    fingerprint = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()])
                               for model in models for p in model.state_dict().values()]).flatten()
    reference = fingerprint.clone()
    dist.broadcast(reference, 0)
    differ = all_sum((fingerprint != reference).any().float())
    if differ.item() > 0:
        raise SystemExit("error: the processes' weights have diverged (a DDP bug or non-deterministic hardware); not saving")


# -----------------------------------------------------------------------------
# the run

def main(argv=None):
    args = parser.parse_args(argv)
    if args.temperature <= 0:
        parser.error("--temperature must be > 0: PPO needs the log-probs of the distribution it samples from")
    ddp, rank, world_size, device, ctx, scaler = compute_init(args.device, args.dtype)
    args.resume = elastic_resume(args.out_dir, args.resume)  # a torchrun restart resumes too
    master = rank == 0
    print0 = lambda *a, **k: print(*a, **k, flush=True) if master else None
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    torch.manual_seed(args.seed)
    assert args.batch_size % args.minibatch_size == 0, f"--batch_size {args.batch_size} must be a multiple of --minibatch_size {args.minibatch_size}"
    assert args.minibatch_size % world_size == 0, f"--minibatch_size {args.minibatch_size} must be a multiple of the {world_size} processes"
    assert args.ptx_coef == 0 or args.ptx_batch_size % world_size == 0, f"--ptx_batch_size {args.ptx_batch_size} must be a multiple of the {world_size} processes"
    rows_per_rank = args.batch_size // world_size

    # -------------------------------------------------------------------------
    # models: the policy and the frozen reference from SFT, the RM and the value function from the RM; dropout off in all
    sft = load_checkpoint(args.policy)
    if sft["model_config"].get("head") != "lm":
        raise SystemExit(f"error: {args.policy} is a reward/value checkpoint (scalar head); --policy needs the SFT language model")
    tokenizer = sft["tokenizer"]
    rm_ckpt = load_reward_model(args.rm, tokenizer, args.policy)
    ref = model_from_checkpoint(sft, device, dropout=0.0).eval().requires_grad_(False)
    rm = model_from_checkpoint(rm_ckpt, device, dropout=0.0).eval().requires_grad_(False)
    last = load_checkpoint(os.path.join(args.out_dir, "last.pt")) if args.resume else None
    policy = model_from_checkpoint(last or sft, device, dropout=0.0)
    value = model_from_checkpoint(last["value"] if last else rm_ckpt, device, dropout=0.0)
    del sft, rm_ckpt
    enc = get_tokenizer(tokenizer)
    eot, block_size = enc.eot_token, policy.config.block_size
    print0(f"policy: {policy.num_params() / 1e6:.2f}M parameters, context {block_size}, tokenizer {tokenizer}; "
           f"value function from {os.path.join(args.out_dir, 'last.pt') if last else args.rm}; {'PPO-ptx, γ = ' + str(args.ptx_coef) if args.ptx_coef else 'plain PPO'}")

    # -------------------------------------------------------------------------
    # data
    records = read_jsonl(args.prompts, ["prompt"])
    prompts = []
    for r in records:
        ids = enc.encode_ordinary(r["prompt"])
        if not ids:
            raise SystemExit(f"error: {r['_where']}: empty prompt")
        if len(ids) + args.max_new_tokens > block_size:
            raise SystemExit(f"error: {r['_where']}: prompt of {len(ids)} tokens leaves no room for a {args.max_new_tokens}-token "
                             f"response in the {block_size}-token context (shorten it or lower --max_new_tokens)")
        prompts.append(ids)
    n_minibatches = args.batch_size // args.minibatch_size
    if args.ptx_coef > 0:  # documents joined by <|endoftext|>; sequence j is tokens [j·C, (j+1)·C] (C + 1 of them), as in pretraining
        ptx_stream = torch.from_numpy(np.concatenate([np.array(ids + [eot], dtype=np.int64)
                                                      for ids in enc.encode_ordinary_batch(read_documents(args.ptx_data))]))
        n_ptx = (len(ptx_stream) - 1) // block_size
        if n_ptx == 0:
            raise SystemExit(f"error: {args.ptx_data} holds fewer than {block_size + 1} tokens: not one pretraining sequence")
    print0(f"data: {len(prompts)} prompts from {args.prompts}; {args.batch_size} rollouts/iteration, {n_minibatches} minibatches x "
           f"{args.ppo_epochs} epochs" + (f"; {n_ptx} pretraining sequences from {args.ptx_data}" if args.ptx_coef > 0 else ""))

    def ptx_batch(iteration):
        def batch(epoch, k):  # this rank's share of the global pretraining batch of that policy step
            step = (iteration * args.ppo_epochs + epoch) * n_minibatches + k
            idx = batch_indices(n_ptx, args.ptx_batch_size, step, args.seed, PTX)
            share = args.ptx_batch_size // world_size
            x = torch.stack([ptx_stream[j * block_size:(j + 1) * block_size + 1] for j in idx[rank * share:(rank + 1) * share]]).to(device)
            return x[:, :-1], x[:, 1:]
        return batch

    # -------------------------------------------------------------------------
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
    if ddp:
        ids = [torch.device(device).index] if device_type == "cuda" else None
        policy, value = DDP(policy, device_ids=ids), DDP(value, device_ids=ids)
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
        meta = dict(tokenizer=tokenizer, iteration=iteration, args=vars(args))
        save_checkpoint(os.path.join(args.out_dir, f"iter{iteration}.pt"), raw_policy, **meta)  # args: evaluate --curve reads the RM
        save_checkpoint(os.path.join(args.out_dir, "model.pt"), raw_policy, **meta)
        save_checkpoint(os.path.join(args.out_dir, "last.pt"), raw_policy, policy_opt, scaler,
                        **meta, beta=beta, rng=rng,
                        value={"model": raw_value.state_dict(), "model_config": asdict(raw_value.config)},
                        value_optimizer=value_opt.state_dict())

    def sync():
        if device_type == "cuda":
            torch.cuda.synchronize()

    # -------------------------------------------------------------------------
    # training loop
    stats = None
    while iteration < args.iterations:
        t0 = time.time()
        idx = batch_indices(len(prompts), args.batch_size, iteration, args.seed, PROMPTS)[rank * rows_per_rank:(rank + 1) * rows_per_rank]
        generator = torch.Generator(device).manual_seed(seed_of(args.seed, ROLLOUT, iteration, rank))
        with ctx:  # plain sampling at --temperature from the current policy, KV cache
            tokens, mask, _, response_mask = generate(raw_policy, [prompts[i] for i in idx], args.max_new_tokens, eot,
                                                      args.temperature, generator=generator)
        sync()
        t1 = time.time()
        rollout = score_rollouts(raw_policy, ref, raw_value, rm, tokens, mask, response_mask, eot, args, ctx,
                                 chunk=args.minibatch_size // world_size)
        sync()
        t2 = time.time()
        stats = ppo_update(policy, value, (policy_opt, value_opt), rollout, beta, iteration, args, ctx, scaler,
                           ptx_batch(iteration) if args.ptx_coef > 0 else None, saved)
        t3 = time.time()
        iteration += 1
        log({"iter": iteration, "score": stats["score"], "kl": stats["kl"], "reward": stats["reward"], "length": stats["length"],
             "eot": stats["eot"], "entropy": stats["entropy"], "approx_kl": stats["approx_kl"], "clipfrac": stats["clipfrac"],
             "ratio_dev_first": stats["ratio_dev_first"], "clipfrac_first": stats["clipfrac_first"],
             "vf_loss": stats["vf_loss"], "explained_var": stats["explained_var"],
             **({"ptx_loss": stats["ptx_loss"]} if args.ptx_coef > 0 else {}), "objective": stats["objective"], "beta": beta,
             "t_rollout": round(t1 - t0, 2), "t_score": round(t2 - t1, 2), "t_update": round(t3 - t2, 2)})
        if master and args.sample_interval and iteration % args.sample_interval == 0:
            P = tokens.size(1) - response_mask.size(1)
            seq_kl = torch.where(response_mask, rollout["logprobs"] - rollout["ref_logprobs"], 0.0).sum(1)
            for i in range(min(args.num_samples, tokens.size(0))):
                n = int(response_mask[i].sum())
                response = tokens[i, P:P + n - int(rollout["ended"][i])].tolist()
                score, k = rollout["score"][i].item(), seq_kl[i].item()
                print0(f"--- sample {i} | score {score:.3f} | kl {k:.3f} | total {score - beta * k:.3f}"
                       + ("" if rollout["ended"][i] else " | no <|endoftext|>: penalty score"))
                print0(f"prompt:   {enc.decode(prompts[idx[i]])!r}\nresponse: {enc.decode(response)!r}")
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
