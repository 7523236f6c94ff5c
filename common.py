"""
What the stage scripts (sft.py, reward.py, ppo.py, evaluate.py) and data/ share besides the model:
data files with line-numbered errors, the compute set-up (device, precision, DDP), the training
step's plumbing (learning-rate schedule, data order, optimizer step, NaN stop), exact resumes
(RNG state, GradScaler, torchrun restarts), the progress line and log.jsonl, and reading a
reward model's score. As nanochat's common.py; model.py holds only the GPT.

    from common import compute_init, print0, optimizer_step, run_log, read_jsonl
"""
import argparse
import json
import math
import os
import time

import torch

from model import left_pad, load_checkpoint

# --------------------------------------------------------------------------------------------------
# Configuration and data files

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help lists each flag's default, except where its help already says what the default is
    ('[default: ...]'). Every script's one formatter."""
    def _get_help_string(self, action):
        if "[default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_compute_args(parser, compile=True):
    """The flags of compute_init, the same in every training stage: --device, --dtype, --compile."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="autocast precision (auto: bf16, else fp16 on GPUs; fp32 on CPU)")
    if compile:
        parser.add_argument("--compile", action="store_true", help="torch.compile the model")


def write_jsonl(path, records):
    """One JSON object per line, written to a temp file and renamed, so a crash never leaves half a
    file."""
    path = str(path)
    with open(path + ".tmp", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(path + ".tmp", path)
    return path


def read_jsonl(path, required):
    """Records of a JSONL file; a malformed line stops with the file, the line and what is wrong."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: data file {path} not found (for the default world run "
                         "`python data/world.py` first)")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path}:{n}: not valid JSON ({e.msg} at column {e.colno})")
            if not isinstance(record, dict):
                raise SystemExit(f"error: {path}:{n}: expected a JSON object, got "
                                 f"{type(record).__name__}")
            for key in required:
                if not isinstance(record.get(key), str):
                    raise SystemExit(f"error: {path}:{n}: missing string field '{key}' "
                                     f"(expected keys: {', '.join(required)})")
            record["_where"] = f"{path}:{n}"
            records.append(record)
    if not records:
        raise SystemExit(f"error: {path} holds no records")
    return records


def read_documents(path):
    """Pretraining text: a .jsonl of {"text": ...} documents, or any other file with one document
    per line."""
    if path.endswith(".jsonl"):
        return [r["text"] for r in read_jsonl(path, ["text"])]
    if not os.path.isfile(path):
        raise SystemExit(f"error: text file {path} not found (for the default world run "
                         "`python data/world.py` first)")
    with open(path, encoding="utf-8") as f:
        docs = [line.rstrip("\n") for line in f if line.strip()]
    if not docs:
        raise SystemExit(f"error: {path} holds no text")
    return docs


# --------------------------------------------------------------------------------------------------
# Compute: device, precision, DDP

def compute_init(device="auto", dtype="auto"):
    """Device, DDP and precision in one place. Under torchrun (RANK set) each process takes one
    GPU (NCCL) or CPU (gloo). Returns ddp, rank, world_size, device, the autocast context, and a
    GradScaler (fp16) or None."""
    from contextlib import nullcontext
    import torch.distributed as dist
    ddp = "RANK" in os.environ
    rank, world_size, local_rank = (int(os.environ.get(k, d))
                                    for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if ddp:
        store = None
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun keeps one store across restarts: a restarted worker group would read the
            # dead one's process-group keys and dial dead peers (pytorch/pytorch#167288)
            attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
            agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                  is_master=False)
            store = dist.PrefixStore(f"attempt{attempt}/", agent)
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
    if device == "cuda":
        device = "cuda:0"  # torch.cuda.set_device needs the index
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if dtype == "auto":
        dtype = "float32" if device_type == "cpu" else "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)
    scaler = torch.amp.GradScaler(device_type) if ptdtype == torch.float16 else None
    return ddp, rank, world_size, device, ctx, scaler


