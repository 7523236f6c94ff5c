"""
What the bench scripts share, so that every comparison builds the same model the same way and times
it the same way: the model presets and their flags, the machine/version header, one random GPT-2
built twice (Hugging Face's and ours, same weights), an offline tokenizer for TRL, and interleaved
timing (A B A B ..., medians) so that a busy spell of a shared machine hits both sides alike.

    from harness import add_model_args, resolve_model_args, header, hf_config, same_weights_pair, interleaved
"""
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# model.py, sft.py, reward.py, ppo.py: the repository root before bench/ (bench/ppo.py is not
# ppo.py)
sys.path.insert(0, ROOT)

PRESETS = {  # n_layer, n_head, n_embd, vocab_size, block_size
    "tiny": (4, 4, 128, 2048, 256),  # the default world's model
    "gpt2": (12, 12, 768, 50257, 1024),  # GPT-2 124M
}
SHAPE = ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")


def add_model_args(parser):
    """--preset and its per-field overrides, --threads, --device, --seed."""
    # model shape: a preset, any flag given overrides it
    parser.add_argument("--preset", choices=PRESETS, default="tiny",
                        help="tiny = 4 layers/4 heads/128 dims/vocab 2048/block 256; gpt2 = "
                             "12/12/768/50257/1024")
    parser.add_argument("--n_layer", type=int, help="transformer blocks (default: from --preset)")
    parser.add_argument("--n_head", type=int, help="attention heads (default: from --preset)")
    parser.add_argument("--n_embd", type=int, help="model width (default: from --preset)")
    parser.add_argument("--vocab_size", type=int, help="vocabulary size (default: from --preset)")
    parser.add_argument("--block_size", type=int, help="context length (default: from --preset)")
    # machine
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")


def resolve_model_args(args):
    """Fill the shape from the preset, check it, set the threads; returns the torch.device."""
    for key, value in zip(SHAPE, PRESETS[args.preset]):
        if getattr(args, key) is None:
            setattr(args, key, value)
    assert args.n_embd % args.n_head == 0, "--n_embd must be a multiple of --n_head"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU")
    torch.set_num_threads(args.threads)
    return torch.device(args.device)


def cpu_name():
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def header(args, packages=()):
    """The versions, machine and model shape, printed first by every bench script."""
    import importlib.metadata as md
    versions = [f"torch {torch.__version__}"] + [f"{p} {md.version(p)}" for p in packages]
    versions.append(f"python {platform.python_version()}")
    print(" | ".join(versions))
    if args.device == "cuda":
        print(f"device cuda ({torch.cuda.get_device_name()})")
    else:
        print(f"device cpu ({cpu_name()}, nproc {os.cpu_count()}, {args.threads} threads; load average "
              f"{os.getloadavg()[0]:.1f} at start)")
    print(f"model {args.preset}: " + " | ".join(f"{k} {getattr(args, k)}" for k in SHAPE), flush=True)
    if args.device == "cpu" and args.threads > 1 and os.getloadavg()[0] > os.cpu_count() - args.threads + 0.5:
        print(f"warning: the machine is busy (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
              f"cores): with {args.threads} threads "
              "per process OpenMP threads wait on preempted peers and runs can be 5-20x slower, which skews "
              "the ratio; "
              f"use --threads 1 (or OMP_WAIT_POLICY=PASSIVE)", flush=True)


def hf_config(args, dropout=0.0, **extra):
    """transformers.GPT2Config of the same shape as ours (GELU-tanh, LayerNorm eps 1e-5, tied
    unembedding, as in model.py)."""
    import transformers
    return transformers.GPT2Config(vocab_size=args.vocab_size, n_positions=args.block_size,
                                   n_embd=args.n_embd, n_layer=args.n_layer,
                                   n_head=args.n_head, resid_pdrop=dropout, embd_pdrop=dropout,
                                   attn_pdrop=dropout,
                                   bos_token_id=None, eos_token_id=None, **extra)


def same_weights_pair(hf_model, dropout=0.0):
    """Ours (model.GPT, LM head) loaded from hf_model's save_pretrained folder: same weights,
    checked on a random batch."""
    from model import from_pretrained
    with tempfile.TemporaryDirectory() as folder:
        hf_model.save_pretrained(folder)
        ours = from_pretrained(folder, dropout=dropout)
    device = next(hf_model.parameters()).device
    ours = ours.to(device)
    x = torch.randint(0, ours.config.vocab_size, (2, 16),
                      generator=torch.Generator().manual_seed(0)).to(device)
    was_training = (hf_model.training, ours.training)
    hf_model.eval(), ours.eval()
    with torch.no_grad():
        max_diff = (ours(x) - hf_model(input_ids=x).logits).abs().max().item()
    hf_model.train(was_training[0]), ours.train(was_training[1])
    assert max_diff < 1e-4, f"the two models disagree by {max_diff:.2e}: not the same weights"
    return ours, max_diff


def offline_tokenizer(vocab_size, pad_id=0):
    """A PreTrainedTokenizerFast over ids only (WordLevel, no download): token i is 't{i}', the last id is the
    end-of-text token (as in our gpt2-V tokenizers), pad_id the padding token TRL needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    eos_id = vocab_size - 1
    vocab = {f"t{i}": i for i in range(vocab_size) if i not in (pad_id, eos_id)}
    vocab.update({"<pad>": pad_id, "<eos>": eos_id})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<pad>")
    assert out.eos_token_id == eos_id and out.pad_token_id == pad_id
    return out


def scratch_dir(prefix):
    """A temporary output_dir for a Trainer (nothing is saved there), removed at exit."""
    import atexit
    import shutil
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def random_ids(n_rows, length, vocab_size, generator):
    """Token ids drawn from [1, V-2]: never the padding id 0 nor the end-of-text id V-1."""
    return torch.randint(1, vocab_size - 1, (n_rows, length), generator=generator)


# -----------------------------------------------------------------------------
# timing

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device="cpu"):
    """(fn(), seconds), synchronised on CUDA."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def interleaved(fns, repeats, warmup=1, device="cpu"):
    """Run each of fns (name -> callable) warmup times, then repeats rounds of all of them in turn
    (A B A B ...). Returns name -> list of seconds of the timed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn, device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device)[1])
    return times


def trainer_interleave(ours_fn, device="cpu"):
    """A transformers TrainerCallback that interleaves our step with the trainer's: at every on_step_end it
    records the trainer's step (wall time since the end of our previous step, or since on_train_begin: data
    loading, the step, its logging and callbacks all count), then runs and times ours_fn(step).
    .theirs and .ours hold the seconds of each step, in order; drop the first (warm-up) of each."""
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        def __init__(self):
            self.theirs, self.ours, self.mark = [], [], None

        def on_train_begin(self, args, state, control, **kwargs):
            sync(device)
            self.mark = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.theirs.append(time.perf_counter() - self.mark)
            with torch.enable_grad():
                self.ours.append(timed(lambda: ours_fn(len(self.ours)), device)[1])
            self.mark = time.perf_counter()

    return Interleave()


def quiet_trainer(trainer):
    """Remove the progress bar / log printer callbacks: one line per step would swamp the report
    (their cost is tiny)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def ms_summary(seconds):
    ms = sorted(s * 1e3 for s in seconds)
    return f"median {statistics.median(ms):,.0f} ms (min {ms[0]:,.0f}, max {ms[-1]:,.0f}, n {len(ms)})"


def profile_top(fn, rows=15, device="cpu"):
    """Run fn once under torch.profiler and print the ops that take the most self time."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
    key = "self_cuda_time_total" if torch.device(device).type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))
