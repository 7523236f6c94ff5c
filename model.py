"""
The GPT every stage shares, and nothing else: the tokenizer (GPT-2's BPE, read offline), a
hand-written GPT-2 (an LM head, or a scalar head for the reward model and the value function),
sampling with a KV cache, checkpoints, and loading Hugging Face GPT-2 weights. The model knows
no stage and no data set: training plumbing lives in common.py, export to Hugging Face in export.py.

    from model import GPT, GPTConfig, get_tokenizer, generate, save_checkpoint, load_checkpoint
"""
import base64
import functools
import json
import math
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, asdict, replace

import numpy as np
import tiktoken
import torch
import torch.nn as nn
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------------------------------
# Tokenizer: GPT-2's BPE from data/gpt2.tiktoken, no download.
# GPT-2's merges are ordered by rank and every merge joins two lower-ranked tokens, so the
# first V-1 ranks are themselves a valid BPE: "gpt2-V" is a V-token GPT-2-style vocabulary
# whose last id is <|endoftext|>. "gpt2-world" keeps instead the GPT-2 tokens that the default
# world's text is made of, each with the tokens its merges pass through, and the 256 bytes
# (data/gpt2-world.txt, written by data/world.py): it encodes the world exactly as GPT-2 does,
# with whole words ("Rosa", "bridge") where the first 2,047 merges spell "R os a", "br id ge".
# The tiny default model uses one of these (its output layer would otherwise be 50,257 rows,
# most of its compute); "gpt2" is the full 50,257-token encoding.

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
WORLD_RANKS = os.path.join(HERE, "data", "gpt2-world.txt")


@functools.lru_cache(maxsize=1)
def _gpt2_ranks():
    ranks = {}
    with open(os.path.join(HERE, "data", "gpt2.tiktoken"), "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=None)
def get_tokenizer(name="gpt2"):
    ranks = _gpt2_ranks()
    if name == "gpt2-world":  # a subset in GPT-2's rank order keeps GPT-2's merge priorities
        with open(WORLD_RANKS) as f:
            keep = {int(r) for r in f.read().split()}
        order = sorted((rank, token) for token, rank in ranks.items() if rank in keep)
        kept = {token: i for i, (_, token) in enumerate(order)}
        vocab_size = len(kept) + 1
    elif name == "gpt2" or (name.startswith("gpt2-") and name[5:].isdigit() and 257 <= int(name[5:]) <= len(ranks) + 1):
        vocab_size = len(ranks) + 1 if name == "gpt2" else int(name[5:])
        kept = {token: rank for token, rank in ranks.items() if rank < vocab_size - 1}
    else:
        raise SystemExit(f"error: unknown tokenizer '{name}': use 'gpt2', 'gpt2-world' or 'gpt2-V' with "
                         f"257 <= V <= {len(ranks) + 1}")
    return tiktoken.Encoding(name=name, pat_str=GPT2_PATTERN, mergeable_ranks=kept,
                             special_tokens={"<|endoftext|>": vocab_size - 1})


@functools.lru_cache(maxsize=1)
def _gpt2_merges():
    """token -> the pair GPT-2 merges into it, for every multi-byte token. data/gpt2.tiktoken holds
    ranks, not merges: the pair is what BPE leaves of the token's bytes with the merges ranked
    before its own (lowest-ranked adjacent pair first), which is GPT-2's merges.txt."""
    ranks, merges = _gpt2_ranks(), {}
    for token, rank in ranks.items():
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            r, i = min((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1))
            assert r < rank, f"GPT-2 token {token!r} is not made by its lower-ranked merges"
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges[token] = tuple(parts)
    return merges


# --------------------------------------------------------------------------------------------------
# The model

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    # "lm": next-token logits; "scalar": unembedding removed, one number per position (RM and value,
    # paper §3.5)
    head: str = "lm"


class KVCache:
    """Preallocated keys and values of every layer, filled left to right during sampling."""

    def __init__(self, n_layer, max_len):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.max_len, self.t0 = max_len, 0

    def update(self, layer, k, v):  # k, v: (B, nh, T, hs)
        if self.k[layer] is None:
            shape = (*k.shape[:2], self.max_len, k.shape[3])
            self.k[layer] = k.new_empty(shape)
            self.v[layer] = v.new_empty(shape)
        t1 = self.t0 + k.size(2)
        self.k[layer][:, :, self.t0:t1] = k
        self.v[layer][:, :, self.t0:t1] = v
        return self.k[layer][:, :, :t1], self.v[layer][:, :, :t1]

    def keep(self, rows):
        """Drop the rows that are done (rows: a bool mask or indices of those to keep). Only the
        positions filled so far are copied: the rest would be overwritten before being read."""
        index = rows.nonzero().squeeze(1) if rows.dtype == torch.bool else rows

        def kept(cache):
            new = cache.new_empty(len(index), *cache.shape[1:])
            new[:, :, :self.t0] = cache[:, :, :self.t0].index_select(0, index)
            return new
        self.k, self.v = [kept(k) for k in self.k], [kept(v) for v in self.v]


class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.dropout, self.layer = config.n_head, config.dropout, layer

    def forward(self, x, attn_mask=None, kv_cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)  # (B, nh, t0+T, hs)
        dropout = self.dropout if self.training else 0.0
        if attn_mask is None:  # no padding: the fast causal kernel
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):

    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, kv_cache=None):
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache)
        return x + self.mlp(self.ln_2(x))


