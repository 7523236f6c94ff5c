#!/usr/bin/env bash
# The whole InstructGPT pipeline on the default world, CPU only, no network (README's first command).
#   bash data/pipeline.sh            # world seed 1234
#   SEED=7 bash data/pipeline.sh     # another world
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-1234}
python data/world.py --seed "$SEED"                  # corpus, prompts, demonstrations, labelers' specs -> data/world/
python sft.py --pretrain                             # the base LM ("GPT-3" of this world) -> out/base/model.pt
python sft.py                                        # step 1: SFT on demonstrations -> out/sft/model.pt
python data/collect.py --seed "$SEED"                # step 2a: K = 4..9 SFT samples per prompt, 8 draws, ranked by training labelers
python reward.py                                     # step 2b: reward model, equation (1) -> out/rm/model.pt
python ppo.py --ptx_coef 0 --out_dir out/ppo         # step 3: PPO -> out/ppo/model.pt
python ppo.py --out_dir out/ppo-ptx                  # step 3: PPO-ptx -> out/ppo-ptx/model.pt
python evaluate.py --seed "$SEED"                    # Figure 1 at toy scale -> out/eval/results.md
python evaluate.py --curves out/sft out/rm out/ppo out/ppo-ptx  # training curves -> out/eval/
echo "pipeline.sh: done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
