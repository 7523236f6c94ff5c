#!/usr/bin/env bash
# The first run on a GPU, in one command: every stage (pretrain, SFT, reward model, PPO-ptx) a few
# steps at GPT-2 124M's shape under bf16 autocast with torchrun and NCCL, again under fp16 with the
# GradScaler, the export to Hugging Face format, an exact resume (fp16, the job's only rank killed
# mid-run and restarted by torchrun), and the sampling and FLOPs benchmarks at the same shape; then
# one summary table. Meant to finish in under 8 minutes on one H100; a check that fails shows as
# FAIL in the table, with its full output in $OUT/<check>.log, and the script exits 1.
#
#   bash bench/gpu_check.sh                 # on one CUDA GPU (the sampling row needs transformers)
#   bash bench/gpu_check.sh --device cpu    # dry run: the same checks at a tiny shape, gloo
#
# $OUT (default out/gpu_check) is emptied first; on a GPU about 25 GB of checkpoints land there.
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device takes cuda or cpu}; fi
OUT=${OUT:-out/gpu_check}
rm -rf "$OUT" && mkdir -p "$OUT"

if [ "$DEVICE" = cuda ]; then
    SHAPE="--n_layer 12 --n_head 12 --n_embd 768 --block_size 1024 --tokenizer gpt2"  # GPT-2 124M
    BENCH="--preset gpt2 --device cuda"
    SAMPLING="--repeats 3"
    FLOPS="--batch_size 8 --seq_len 1024 --repeats 5"
    BACKEND=nccl AUTOCAST=bfloat16
else  # the dry run: a tiny shape, one thread a process (on a busy machine, OpenMP threads wait)
    export OMP_NUM_THREADS=1
    SHAPE="--n_layer 1 --n_head 2 --n_embd 32 --block_size 128 --tokenizer gpt2-2048"
    BENCH="--preset tiny --n_layer 1 --n_embd 32 --n_head 2 --block_size 128 --device cpu
           --threads 1"
    SAMPLING="--repeats 1 --new_tokens 8"
    FLOPS="--batch_size 2 --seq_len 64 --mm_size 256 --repeats 1"
    BACKEND=gloo AUTOCAST=float32  # CPU bf16 autocast is slow: a PPO update of 20 s; fp16's 3-4 s
fi
RUN="--device $DEVICE --log_interval 1"
TORCHRUN="python -m torch.distributed.run --standalone --nproc_per_node=1"

# data: a few hundred sentences of a made-up world, enough for a 1024-token pretraining batch
D=$OUT/data
python - "$D" "$DEVICE" <<'EOF'
import json, os, random, sys
import torch
out, device = sys.argv[1], sys.argv[2]
os.makedirs(out)
rng = random.Random(0)
names, animals = ["Mira", "Bob", "Ana", "Tom", "Lia", "Sam"], ["fox", "owl", "deer", "cat", "hen"]
places = ["Oakton", "the river", "the hill", "the market"]
sentences = [f"{n} saw a {a} near {p}." for n in names for a in animals for p in places]
say = lambda: rng.choice(sentences)
ask = lambda: f"Instruction: Tell me about {rng.choice(names)}.\nResponse:"
with open(f"{out}/corpus.txt", "w") as f:
    f.writelines(" ".join(say() for _ in range(3)) + "\n" for _ in range(1500))