def positions_and_mask(mask):
    """Padding mask (B, T), True on real tokens, to position ids (B, T) and an attention mask
    (B, 1, T, T), so a padded row computes exactly what it would alone. Every query may see
    itself, which keeps rows of pure padding finite (their outputs are never used)."""
    T = mask.size(1)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()
    attn = (causal & mask[:, None, :]) | torch.eye(T, dtype=torch.bool, device=mask.device)
    return pos, attn[:, None]


def shared_prefix_positions_and_mask(segments):
    """Several sequences packed in one row after the prefix they share: segments (B, T) is 0 on the
    prefix, i >= 1 on sequence i's own tokens, -1 on padding (the prefix first, padding last). Each
    sequence sees the prefix and itself at the positions it would have alone, so the prefix is
    computed once for all of them. Returns position ids and mask as positions_and_mask."""
    T = segments.size(1)
    one_hot = F.one_hot(segments + 1, int(segments.max()) + 2)  # (B, T, S): padding is column 0
    index_in_segment = (one_hot.cumsum(1) * one_hot).sum(-1) - 1
    prefix_len = (segments == 0).sum(1, keepdim=True)
    pos = torch.where(segments > 0, prefix_len + index_in_segment, index_in_segment)
    pos = torch.where(segments < 0, 0, pos)
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    itself = torch.eye(T, dtype=torch.bool, device=segments.device)
    attn = (causal & (key >= 0) & ((key == 0) | (key == query))) | itself
    return pos, attn[:, None]


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        if config.head == "lm":
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        elif config.head == "scalar":
            self.score = nn.Linear(config.n_embd, 1)
        else:
            raise ValueError(f"head must be 'lm' or 'scalar', not {config.head!r}")
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.head == "scalar":  # a reward starts near 0 whatever the hidden-state scale
            nn.init.normal_(self.score.weight, std=1 / math.sqrt(config.n_embd + 1))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def hidden(self, idx, pos=None, attn_mask=None, kv_cache=None):
        """Final-LayerNorm hidden states (B, T, C)."""
        B, T = idx.size()
        if pos is None:
            pos = torch.arange(T, device=idx.device)[None]
        if pos.max() >= self.config.block_size:
            raise ValueError(f"sequence position {int(pos.max())} is past the context of "
                             f"{self.config.block_size} tokens")
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, attn_mask, kv_cache)
        if kv_cache is not None:
            kv_cache.t0 += T
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, attention_mask=None, keep=None, segments=None):
        """idx (B, T) token ids; attention_mask (B, T) True on real tokens, needed only with
        left padding (right padding is invisible to causal attention); or segments (B, T), several
        sequences packed after a shared prefix (shared_prefix_positions_and_mask). Returns logits (B, T, V),
        or for a scalar head values (B, T); with targets (B, T), -1 = ignored, also the mean
        next-token cross-entropy. keep (B, T) bool: the logits of those positions only, (N, V), so
        the unembedding (most of a small model's work) is not spent on prompt tokens."""
        pos, attn = None, None
        if attention_mask is not None:
            pos, attn = positions_and_mask(attention_mask)
        elif segments is not None:
            pos, attn = shared_prefix_positions_and_mask(segments)
        x = self.hidden(idx, pos, attn)
        if self.config.head == "scalar":
            return self.score(x).squeeze(-1)
        logits = self.lm_head(x if keep is None else x[keep])
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizer(self, weight_decay, learning_rate, betas=(0.9, 0.95), device_type="cpu"):
        """AdamW with decay on matrices only (not on biases, LayerNorms)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # the fused kernel exists on CPU from torch 2.4: 4x faster steps than the per-tensor loop there
        fused = device_type == "cuda" or tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward; a forward is a third) in sequences of T
        tokens (default: the context), PaLM appendix B: 6N + 12·L·C·T. N counts the weights that
        take part in a matmul: all but the position table, and the token table only as an LM head's
        unembedding (in a scalar-head model it is a lookup)."""
        c = self.config
        n = self.num_params() - (self.transformer.wte.weight.numel() if c.head == "scalar" else 0)
        return 6 * n + 12 * c.n_layer * c.n_embd * (T or c.block_size)


