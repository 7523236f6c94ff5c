"""
Sampling speed: our KV-cache `generate` (model.py) vs Hugging Face `transformers`
`GPT2LMHeadModel.generate`, on the same random-init GPT-2, same weights, same batch, same prompt
length, same number of new tokens, fp32, pure sampling at temperature 1 (no top-k, no top-p).
Both sides must produce exactly batch x new_tokens tokens: Hugging Face gets eos_token_id=None,
ours gets eot = vocab_size, an id outside the vocabulary that can never be sampled (it is only
used as padding, and equal-length prompts need none). The script checks both token counts.

    pip install -r bench/requirements.txt
    python bench/generate.py --preset tiny --threads 2     # 4 layers, 128 dims, vocab 2048
    python bench/generate.py --preset gpt2 --threads 2     # the 124M shape, vocab 50257
    python bench/generate.py --preset tiny --device cuda

Prints the versions, the config, tokens/s of each (median over --repeats timed runs after one
warm-up, the two interleaved) and, last, `ratio ours/transformers: X.XXx`.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from model import from_pretrained, generate

PRESETS = {  # n_layer, n_head, n_embd, vocab_size, block_size
    "tiny": (4, 4, 128, 2048, 256),  # the default world's model
    "gpt2": (12, 12, 768, 50257, 1024),  # GPT-2 124M
}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
# model shape: a preset, any flag given overrides it
parser.add_argument("--preset", choices=PRESETS, default="tiny", help="tiny = 4 layers/4 heads/128 dims/vocab 2048/block 256; gpt2 = 12/12/768/50257/1024")
parser.add_argument("--n_layer", type=int, help="transformer blocks (default: from --preset)")
parser.add_argument("--n_head", type=int, help="attention heads (default: from --preset)")
parser.add_argument("--n_embd", type=int, help="model width (default: from --preset)")
parser.add_argument("--vocab_size", type=int, help="vocabulary size (default: from --preset)")
parser.add_argument("--block_size", type=int, help="context length (default: from --preset)")
# workload
parser.add_argument("--batch_size", type=int, default=8, help="prompts sampled together")
parser.add_argument("--prompt_len", type=int, default=32, help="tokens in each (random) prompt")
parser.add_argument("--new_tokens", type=int, default=64, help="tokens sampled per prompt; both sides produce exactly this many")
parser.add_argument("--repeats", type=int, help="timed runs of each, after one warm-up; the median is reported (default: 20 tiny, 5 gpt2)")
# machine
parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both models run (fp32 either way)")
parser.add_argument("--seed", type=int, default=0, help="seed of the weights and prompts")
args = parser.parse_args()

for key, value in zip(("n_layer", "n_head", "n_embd", "vocab_size", "block_size"), PRESETS[args.preset]):
    if getattr(args, key) is None:
        setattr(args, key, value)
assert args.n_embd % args.n_head == 0, "--n_embd must be a multiple of --n_head"
assert args.prompt_len + args.new_tokens <= args.block_size, "--prompt_len + --new_tokens must fit in --block_size"
args.repeats = args.repeats or (5 if args.preset == "gpt2" else 20)
assert args.repeats >= 1, "--repeats must be at least 1"
if args.device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("error: --device cuda but torch sees no GPU")

import transformers  # after argparse, so --help works without it

transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(args.threads)
device = torch.device(args.device)

# -----------------------------------------------------------------------------
# One random GPT-2, twice: Hugging Face's, and ours loaded from its save_pretrained folder

torch.manual_seed(args.seed)
hf_config = transformers.GPT2Config(vocab_size=args.vocab_size, n_positions=args.block_size, n_embd=args.n_embd,
                                    n_layer=args.n_layer, n_head=args.n_head, bos_token_id=None, eos_token_id=None)
theirs = transformers.GPT2LMHeadModel(hf_config).float().eval()
with tempfile.TemporaryDirectory() as folder:
    theirs.save_pretrained(folder)
    ours = from_pretrained(folder).eval()
theirs, ours = theirs.to(device), ours.to(device)

B, P, N, V = args.batch_size, args.prompt_len, args.new_tokens, args.vocab_size
prompt = torch.randint(0, V - 1, (B, P), generator=torch.Generator().manual_seed(args.seed)).to(device)
with torch.no_grad():  # same weights: same logits
    max_diff = (ours(prompt) - theirs(input_ids=prompt).logits).abs().max().item()
assert max_diff < 1e-4, f"the two models disagree by {max_diff:.2e}: not the same weights"

# -----------------------------------------------------------------------------
# The two samplers, each returning how many new tokens it produced

prompt_lists = prompt.tolist()
hf_generation = transformers.GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=N,
                                              eos_token_id=None, pad_token_id=None, num_beams=1)
attention_mask = torch.ones_like(prompt)


def run_ours():
    tokens, _, logprobs, _ = generate(ours, prompt_lists, N, eot=V)  # eot = V: never sampled, so no early stop
    return logprobs.numel()


def run_theirs():
    out = theirs.generate(input_ids=prompt, attention_mask=attention_mask, generation_config=hf_generation)
    return out[:, P:].numel()


def timed(fn):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n, time.perf_counter() - t0


samplers = {"ours": run_ours, "transformers": run_theirs}
for name, fn in samplers.items():  # warm-up, and the token-count check
    n, _ = timed(fn)
    assert n == B * N, f"{name} produced {n} tokens, expected batch x new_tokens = {B * N}"
times = {name: [] for name in samplers}
for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
    for name, fn in samplers.items():
        times[name].append(timed(fn)[1])
tok_s = {name: B * N / statistics.median(t) for name, t in times.items()}

# -----------------------------------------------------------------------------

cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor()) \
    if os.path.exists("/proc/cpuinfo") else platform.processor()
print(f"torch {torch.__version__} | transformers {transformers.__version__} | python {platform.python_version()}")
print(f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f" ({cpu}, {args.threads} threads)"))
print(f"model {args.preset}: n_layer {args.n_layer} | n_head {args.n_head} | n_embd {args.n_embd} | vocab_size {args.vocab_size} "
      f"| block_size {args.block_size} | fp32 | max logit diff {max_diff:.1e}")
print(f"workload: batch {B} | prompt {P} | new tokens {N} | temperature 1, no top-k/top-p | median of {args.repeats} after 1 warm-up")
for name in samplers:
    ms = sorted(t * 1e3 for t in times[name])
    print(f"{name:>12}: {tok_s[name]:10,.0f} tok/s   (ms per run: median {statistics.median(ms):.0f}, min {ms[0]:.0f}, max {ms[-1]:.0f})")
print(f"ratio ours/transformers: {tok_s['ours'] / tok_s['transformers']:.2f}x")
