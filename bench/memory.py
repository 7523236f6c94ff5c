"""
Expected GPU memory per process for SFT, RM and PPO(-ptx) at each GPT-2 size, computed from the model
shape and the batch settings (an estimate to plan with, not a measurement; the README's GPU recipe
quotes it).

    python bench/memory.py                       # the README's recipe: 8 GPUs, bf16 autocast
    python bench/memory.py --nproc 1 --seq 768   # one GPU, shorter sequences

Assumptions, written out so they can be checked:
- a trained model keeps fp32 weights, fp32 gradients and AdamW's two fp32 moments: 16 bytes a
  parameter on every DDP process (DDP replicates; nothing is sharded). A frozen one (PPO's reference and
  reward model): 4 bytes a parameter (fp32 weights, bf16 autocast computes from them).
- activations kept for backward, per layer and token, ~34·d bytes in bf16 (Korthikanti et al. 2022,
  "Reducing activation recomputation", without the attention-matrix term, which the fused
  scaled_dot_product_attention kernel does not store); logits: bf16 values, fp32 log-softmax and its
  gradient, 10 bytes per token and vocabulary entry.
- the sampler's KV cache: keys and values in bf16 for every layer and position of the rollout batch.
- plus about 1 GiB for the CUDA context, allocator slack and workspaces.
"""
import argparse

GPT2 = {"gpt2 (124M)": (12, 768), "gpt2-medium (355M)": (24, 1024), "gpt2-large (774M)": (36, 1280),
        "gpt2-xl (1.5B)": (48, 1600)}
V, CTX, GiB = 50257, 1024, 2**30

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--nproc", type=int, default=8,
                    help="DDP processes (GPUs); per-process batches are the global ones divided by this")
parser.add_argument("--seq", type=int, default=1024,
                    help="tokens per sequence (prompt + response) in SFT, RM and PPO updates")
parser.add_argument("--sft_micro_batch", type=int, default=4,
                    help="sft.py --micro_batch_size: sequences per forward pass per process")
parser.add_argument("--rm_micro_batch", type=int, default=2,
                    help="reward.py --micro_batch_size: rankings per forward pass per process (x K "
                         "completions)")
parser.add_argument("--k", type=int, default=2, help="completions per ranking (2 for HH-RLHF pairs)")
parser.add_argument("--ppo_batch", type=int, default=64,
                    help="ppo.py --batch_size: rollouts per iteration over all processes (sampled at once)")
parser.add_argument("--ppo_minibatch", type=int, default=16,
                    help="ppo.py --minibatch_size: rollouts per gradient step over all processes")
parser.add_argument("--ptx_batch", type=int, default=8,
                    help="ppo.py --ptx_batch_size: pretraining sequences per policy step over all processes "
                         "(0: plain PPO)")
args = parser.parse_args()


def n_params(n_layer, d):
    return 12 * n_layer * d * d + 13 * n_layer * d + V * d + CTX * d


def activations(n_layer, d, sequences, tokens, logits=True):
    return sequences * tokens * (34 * d * n_layer + (10 * V if logits else 0))


print(f"per-process memory estimate, GiB ({args.nproc} processes, {args.seq}-token sequences, bf16 autocast, "
      "AdamW)")
print(f"| model | parameters | SFT (micro-batch {args.sft_micro_batch}) | RM (micro-batch "
      f"{args.rm_micro_batch} x K={args.k}) | PPO-ptx (rollouts {args.ppo_batch // args.nproc}, minibatch "
      f"{max(1, args.ppo_minibatch // args.nproc)}, ptx "
      f"{max(1, args.ptx_batch // args.nproc) if args.ptx_batch else 0}) |")
print("|---|---|---|---|---|")
for name, (n_layer, d) in GPT2.items():
    n = n_params(n_layer, d)
    sft = 16 * n + activations(n_layer, d, args.sft_micro_batch, args.seq)
    rm = 16 * n + activations(n_layer, d, args.rm_micro_batch * args.k, args.seq, logits=False)
    mb, ptx = max(1, args.ppo_minibatch // args.nproc), (max(1, args.ptx_batch // args.nproc) if args.ptx_batch else 0)
    models = 16 * n + 16 * n + 4 * n + 4 * n  # policy and value trained; reference and RM frozen
    update = activations(n_layer, d, mb, args.seq) + activations(n_layer, d, mb, args.seq,
                                                                 logits=False) + activations(n_layer, d, ptx,
                                                                                             CTX)
    rollout = 2 * n_layer * (args.ppo_batch // args.nproc) * args.seq * d * 2 + (args.ppo_batch // args.nproc) * V * 4
    ppo = models + max(update, rollout)  # sampling and the update never hold their buffers at once
    print(f"| {name} | {n / 1e6:.0f}M | {sft / GiB + 1:.1f} | {rm / GiB + 1:.1f} | {ppo / GiB + 1:.1f} |")