def scalar_head_model(lm):
    """The SFT model with the unembedding removed and a scalar head (paper §3.5): the RM, and the
    value function."""
    model = GPT(replace(lm.config, head="scalar"))
    body = {k: v for k, v in lm.state_dict().items() if k.startswith("transformer.")}
    model.load_state_dict(body, strict=False)
    return model.to(next(lm.parameters()).device)


# --------------------------------------------------------------------------------------------------
# Sampling

# Logits closer than TIE (relative to the largest) are one tie to the top-k / top-p cut. generate's
# KV-cache step and a full forward compute the same logits only up to float noise (7e-8 on the tiny
# test model's logits of 0.17, 5 ulps), so a hard cut between two logits an ulp apart keeps a token
# in one and drops it in the other (issue 17: 0.052 off in a log-prob).
TIE = 1e-5


def sampling_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """The logits of the distribution actually sampled from. PPO must compute log-probs the same way
    (temperature included), or the ratio π/π_old and the KL are taken against the wrong distribution."""
    logits = logits.float() / temperature
    top_k = top_k if top_k is not None and top_k < logits.size(-1) else None
    top_p = top_p if top_p is not None and top_p < 1.0 else None
    if top_k is None and top_p is None:
        return logits
    return logits.masked_fill(~kept_tokens(logits, top_k, top_p), float("-inf"))


def kept_tokens(logits, top_k=None, top_p=None):
    """(..., V) -> (..., V) bool: the tokens top-k and then top-p keep (the nucleus: the most likely
    tokens until the mass before one exceeds top_p). generate and the full-forward recomputation
    both decide here. The cut is a logit threshold, and every logit within tol below it stays with
    it: near-ties are kept or dropped together, and a mass within tol above top_p counts as top_p.
    Residual risk: a logit about tol below the cut, or a mass within float noise of top_p + tol, can
    still land on different sides in the two paths. For smooth logits that is no rarer than a gap
    under the noise at a hard cut (~noise / spacing per step); what the margin removes are the exact
    and 1-ulp ties rounding makes (issue 17's token) and masses hand-built to equal top_p. bf16
    autocast's noise (~1e-2) is beyond it: ppo.py samples at a temperature only, no top-k / top-p,
    and takes every log-prob it trains on from one full forward, not from generate."""
    s = torch.sort(logits, dim=-1, descending=True).values
    tol = TIE * s[..., :1].abs().clamp(min=1.0)  # float noise grows with the logits' size
    cut = s[..., top_k - 1:top_k] if top_k is not None else s[..., -1:]  # the lowest logit kept
    if top_p is not None:  # over top-k's tokens, in float64: the running sum adds no noise itself
        probs = s.double().masked_fill(s < cut - tol, float("-inf")).softmax(-1)
        n = ((probs.cumsum(-1) - probs <= top_p + tol) & (probs > 0)).sum(-1, keepdim=True)  # >= 1
        cut = torch.maximum(cut, s.gather(-1, n - 1))
    return logits >= cut - tol


