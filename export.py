"""
Export one of our checkpoints as a Hugging Face GPT-2 folder, written without transformers: the
weights as model.from_pretrained reads them, config.json, and GPT-2's tokenizer files.

    python export.py out/ppo/model.pt out/ppo-hf    # a policy: GPT2LMHeadModel
    python export.py out/rm/model.pt out/rm-hf      # the reward model: GPT2ForSequenceClassification
"""
import argparse
import json
import os

import torch

from model import CONV1D, _gpt2_merges, get_tokenizer, load_checkpoint, model_from_checkpoint


def write_safetensors(path, tensors):
    """The format of read_safetensors, names in sorted order; spaces pad the header so that the
    data starts 8-byte aligned."""
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, offset = {"__metadata__": {"format": "pt"}}, 0  # transformers requires the "pt"
    for name in sorted(tensors):
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name in sorted(tensors):
            t = tensors[name].detach().cpu().contiguous()
            if t.dtype == torch.bfloat16:  # numpy has no bfloat16: the same bytes as int16
                t = t.view(torch.int16)
            f.write(t.numpy().tobytes())
    os.replace(path + ".tmp", path)


def byte_to_unicode():
    """GPT-2's printable stand-in for each byte (vocab.json and merges.txt are text): printable
    Latin-1 bytes stand for themselves, the other 68 for the characters from U+0100 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(rest)}}



def export_tokenizer(name, out_dir, block_size):
    """vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json of one of
    get_tokenizer's encodings. Ids are ours; a subset of GPT-2 ('gpt2-V', 'gpt2-world') keeps the
    GPT-2 merges whose two parts and result it has, in GPT-2's rank order (its ids' order), so it
    merges as ours does."""
    enc, char = get_tokenizer(name), byte_to_unicode()
    text = lambda token: "".join(char[b] for b in token)
    ids = {enc.decode_single_token_bytes(i): i for i in range(enc.eot_token)}
    eot = "<|endoftext|>"
    vocab = {text(token): i for token, i in ids.items()} | {eot: enc.eot_token}
    pairs = [(ids[token], pair) for token, pair in _gpt2_merges().items()
             if token in ids and pair[0] in ids and pair[1] in ids]
    merges = [f"{text(a)} {text(b)}" for _, (a, b) in sorted(pairs)]
    special = {"bos_token": eot, "eos_token": eot, "unk_token": eot}
    added = {"content": eot, "lstrip": False, "rstrip": False, "normalized": True,
             "single_word": False, "special": True}
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size,
              "add_prefix_space": False, "add_bos_token": False, "errors": "replace", **special,
              "added_tokens_decoder": {str(enc.eot_token): added}}
    files = {"vocab.json": json.dumps(vocab, ensure_ascii=False),
             "merges.txt": "\n".join(["#version: 0.2", *merges]) + "\n",
             "tokenizer_config.json": json.dumps(config, indent=2),
             "special_tokens_map.json": json.dumps(special, indent=2)}
    for file, content in files.items():
        with open(os.path.join(out_dir, file), "w", encoding="utf-8") as f:
            f.write(content)


def export_hf(ckpt_path, out_dir):
    """One of our checkpoints -> a folder transformers loads: a language model as GPT2LMHeadModel,
    a reward model (scalar head) as GPT2ForSequenceClassification with num_labels 1. That class's
    head has no bias, and ours holds reward.py's normalisation: the bias b is folded into ln_f's,
    β += b·w/|w|² (then w·β gains exactly b), so its logits are our normalised reward. Only the
    head reads ln_f's output; config.json states b as folded_score_bias."""
    ckpt = load_checkpoint(ckpt_path)
    model, eot = model_from_checkpoint(ckpt), get_tokenizer(ckpt["tokenizer"]).eot_token
    c = model.config
    tensors = {k: (v.t() if k.endswith(CONV1D) else v) for k, v in model.state_dict().items()
               if k != "lm_head.weight"}  # tied to wte; transformers ties it back
    hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
          "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd,
          "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
          "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
          "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
          "initializer_range": 0.02, "bos_token_id": eot, "eos_token_id": eot,
          "tie_word_embeddings": True, "torch_dtype": "float32"}
    if c.head == "scalar":
        w, b = tensors["score.weight"][0].double(), tensors.pop("score.bias").double()
        ln_f = tensors["transformer.ln_f.bias"]
        tensors["transformer.ln_f.bias"] = (ln_f.double() + b * w / w.dot(w)).to(ln_f.dtype)
        # no pad_token_id: the class scores the last token that is not padding, ours <|endoftext|>
        hf |= {"architectures": ["GPT2ForSequenceClassification"], "id2label": {"0": "LABEL_0"},
               "label2id": {"LABEL_0": 0}, "folded_score_bias": b.item()}
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    export_tokenizer(ckpt["tokenizer"], out_dir, c.block_size)
    return hf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a checkpoint of sft.py, reward.py or ppo.py (.pt)")
    parser.add_argument("out_dir", help="the Hugging Face folder to write")
    args = parser.parse_args(argv)
    hf = export_hf(args.ckpt, args.out_dir)
    bias = hf.get("folded_score_bias")
    print(f"{args.ckpt} -> {args.out_dir}/: {hf['architectures'][0]}"
          + (f" (score bias {bias:+.4f} folded into ln_f.bias)" if bias is not None else ""))


if __name__ == "__main__":
    main()
