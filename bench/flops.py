"""
Model FLOPs utilisation of our training step: the FLOP/s it achieves, counted as model.flops_per_token does
(6·N per token + attention 12·n_layer·n_embd·T, PaLM appendix B), as a fraction of what this machine's dense
matmul reaches. On CPU there is no datasheet peak to divide by, so the reference is measured: torch.mm on
large squares, fp32 ("CPU MFU"); a second line gives torch.mm at the step's own MLP shape, the ceiling a model
this small can hope for. On CUDA the step runs under bf16 autocast (the training scripts' default there)
and MFU is against common.peak_flops (dense bf16 tensor-core peak), with the measured bf16 torch.mm beside it.

The step is sft.py's with --pretrain (loss on every token, no dropout): batch --batch_size sequences of
--seq_len tokens, forward, masked_lm_loss, backward, clip, AdamW (model.configure_optimizer).

    python bench/flops.py                          # tiny: 4 layers, 128 dims, vocab 2048; batch 16
    x 256 tokens python bench/flops.py --threads 1              # on a shared machine python
    bench/flops.py --preset gpt2 --batch_size 4 --seq_len 256    # the 124M shape python
    bench/flops.py --preset gpt2 --device cuda --batch_size 16 --seq_len 1024

Steps and matmul bursts are interleaved (step, mm, step, mm, ...), medians of --repeats after one warm-up.
Prints the versions, the config, the step and matmul rates and, last, `MFU ours/...: X.X%`.
"""
import argparse
import os
import statistics
import sys
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import add_model_args, header, interleaved, resolve_model_args  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
add_model_args(parser)
parser.add_argument("--batch_size", type=int, default=16,
                    help="sequences per step (sft.py --pretrain's default)")
parser.add_argument("--seq_len", type=int,
                    help="tokens per sequence (default: --block_size, as in pretraining)")
parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="auto: fp32 on CPU, bf16 autocast on CUDA")
parser.add_argument("--mm_size", type=int,
                    help="side of the square matrices of the reference torch.mm (default: 2048 on CPU, 8192 "
                         "on CUDA)")
parser.add_argument("--repeats", type=int, default=10,
                    help="timed steps (and matmul bursts), after one warm-up; medians are reported")
args = parser.parse_args()
device = resolve_model_args(args)
args.seq_len = args.seq_len or args.block_size
assert args.seq_len <= args.block_size, "--seq_len must fit in --block_size"
cuda = device.type == "cuda"
dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "float32": torch.float32,
         "bfloat16": torch.bfloat16}[args.dtype]
args.mm_size = args.mm_size or (8192 if cuda else 2048)

import sft  # noqa: E402  (the repository's sft.py: harness put the root on sys.path)
from common import optimizer_step, peak_flops  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

header(args)
torch.manual_seed(args.seed)
model = GPT(GPTConfig(block_size=args.block_size, vocab_size=args.vocab_size, n_layer=args.n_layer,
                      n_head=args.n_head, n_embd=args.n_embd)).to(device)
model.train()
# sft.py --pretrain: weight decay 0.1, lr 2e-3
optimizer = model.configure_optimizer(0.1, 2e-3, device_type=device.type)
B, T = args.batch_size, args.seq_len
data = torch.randint(0, args.vocab_size, (B, T + 1),
                     generator=torch.Generator().manual_seed(args.seed)).to(device)
x, y = data[:, :-1], data[:, 1:]
# as common.compute_init
ctx = torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def step():
    with ctx:
        loss = sft.masked_lm_loss(model(x), y, y.numel())
    loss.backward()
    loss.item()
    optimizer_step(model, optimizer, None, 1.0)


def matmuls(n, k, m, min_flops):
    """Enough torch.mm of (n, k) x (k, m) in dtype to do about min_flops; returns (callable, its FLOPs)."""
    a, b = (torch.randn(n, k, device=device, dtype=dtype), torch.randn(k, m, device=device, dtype=dtype))
    out = torch.empty(n, m, device=device, dtype=dtype)
    calls = max(1, round(min_flops / (2 * n * k * m)))
    def run():
        for _ in range(calls):
            torch.mm(a, b, out=out)
    return run, calls * 2 * n * k * m


step_flops = model.flops_per_token(T) * B * T
S = args.mm_size
square, square_flops = matmuls(S, S, S, step_flops / 2)
mlp, mlp_flops = matmuls(B * T, args.n_embd, 4 * args.n_embd, step_flops / 2)
times = interleaved({"step": step, "square": square, "mlp": mlp}, args.repeats, warmup=1, device=device)
rate = {"step": step_flops / statistics.median(times["step"]),
        "square": square_flops / statistics.median(times["square"]),
        "mlp": mlp_flops / statistics.median(times["mlp"])}

print(f"step: sft.py --pretrain's | batch {B} x {T} tokens | {model.num_params() / 1e6:.2f}M matmul "
      "parameters | "
      f"{step_flops / 1e9:,.1f} GFLOP per step | "
      f"{str(dtype).removeprefix('torch.')}{' autocast' if dtype != torch.float32 else ''} | "
      f"median of {args.repeats} after 1 warm-up, interleaved with the matmuls")
print(f"  training step: {statistics.median(times['step']) * 1e3:,.1f} ms, "
      f"{B * T / statistics.median(times['step']):,.0f} tok/s, "
      f"{rate['step'] / 1e9:,.1f} GFLOP/s")
print(f"  torch.mm {S}x{S} @ {S}x{S}: {rate['square'] / 1e9:,.1f} GFLOP/s   (the machine's dense matmul rate)")
print(f"  torch.mm {B * T}x{args.n_embd} @ {args.n_embd}x{4 * args.n_embd} (the step's MLP shape): "
      f"{rate['mlp'] / 1e9:,.1f} GFLOP/s "
      f"= {rate['step'] / rate['mlp']:.1%} of it reached by the step")
peak = peak_flops(device)
if cuda and peak:
    print(f"  datasheet peak ({torch.cuda.get_device_name()}, dense bf16): {peak / 1e12:,.0f} TFLOP/s; "
          "measured torch.mm reaches "
          f"{rate['square'] / peak:.1%} of it")
    print(f"MFU ours/datasheet peak: {rate['step'] / peak:.1%} (ours/measured torch.mm: "
          f"{rate['step'] / rate['square']:.1%})")
else:
    print(f"MFU ours/measured {str(dtype).removeprefix('torch.')} torch.mm: "
          f"{rate['step'] / rate['square']:.1%}")
