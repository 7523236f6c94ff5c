#!/usr/bin/env bash
# Figure 1 over model sizes, after data/pipeline.sh (whose models are the largest size, 0.99M parameters):
# two smaller bases (0.25M and 0.075M, 13.2x apart from the default), each taken through SFT, PPO and PPO-ptx.
# As in the paper, one reward model (the default's, out/rm) scores every policy size and starts every value
# function, and every row is judged against the default-size SFT model.
#   bash data/sizes.sh               # world seed 1234
#   SEED=7 bash data/sizes.sh        # after SEED=7 bash data/pipeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-1234}
for size in "xs 2 2 32" "s 3 4 64"; do   # name, blocks, heads, width
    read -r name n_layer n_head n_embd <<< "$size"
    dir=out/sizes/$name
    python sft.py --pretrain --n_layer "$n_layer" --n_head "$n_head" --n_embd "$n_embd" --out_dir "$dir/base"
    python sft.py --init "$dir/base/model.pt" --out_dir "$dir/sft"
    python ppo.py --policy "$dir/sft/model.pt" --ptx_coef 0 --out_dir "$dir/ppo"
    python ppo.py --policy "$dir/sft/model.pt" --out_dir "$dir/ppo-ptx"
done
python evaluate.py --seed "$SEED" --size out/sizes/xs --size out/sizes/s --out_dir out/eval-sizes
echo "sizes.sh: done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
