"""
Which vocabulary for the tiny default model? A "gpt2-V" tokenizer keeps GPT-2's first V-1 merges,
so a smaller V means a smaller output layer (cheaper per token) but more tokens per byte of text.
This measures both on the world's corpus and prints the training cost per byte of text, the number
that decides how fast the default pipeline learns the world.

    python bench/tokenizer.py                      # on data/world/corpus_train.txt, the default
    4-layer/128-dim shape python bench/tokenizer.py --n_embd 256 --n_layer 6
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from model import GPT, GPTConfig, get_tokenizer  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--corpus", default="data/world/corpus_train.txt",
                    help="text to tokenize (one document per line)")
parser.add_argument("--vocab", default="512,1024,2048,4096,8192,50257",
                    help="vocabulary sizes V to compare (gpt2-V)")
parser.add_argument("--n_layer", type=int, default=4, help="model depth")
parser.add_argument("--n_head", type=int, default=4, help="attention heads")
parser.add_argument("--n_embd", type=int, default=128, help="model width")
parser.add_argument("--block_size", type=int, default=256, help="context length")
parser.add_argument("--batch_size", type=int, default=16, help="sequences per timed training step")
parser.add_argument("--steps", type=int, default=5,
                    help="timed training steps per vocabulary (after one warm-up)")
args = parser.parse_args()

text = open(args.corpus, encoding="utf-8").read()
n_bytes = len(text.encode("utf-8"))
print(f"corpus {args.corpus}: {n_bytes / 1e6:.2f} MB; model {args.n_layer} layers x {args.n_embd} dims, "
      f"{torch.get_num_threads()} threads")
print(f"{'V':>6} | {'tokens/byte':>11} | {'corpus tokens':>13} | {'params':>7} | {'train tok/s':>11} | "
      f"{'s per MB of text':>16}")
for V in map(int, args.vocab.split(",")):
    enc = get_tokenizer("gpt2" if V == 50257 else f"gpt2-{V}")
    n_tokens = len(enc.encode_ordinary(text))
    model = GPT(GPTConfig(block_size=args.block_size, vocab_size=V, n_layer=args.n_layer, n_head=args.n_head,
                          n_embd=args.n_embd))
    opt = model.configure_optimizer(0.1, 1e-3)
    x = torch.randint(0, V, (args.batch_size, args.block_size + 1))
    for i in range(args.steps + 1):
        if i == 1:
            t0 = time.time()
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tok_s = args.batch_size * args.block_size * args.steps / (time.time() - t0)
    per_byte = n_tokens / n_bytes
    print(f"{V:>6} | {per_byte:>11.3f} | {n_tokens:>13,} | {model.num_params() / 1e6:>6.2f}M | "
          f"{tok_s:>11,.0f} | {per_byte * 1e6 / tok_s:>16.1f}")