def print0(*args, **kwargs):
    """print, flushed, on the master process only (RANK 0, or no torchrun)."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs, flush=True)


def stage_init(args):
    """The start of every training stage: compute_init(args.device, args.dtype), whether this run
    continues out_dir/last.pt (--resume, or a torchrun restart: elastic_resume; args.resume says
    so from here on), and the seed of torch's global RNG (dropout). Returns compute_init's tuple."""
    ddp, rank, world_size, device, ctx, scaler = compute_init(args.device, args.dtype)
    args.resume = elastic_resume(args.out_dir, args.resume)
    torch.manual_seed(args.seed)
    return ddp, rank, world_size, device, ctx, scaler


def compute_cleanup():
    """End torchrun's process group. Both steps matter, or a rank can abort at exit ("terminate called
    without an active exception"): the collection frees DDP wrappers the caller deleted but whose
    reference cycles still hold the group, which would otherwise die with the interpreter; the barrier
    keeps a rank from tearing down gloo while another is still saving."""
    import gc
    import torch.distributed as dist
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


# Dense bf16/fp16 tensor-core peaks, for MFU; anything else reports no MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
              "4090": 165e12, "V100": 125e12}


def peak_flops(device):
    if not str(device).startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


# --------------------------------------------------------------------------------------------------
# Training

def cosine_lr(step, lr, warmup_steps, max_steps, min_lr_ratio):
    """Linear warm-up, then cosine decay to lr * min_lr_ratio (paper §3.5: cosine learning-rate
    decay)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def epoch_batch(items, step, batch_size, seed):
    """The global batch of optimizer step `step`: epochs of a fresh permutation each, a fixed function
    of (seed, epoch, step), so a resumed run sees exactly the batches an uninterrupted one would.
    sft.py and reward.py order their data so; ppo.py draws its own streams (ppo.batch_indices, whose
    batches run across passes). The two stay apart: one order for both would change the data every
    default result was measured on."""
    epoch, i = divmod(step, len(items) // batch_size)
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed + epoch))
    return [items[j] for j in order[i * batch_size:(i + 1) * batch_size].tolist()]


def wrap_for_training(model, device, compile=False, ddp=False):
    """torch.compile and/or DDP around a model; keep the unwrapped one for checkpoints and
    evaluation."""
    if compile:
        model = torch.compile(model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel
        ids = [torch.device(device).index] if str(device).startswith("cuda") else None
        model = DistributedDataParallel(model, device_ids=ids)
    return model


def optimizer_step(models, optimizers, scaler=None, grad_clip=0.0):
    """One optimizer step of one network or several (ppo.py: the policy and the value function,
    each with its own optimizer): unscale (fp16), clip each network's gradient norm, step each
    optimizer and zero its gradients, then one GradScaler update."""
    if not isinstance(models, (list, tuple)):
        models, optimizers = [models], [optimizers]
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


def micro_batches(batch_size, micro_batch_size, world_size):
    """A global batch over processes and micro-batches, checked before anything runs:
    (examples per process, examples per forward pass, gradient-accumulation steps)."""
    assert batch_size % world_size == 0, \
        f"--batch_size {batch_size} must be a multiple of the {world_size} processes"
    per_rank = batch_size // world_size
    micro = min(micro_batch_size, per_rank)
    assert per_rank % micro == 0, \
        f"--batch_size/processes = {per_rank} must be a multiple of --micro_batch_size {micro}"
    return per_rank, micro, per_rank // micro


def check_finite(value, step, out_dir, saved=None):
    """A NaN or inf loss stops the run before it reaches a checkpoint. step: the failing step (or
    PPO iteration), counted from 1 as in the progress lines and log.jsonl. saved: the step of this
    run's out_dir/last.pt (resumed from or written), None before its first; a last.pt there then is
    an earlier run's, no good state of this one, so the message names it only when saved is set."""
    if not math.isfinite(value):
        where = (f"{out_dir}/last.pt still holds the last good state, step {saved} "
                 "(--resume continues from it)" if saved is not None
                 else "no checkpoint of this run yet: rerun it from the start")
        raise SystemExit(f"error: loss is {value} at step {step}: lower the learning rate or check "
                         f"the data; {where}")


# --------------------------------------------------------------------------------------------------
# Resuming exactly

def elastic_resume(out_dir, resume):
    """Whether this run continues out_dir/last.pt: --resume says so, and so does a torchrun restart.
    Under torchrun --max-restarts a dead rank restarts the whole worker group with the same command
    line and TORCHELASTIC_RESTART_COUNT > 0; it continues the last.pt its own job wrote, told apart
    from an earlier job's by TORCHELASTIC_RUN_ID, which save_checkpoint stores (a fresh id for each
    torchrun launch on one node; --rdzv_id, default "none", across nodes). A first attempt (count 0)
    never resumes without --resume, and a restart before the job's first save starts over."""
    path = os.path.join(out_dir, "last.pt")
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    if resume or restart == 0:
        return resume
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    say = print if int(os.environ.get("RANK", 0)) == 0 else (lambda *a, **k: None)
    if run_id in (None, "none"):  # every multi-node job without --rdzv_id is "none"
        say(f"torchrun restart {restart}: no run id to tell this job's {path} from an earlier "
            "job's (give torchrun a unique --rdzv_id): starting over", flush=True)
        return False
    ours = False
    if os.path.isfile(path):  # mmap: only the metadata is read here; the stage loads it itself
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ours = saved.get("run_id") == run_id
    what = f"resuming from {path}" if ours else f"no {path} of this run yet: starting over"
    say(f"torchrun restart {restart} of run {run_id}: {what}", flush=True)
    return ours


def restore_scaler(scaler, ckpt):
    """fp16's GradScaler as the checkpoint left it (a fresh one starts at scale 2**16)."""
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])


