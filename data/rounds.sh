#!/usr/bin/env bash
# Paper §3.1: "steps 2 and 3 can be iterated continuously; more comparison data is collected on the
# current best policy". Round 2 of the default world, after data/pipeline.sh: the training labelers rank
# samples of the round-1 PPO policy, the RM continues on old + new rankings, PPO continues from the
# round-1 policy against the new RM (its KL penalty still to SFT), and the held-out labelers compare
# both rounds with SFT.
#   bash data/rounds.sh              # world seed 1234
#   SEED=7 bash data/rounds.sh       # after SEED=7 bash data/pipeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-1234}
python data/collect.py --policy out/ppo/model.pt --out_prefix data/world/rm_round2 --seed $((SEED + 1))
cat data/world/rm_train.jsonl data/world/rm_round2_train.jsonl > data/world/rm_rounds_train.jsonl
python reward.py --init_rm out/rm/model.pt --train data/world/rm_rounds_train.jsonl --out_dir out/rm-round2
rm -rf out/ppo-round2 && cp -r out/ppo out/ppo-round2   # the round-1 run's last.pt: policy, value, optimizers, iteration
python ppo.py --ptx_coef 0 --resume --rm out/rm-round2/model.pt --iterations 100 --out_dir out/ppo-round2
python evaluate.py --seed "$SEED" --base '' --ppo_ptx '' --policy PPO-round2=out/ppo-round2/model.pt --out_dir out/eval-rounds
echo "rounds.sh: done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