def token_logprobs(logits, tokens, temperature=1.0, top_k=None, top_p=None):
    """log π(token) for each position: logits (..., V), tokens (...) -> (...)."""
    logp = F.log_softmax(sampling_logits(logits, temperature, top_k, top_p), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def left_pad(prompts, pad_id, device="cpu"):
    """Token lists of different lengths -> (B, P) ids, left-padded, and the (B, P) mask of real tokens."""
    P = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.bool)
    for i, p in enumerate(prompts):
        idx[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = True
    return idx.to(device), mask.to(device)


def prefill(model, idx, prompt_mask, max_len, rows=16):
    """The prompts' forward pass into a KV cache for max_len positions, and each row's last hidden
    state (B, C). Rows go through in groups of similar length, each cut to its own longest prompt,
    so the pass is not spent on the padding of a batch whose prompts differ in length; the cache is
    then laid out left-padded, as one batch would have left it."""
    B, P = idx.shape
    x, cache = None, KVCache(model.config.n_layer, max_len)
    for group in prompt_mask.sum(1).argsort(stable=True).split(rows):
        n = int(prompt_mask[group].sum(1).max())
        part = KVCache(model.config.n_layer, n)
        h = model.hidden(idx[group, P - n:], *positions_and_mask(prompt_mask[group, P - n:]), part)[:, -1]
        if x is None:
            x = h.new_empty(B, h.size(-1))
            # zeros: padding keys are masked, never NaN
            cache.k = [k.new_zeros(B, k.size(1), max_len, k.size(3)) for k in part.k]
            cache.v = [v.new_zeros(B, v.size(1), max_len, v.size(3)) for v in part.v]
        x[group] = h
        for full, new in zip(cache.k + cache.v, part.k + part.v):
            full[group, :, P - n:P] = new
    cache.t0 = P
    return x, cache


@torch.no_grad()
def generate(model, prompts, max_new_tokens, eot, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Sample a response to each prompt (a list of token lists of any lengths) with a KV cache.
    temperature 0 means greedy. Prompts are left-padded so every row samples in the same column.
    Returns
      tokens (B, P+N): left-padded prompt then response; after a row's first eot, eot fills it
      mask (B, P+N): True on real tokens (prompt and response up to and including its eot)
      logprobs (B, N): log-prob of each sampled token under the distribution it was sampled from
      response_mask (B, N): True up to and including the first eot
    N <= max_new_tokens (sampling stops once every row has ended)."""
    device = next(model.parameters()).device
    idx, prompt_mask = left_pad(prompts, eot, device)
    B, P = idx.shape
    if P + max_new_tokens > model.config.block_size:
        raise ValueError(f"prompt of {P} tokens + {max_new_tokens} new tokens exceeds the context of "
                         f"{model.config.block_size}: shorten the prompt or lower the response length")
    key_mask = torch.cat([prompt_mask, torch.ones(B, max_new_tokens, dtype=torch.bool, device=device)], 1)
    next_pos = prompt_mask.sum(1, keepdim=True)  # (B, 1): a row's first response position
    x, cache = prefill(model, idx, prompt_mask, P + max_new_tokens)
    out = torch.full((B, max_new_tokens), eot, dtype=torch.long, device=device)
    logprobs = torch.zeros(B, max_new_tokens, device=device)
    response_mask = torch.zeros(B, max_new_tokens, dtype=torch.bool, device=device)
    # rows still sampling: a finished row leaves the batch and its cache
    live = torch.arange(B, device=device)
    for t in range(max_new_tokens):
        logits = sampling_logits(model.lm_head(x), temperature or 1.0, top_k, top_p)
        logp = F.log_softmax(logits, dim=-1)
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            # inverse CDF, one uniform per row: torch.multinomial draws an exponential per
            # vocabulary entry, most of a small model's decode step on CPU (bench/generate.py).
            # float64 keeps tiny probabilities. Every row draws its uniform, finished or not, so a
            # row's sample does not depend on when the others end.
            cdf = logp.double().exp().cumsum(-1)  # (live, V)
            total = cdf[:, -1:]
            u = torch.rand((B, 1), dtype=cdf.dtype, device=device, generator=generator)[live] * total
            # u < total: the index stays in range
            u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))
            # first cdf > u: never a zero-probability token
            token = torch.searchsorted(cdf, u, right=True).squeeze(-1)
        out[live, t], logprobs[live, t] = token, logp.gather(-1, token[:, None]).squeeze(-1)
        response_mask[live, t] = True
        going = token != eot
        if not going.any() or t == max_new_tokens - 1:
            break
        # the finished rows leave the batch: its cache, positions and key mask shrink with it
        if not going.all():
            live, token, next_pos, key_mask = live[going], token[going], next_pos[going], key_mask[going]
            cache.keep(going)
        x = model.hidden(token[:, None], next_pos + t, key_mask[:, None, None, :P + t + 1], cache)[:, -1]
    N = t + 1
    tokens = torch.cat([idx, out[:, :N]], 1)
    mask = torch.cat([prompt_mask, response_mask[:, :N]], 1)
    return tokens, mask, logprobs[:, :N], response_mask[:, :N]


def sample_responses(model, contexts, max_new_tokens, eot, temperature=1.0, batch_size=64, generator=None,
                     ctx=None):
    """One sampled response per context (a token list): its tokens, <|endoftext|> last when it ended."""
    from contextlib import nullcontext
    out = []
    for i in range(0, len(contexts), batch_size):
        with ctx or nullcontext():
            tokens, _, _, response_mask = generate(model, contexts[i:i + batch_size], max_new_tokens, eot,
                                                   temperature, generator=generator)
        P = tokens.size(1) - response_mask.size(1)
        out += [row[:sum(m)] for row, m in zip(tokens[:, P:].tolist(), response_mask.tolist())]
    return out


def sample_texts(model, enc, prompts, max_new_tokens, temperature=1.0, batch_size=64, generator=None,
                 ctx=None):
    """Sample one response per prompt string; returns (response text without <|endoftext|>, ended) pairs."""
    responses = sample_responses(model, [enc.encode_ordinary(p) for p in prompts], max_new_tokens,
                                 enc.eot_token, temperature, batch_size, generator, ctx)
    return list(zip(*decode_responses(enc, responses)))


def decode_responses(enc, responses):
    """Sampled responses (token lists, <|endoftext|> last when they ended) as (texts without the
    <|endoftext|>, ended flags)."""
    ended = [bool(r) and r[-1] == enc.eot_token for r in responses]
    return [enc.decode(r[:-1] if e else r) for r, e in zip(responses, ended)], ended


# -----------------------------------------------------------------------------
# Checkpoints: a state dict plus JSON-able metadata; written to a temp file then renamed,
# so a crash mid-write leaves the previous checkpoint as it was.

def save_checkpoint(path, model, optimizer=None, scaler=None, **meta):
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    ckpt = {"model": model.state_dict(), "model_config": asdict(model.config), **meta}
    # the torchrun job that wrote it (None outside torchrun): how a restart knows its own last.pt
    ckpt["run_id"] = os.environ.get("TORCHELASTIC_RUN_ID")
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scaler is not None:  # fp16's loss scale and growth count: a fresh one would skip other steps
        ckpt["scaler"] = scaler.state_dict()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, device="cpu"):
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path} not found (train the stage that writes it first, or fix "
                         "the path)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: {e})")


def model_from_checkpoint(ckpt, device="cpu", dropout=None):
    config = GPTConfig(**ckpt["model_config"])
    if ckpt.get("tokenizer") == "gpt2-world" and get_tokenizer("gpt2-world").n_vocab != config.vocab_size:
        # the ids are data/gpt2-world.txt's: a rewritten file would shift them under the weights
        raise SystemExit(f"error: this checkpoint has {config.vocab_size} token embeddings but gpt2-world now has "
                         f"{get_tokenizer('gpt2-world').n_vocab} tokens: {WORLD_RANKS} changed since it was "
                         "trained; restore the file (git checkout) or retrain")
    if dropout is not None:
        config = replace(config, dropout=dropout)
    model = GPT(config)
    model.load_state_dict(ckpt["model"])
    return model.to(device)


# --------------------------------------------------------------------------------------------------
# Hugging Face GPT-2 checkpoints (pytorch_model.bin or model.safetensors), read without transformers

GPT2_SIZES = {"gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280),
              "gpt2-xl": (48, 25, 1600)}
CACHE_DIR = os.environ.get("INSTRUCTGPT_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "instructgpt"))
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
                      "I64": np.int64, "U8": np.uint8, "BOOL": np.bool_}


CONV1D = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # Hugging Face's Conv1D: (in, out)


def read_safetensors(path):
    """The format: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
    data_offsets}}, raw bytes."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = data[start:end].view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
        t = torch.from_numpy(array.copy())
        tensors[name] = t.view(torch.int16).view(torch.bfloat16) if info["dtype"] == "BF16" else t
    return tensors