def rng_state():
    """The RNG states to resume from. Under torchrun every rank's (a collective: call it on every
    rank): ranks can draw different amounts (on CUDA, dropout draws in proportion to a
    micro-batch's size)."""
    import torch.distributed as dist
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None
    state = {"cpu": torch.get_rng_state(), "cuda": cuda}
    if not dist.is_initialized():
        return state
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, state)
    return {**state, "ranks": ranks}


def set_rng_state(state):
    import torch.distributed as dist
    ranks = state.get("ranks")
    if dist.is_initialized() and ranks and len(ranks) == dist.get_world_size():
        state = ranks[dist.get_rank()]  # otherwise (another number of processes) the saving rank's
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Progress

def duration(seconds):
    """'45s', '3m05s', '2h07m': a time left, short."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def run_log(out_dir, master, resumed_at=None, key="step", total=None):
    """log(record): one progress line on the master ("step 42/320 | eta 1m05s | loss 2.31 | ...")
    and the same record in out_dir/log.jsonl. The eta: this run's time per step so far times the
    steps left to total. A fresh run (resumed_at None) starts the file anew. A run resumed from the
    checkpoint of step resumed_at continues it, less the rows past that step (record[key] >
    resumed_at): the stopped run logged them after its last checkpoint, and this one logs those
    steps again. The file is rewritten through a temp file, so a crash here keeps it whole."""
    if not master:
        return lambda record: None
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "log.jsonl")
    if resumed_at is not None and os.path.exists(path):
        rows = []
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a last line the kill cut short
                    pass
        write_jsonl(path, [r for r in rows if r[key] <= resumed_at])
    f = open(path, "w" if resumed_at is None else "a")
    start, t_start = resumed_at or 0, time.time()

    def log(record):
        cells = []
        for k, v in record.items():
            cells.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
            if k == key and total:
                cells[-1] += f"/{total}"
                if v > start:  # evaluations and checkpoints included: they recur at the same pace
                    per_step = (time.time() - t_start) / (v - start)
                    cells.append(f"eta {duration(per_step * (total - v))}")
        print(" | ".join(cells), flush=True)
        f.write(json.dumps(record) + "\n")
        f.flush()
    return log


# --------------------------------------------------------------------------------------------------
# Reading a reward model

def load_reward_model(path, tokenizer=None, policy_path=None, device="cpu"):
    """A reward-model checkpoint (scalar head); given a tokenizer, one that can score the policy of
    policy_path, whose tokenizer it must share."""
    ckpt = load_checkpoint(path, device)
    if ckpt["model_config"].get("head") != "scalar":
        raise SystemExit(f"error: {path} is not a reward model but a language model checkpoint (LM head); "
                         "--rm needs a reward model (python reward.py)")
    if tokenizer is not None and ckpt.get("tokenizer") != tokenizer:
        raise SystemExit(f"error: {path} uses tokenizer {ckpt.get('tokenizer')} but {policy_path} "
                         f"uses {tokenizer}")
    return ckpt


def last_token_index(mask):
    """(B, T) mask -> (B,) index of each row's last real token (the <|endoftext|> of a finished
    response)."""
    return mask.long().cumsum(1).argmax(1)


def rewards_at_last_token(rm, tokens, mask):
    """r_θ(x, y): the scalar head read at the last real token of each (prompt, response) row. The
    normalisation of reward.py lives in the head's bias, so this is already the normalised score."""
    values = rm(tokens, attention_mask=mask)  # (B, T)
    return values.gather(1, last_token_index(mask)[:, None]).squeeze(1).float()


@torch.no_grad()
def rm_scores(rm, contexts, responses, ended, missing_eot_penalty, device, batch_size=64):
    """r_θ(x, y) of each context + response (token lists, eot included when it ended) at its last
    token, as ppo.py scores rollouts; a response that never ended scores missing_eot_penalty instead
    (ppo.final_score's rule, without the clip). sft.py --select_by rm and evaluate.py use it."""
    out = []
    for i in range(0, len(contexts), batch_size):
        seqs = [c + r for c, r in zip(contexts[i:i + batch_size], responses[i:i + batch_size])]
        out += rewards_at_last_token(rm, *left_pad(seqs, 0, device)).tolist()
    return [s if e else missing_eot_penalty for s, e in zip(out, ended)]