ranking = lambda: {"prompt": ask(), "completions": [" " + s for s in rng.sample(sentences, 4)]}
for name, rows in (("demos", [{"prompt": ask(), "response": " " + say()} for _ in range(64)]),
                   ("rankings", [ranking() for _ in range(32)]),
                   ("prompts", [{"prompt": ask()} for _ in range(64)])):
    with open(f"{out}/{name}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
print(f"torch {torch.__version__} | {name} | CUDA {torch.version.cuda} | {os.cpu_count()} CPUs")
EOF
[ $? -eq 0 ] || exit 1

ROWS=()
FAILED=0
check() {  # check NAME WHAT PATTERN COMMAND...: run it, log to $OUT/NAME.log, and add a table row
    local name=$1 what=$2 pattern=$3 status=ok
    shift 3
    local t0=$(date +%s%N)
    timeout 300 "$@" > "$OUT/$name.log" 2>&1 || { status=FAIL; FAILED=1; }
    local seconds=$(awk "BEGIN {print ($(date +%s%N) - $t0) / 1e9}")
    local result=$(grep -E "$pattern" "$OUT/$name.log" | tail -n 1 | cut -c1-90)
    ROWS+=("$(printf '%-18s %-36s %-5s %6.1f  %s' "$name" "$what" "$status" "$seconds" "$result")")
    echo "${ROWS[-1]}"
}

# every stage: bf16 autocast under torchrun (one process; NCCL on a GPU), then fp16 without it
for dtype in $AUTOCAST float16; do
    if [ $dtype = float16 ]; then
        tag=fp16 LAUNCH=python how="fp16 + GradScaler, python"
    else
        tag=torchrun LAUNCH=$TORCHRUN how="$dtype, torchrun $BACKEND"
    fi
    S=$OUT/$tag
    check "pretrain-$tag" "$how" "^step .*\| loss " $LAUNCH sft.py --pretrain --init scratch \
        $SHAPE $RUN --dtype $dtype --train $D/corpus.txt --val $D/corpus.txt --batch_size 8 \
        --max_steps 4 --out_dir $S/base
    check "sft-$tag" "$how" "^step .*\| loss " $LAUNCH sft.py --init $S/base/model.pt $RUN \
        --dtype $dtype --train $D/demos.jsonl --val $D/demos.jsonl --batch_size 8 --max_steps 4 \
        --out_dir $S/sft
    check "reward-$tag" "$how" "^RM accuracy" $LAUNCH reward.py --sft $S/sft/model.pt $RUN \
        --dtype $dtype --train $D/rankings.jsonl --val $D/rankings.jsonl --val_heldout "" \
        --demos $D/demos.jsonl --batch_size 8 --max_steps 4 --out_dir $S/rm
    check "ppo-$tag" "$how" "^iter " $LAUNCH ppo.py --policy $S/sft/model.pt --rm $S/rm/model.pt \
        --device $DEVICE --dtype $dtype --prompts $D/prompts.jsonl --ptx_data $D/corpus.txt \
        --iterations 2 --batch_size 16 --minibatch_size 8 --max_new_tokens 32 --sample_interval 0 \
        --save_interval 2 --out_dir $S/ppo
done
check export "Hugging Face folder of ppo-torchrun" " -> " \
    python export.py $OUT/torchrun/ppo/model.pt $OUT/hf

# exact resume: the same fp16 SFT run twice under torchrun --max-restarts=1, the second with its
# rank killed in step 5 (last.pt is step 3's): the restart must end on the same weights
RESUME="sft.py --init $OUT/fp16/base/model.pt $RUN --dtype float16 --train $D/demos.jsonl
        --val $D/demos.jsonl --batch_size 8 --max_steps 6 --eval_interval 3 --dropout 0.1"
check resume-straight "fp16, torchrun $BACKEND, uninterrupted" "^step 6.*\| loss " \
    $TORCHRUN --max-restarts=1 bench/kill_rank.py -1 5 $RESUME --out_dir $OUT/resume-a
check resume-killed "fp16, rank killed in step 5" "^step 6.*\| loss " \
    $TORCHRUN --max-restarts=1 bench/kill_rank.py 0 5 $RESUME --out_dir $OUT/resume-b
check resume-equal "restarted vs uninterrupted" "weights" python -c "
import sys, torch
a, b = (torch.load(f'$OUT/resume-{r}/last.pt', map_location='cpu', weights_only=True) for r in 'ab')
diff = max((a['model'][k] - b['model'][k]).abs().max().item() for k in a['model'])
same_scaler = a['scaler'] == b['scaler']
print(f'max |weights difference| {diff:.1e} (<= 1e-6); scaler',
      'equal' if same_scaler else 'DIFFERS')
restarted = 'resuming from' in open('$OUT/resume-killed.log').read()
sys.exit(diff > 1e-6 or not same_scaler or not restarted)"

# the benchmarks at the same shape
check sampling "bench/generate.py" "ratio|tok/s" python bench/generate.py $BENCH $SAMPLING
check flops "bench/flops.py" "^MFU" python bench/flops.py $BENCH $FLOPS

echo
printf '%-18s %-36s %-5s %6s  %s\n' check how status s result
printf '%s\n' "${ROWS[@]}"
exit $FAILED