def download(url, dest):
    """url -> dest. Bytes land in dest.part; a rerun asks the server only for the rest (HTTP Range)."""
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as e:
        if e.code != 416:
            raise
        os.replace(part, dest)  # 416: nothing left to send, the .part is whole (the gzip check below decides)
        return
    with response:
        if response.status != 206:  # the server ignored the range (or there was none): start over
            have = 0
        total = have + int(response.headers.get("Content-Length", 0))
        done = have
        with open(part, "ab" if have else "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                print(f"\rdownloading {url}: {done / 2**20:.1f}/{total / 2**20:.1f} MiB", end="",
                      file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if total > have and done != total:
        raise OSError(f"connection closed after {done} of {total} bytes; rerun to resume")
    os.replace(part, dest)


def _gpt2_folder(name):
    folder = os.path.join(CACHE_DIR, name)
    if any(os.path.exists(os.path.join(folder, f)) for f in ("model.safetensors", "pytorch_model.bin")):
        return folder
    os.makedirs(folder, exist_ok=True)
    url = f"https://huggingface.co/openai-community/{name}/resolve/main/model.safetensors"
    try:
        download(url, os.path.join(folder, "model.safetensors"))
    except OSError as e:
        raise SystemExit(f"error: could not download {url} ({e}); offline, place {name}'s model.safetensors "
                         f"(or pytorch_model.bin) in {folder}/, or pass that folder's path instead of "
                         f"'{name}'")
    return folder


def from_pretrained(name_or_path, block_size=None, dropout=0.0):
    """A GPT from Hugging Face GPT-2 weights: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'
    (downloaded once into $INSTRUCTGPT_CACHE), or a local folder holding config.json and
    model.safetensors or pytorch_model.bin. Uses the full 'gpt2' tokenizer."""
    if os.path.isdir(name_or_path):
        folder = name_or_path
        config_file = os.path.join(folder, "config.json")
        if not os.path.isfile(config_file):
            raise SystemExit(f"error: {config_file} not found: a GPT-2 folder needs config.json beside its "
                             "weights")
        with open(config_file) as f:
            hf = json.load(f)
        n_layer, n_head, n_embd = hf["n_layer"], hf["n_head"], hf["n_embd"]
        n_ctx, vocab = hf.get("n_positions", hf.get("n_ctx", 1024)), hf["vocab_size"]
    elif name_or_path in GPT2_SIZES:
        folder = _gpt2_folder(name_or_path)
        (n_layer, n_head, n_embd), n_ctx, vocab = GPT2_SIZES[name_or_path], 1024, 50257
    else:
        raise SystemExit(f"error: '{name_or_path}' is neither a folder nor one of {', '.join(GPT2_SIZES)}")
    st, bin_ = os.path.join(folder, "model.safetensors"), os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(st):
        sd = read_safetensors(st)
    elif os.path.isfile(bin_):
        sd = torch.load(bin_, map_location="cpu", weights_only=True)
    else:
        raise SystemExit(f"error: no model.safetensors or pytorch_model.bin in {folder}")
    config = GPTConfig(block_size=block_size or n_ctx, vocab_size=vocab, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=dropout)
    model = GPT(config)
    ours = model.state_dict()
    theirs = {k.removeprefix("transformer."): v for k, v in sd.items()}
    for key in ours:
        if key == "lm_head.weight":
            continue  # tied to wte
        src = theirs.get(key.removeprefix("transformer."))
        if src is None:
            raise SystemExit(f"error: {folder} has no weight for {key}: is it a GPT-2 checkpoint?")
        if key.endswith(CONV1D):
            src = src.t()  # Hugging Face's Conv1D stores (in, out)
        if key == "transformer.wpe.weight":
            src = src[:config.block_size]
        with torch.no_grad():
            ours[key].copy_(src.float())
    return model
