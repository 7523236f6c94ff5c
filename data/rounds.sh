#!/usr/bin/env bash
# Paper §3.1: "steps 2 and 3 can be iterated continuously; more comparison data is collected on the
# current best policy". Rounds 2..N of the default world, after data/pipeline.sh (round 1): in each, the
# training labelers rank four draws of samples of the last round's PPO policy, the RM continues for one
# epoch on all rankings so far (it has seen round 1's three times already), PPO and PPO-ptx continue from
# the last round's policies (their KL penalty still to SFT) against the new RM for another 50 iterations,
# and at the end the held-out labelers compare every round with SFT.
#   bash data/rounds.sh              # world seed 1234, round 2
#   ROUNDS=3 bash data/rounds.sh     # rounds 2 and 3
#   SEED=7 bash data/rounds.sh       # after SEED=7 bash data/pipeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-1234}
ROUNDS=${ROUNDS:-2}
rm_dir=out/rm ppo_dir=out/ppo ptx_dir=out/ppo-ptx rankings=data/world/rm_train.jsonl rows=()
for r in $(seq 2 "$ROUNDS"); do
    python data/collect.py --policy "$ppo_dir/model.pt" --out_prefix "data/world/rm_round$r" --seed $((SEED + r - 1)) --draws 4
    cat "$rankings" "data/world/rm_round${r}_train.jsonl" > "data/world/rm_rounds${r}_train.jsonl"
    rankings=data/world/rm_rounds${r}_train.jsonl
    python reward.py --init_rm "$rm_dir/model.pt" --train "$rankings" --epochs 1 --out_dir "out/rm-round$r"
    rm -rf "out/ppo-round$r" "out/ppo-ptx-round$r"   # last.pt: policy, value, optimizers, iteration
    cp -r "$ppo_dir" "out/ppo-round$r" && cp -r "$ptx_dir" "out/ppo-ptx-round$r"
    python ppo.py --ptx_coef 0 --resume --rm "out/rm-round$r/model.pt" --iterations $((50 * r)) --out_dir "out/ppo-round$r"
    python ppo.py --resume --rm "out/rm-round$r/model.pt" --iterations $((50 * r)) --out_dir "out/ppo-ptx-round$r"
    rm_dir=out/rm-round$r ppo_dir=out/ppo-round$r ptx_dir=out/ppo-ptx-round$r
    rows+=(--policy "PPO-round$r=out/ppo-round$r/model.pt" --policy "PPO-ptx-round$r=out/ppo-ptx-round$r/model.pt")
done
python evaluate.py --seed "$SEED" --base '' "${rows[@]}" --out_dir out/eval-rounds
echo "rounds.sh: done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
