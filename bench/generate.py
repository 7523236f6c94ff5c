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
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (add_model_args, header, hf_config, interleaved, resolve_model_args,  # noqa: E402
                     same_weights_pair, timed)
from model import generate  # noqa: E402  (harness put the repository root on sys.path)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
add_model_args(parser)
# workload
parser.add_argument("--batch_size", type=int, default=8, help="prompts sampled together")
parser.add_argument("--prompt_len", type=int, default=32, help="tokens in each (random) prompt")
parser.add_argument("--new_tokens", type=int, default=64,
                    help="tokens sampled per prompt; both sides produce exactly this many")
parser.add_argument("--repeats", type=int,
                    help="timed runs of each, after one warm-up; the median is reported (default: 20 tiny, 5 "
                         "gpt2)")
args = parser.parse_args()
device = resolve_model_args(args)
assert args.prompt_len + args.new_tokens <= args.block_size, \
    "--prompt_len + --new_tokens must fit in --block_size"
args.repeats = args.repeats or (5 if args.preset == "gpt2" else 20)
assert args.repeats >= 1, "--repeats must be at least 1"

import transformers  # noqa: E402  (after argparse, so --help works without it)

transformers.utils.logging.disable_progress_bar()
header(args, ["transformers"])

# -----------------------------------------------------------------------------
# One random GPT-2, twice: Hugging Face's, and ours loaded from its save_pretrained folder

torch.manual_seed(args.seed)
theirs = transformers.GPT2LMHeadModel(hf_config(args)).float().eval().to(device)
ours, max_diff = same_weights_pair(theirs)
ours.eval()

B, P, N, V = args.batch_size, args.prompt_len, args.new_tokens, args.vocab_size
prompt = torch.randint(0, V - 1, (B, P), generator=torch.Generator().manual_seed(args.seed)).to(device)

# -----------------------------------------------------------------------------
# The two samplers, each returning how many new tokens it produced

prompt_lists = prompt.tolist()
hf_generation = transformers.GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                              max_new_tokens=N,
                                              eos_token_id=None, pad_token_id=None, num_beams=1)
attention_mask = torch.ones_like(prompt)


def run_ours():
    # eot = V: never sampled, so no early stop
    tokens, _, logprobs, _ = generate(ours, prompt_lists, N, eot=V)
    return logprobs.numel()


def run_theirs():
    out = theirs.generate(input_ids=prompt, attention_mask=attention_mask, generation_config=hf_generation)
    return out[:, P:].numel()


samplers = {"ours": run_ours, "transformers": run_theirs}
for name, fn in samplers.items():  # the token-count check (the warm-up is in interleaved)
    n, _ = timed(fn, device)
    assert n == B * N, f"{name} produced {n} tokens, expected batch x new_tokens = {B * N}"
# A B A B: a slow spell of the machine hits both
times = interleaved(samplers, args.repeats, warmup=0, device=device)
tok_s = {name: B * N / statistics.median(t) for name, t in times.items()}

# -----------------------------------------------------------------------------

print(f"fp32 | max logit diff ours vs transformers {max_diff:.1e}")
print(f"workload: batch {B} | prompt {P} | new tokens {N} | temperature 1, no top-k/top-p | median of "
      f"{args.repeats} after 1 warm-up")
for name in samplers:
    ms = sorted(t * 1e3 for t in times[name])
    print(f"{name:>12}: {tok_s[name]:10,.0f} tok/s   (ms per run: median {statistics.median(ms):.0f}, min "
          f"{ms[0]:.0f}, max {ms[-1]:.0f})")
print(f"ratio ours/transformers: {tok_s['ours'] / tok_s['transformers']:.2f}x")
