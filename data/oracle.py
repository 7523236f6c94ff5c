"""
PPO against the labelers themselves: what a perfect reward model would buy. ppo.py runs unchanged, but
each rollout is scored by the training labelers' noise-free judgement of the response (data/labelers.py)
instead of by the reward model, so its policy is the best any reward model learned from their rankings
could give PPO with the same settings and budget.

    python data/oracle.py --ptx_coef 0 --out_dir out/ppo-oracle      # every flag is ppo.py's
    python evaluate.py --test_prompts data/world/rm_prompts.jsonl --n_prompts 500 --base '' \\
        --corpus_val '' --nlp_task '' --ppo out/ppo-oracle/model.pt --ppo_ptx '' \\
        --policy PPO-rm=out/ppo/model.pt --out_dir out/eval-oracle

The score is the twelve training labelers' mean utility divided by the temperature of their noise:
the logit of P(a over b) = σ((u_a − u_b) / T) that a reward model fitting their comparisons exactly
would learn; then shifted so the ideal responses of --prompts score 0 on average, as reward.py
shifts its demonstrations. The value function still starts from --rm. Only the world's own prompts
can be scored: the labelers judge by each prompt's 'spec'.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # importable when run as a script
import ppo  # noqa: E402
from common import print0, read_jsonl  # noqa: E402
from model import get_tokenizer, load_checkpoint  # noqa: E402
from data.labelers import NOISE, judge, mean_utility  # noqa: E402


def labelers_score(spec, response, ended=True):
    """r*(x, y): the training labelers' mean utility of a response over their noise's temperature."""
    return mean_utility(judge(spec, response, ended)) / NOISE


def score_by_labelers(rollout, enc, specs, shift, missing_eot_penalty, reward_clip=0.0):
    """Replace a rollout's reward model scores by the labelers' (plus shift), then ppo.py's final
    score: a response cut off before <|endoftext|> still gets the fixed penalty."""
    tokens, mask, response_mask = rollout["tokens"], rollout["mask"], rollout["response_mask"]
    P = tokens.size(1) - response_mask.size(1)
    scores = []
    for row, row_mask, response, ended in zip(tokens, mask, response_mask, rollout["ended"]):
        prompt = enc.decode(row[:P][row_mask[:P]].tolist())
        text = enc.decode(row[P:][response][:-1 if ended else None].tolist())
        scores.append(labelers_score(specs[prompt], text, bool(ended)) + shift)
    rollout["rm_score"] = torch.tensor(scores, dtype=rollout["rm_score"].dtype)
    rollout["score"] = ppo.final_score(rollout["rm_score"], rollout["ended"], missing_eot_penalty, reward_clip)
    return rollout


def main(argv=None):
    ppo.parser.description = __doc__.split("\n\n")[0]  # --help: ppo.py's flags under this script's name
    args = ppo.parser.parse_args(argv)
    records = read_jsonl(args.prompts, ["prompt"])
    if "spec" not in records[0]:
        raise SystemExit(f"error: {records[0]['_where']}: no 'spec': the labelers only judge the world's own "
                         "prompts")
    specs = {r["prompt"]: r["spec"] for r in records}
    shift = -sum(labelers_score(s, s["ideal"]) for s in specs.values()) / len(specs)
    print0(f"score: the training labelers' noise-free judgement, shifted by {shift:.3f} (ideal responses: 0)")
    enc = get_tokenizer(load_checkpoint(args.policy)["tokenizer"])
    rm_scored = ppo.score_rollouts

    def score_rollouts(*a, **kw):
        rollout = rm_scored(*a, **kw)
        return score_by_labelers(rollout, enc, specs, shift, args.missing_eot_penalty, args.reward_clip)

    ppo.score_rollouts = score_rollouts
    ppo.main(argv)


if __name__ == "__main__":
    main()
