"""
data/oracle.py: PPO scored by the training labelers' noise-free judgement. The score of a response by
hand from its judged parts, the rescoring of a hand-made rollout (its prompt and response decoded back,
a cut-off response keeping ppo.py's penalty), and the one-line error for prompts without a spec.

    python -m pytest tests/test_oracle.py -q
"""
import subprocess
import sys

import pytest
import torch

from common import write_jsonl
from data.labelers import NOISE, TRAIN_LABELERS
from data.oracle import labelers_score, score_by_labelers
from model import get_tokenizer

PROMPT = "Instruction: What does the otter eat?\nResponse:"  # a world-7 open QA prompt (ppo_prompts-0)
SPEC = {"kind": "open_qa", "about": "otter", "field": "diet", "answer": "fish", "max_sentences": 1,
        "ideal": "The otter eats fish.", "seed": 7}


def mean_utility(helpful, honest, harmless):
    """The twelve training labelers' mean utility with the training priorities 2.25 / 0.75 / 1.125."""
    return sum(2.25 * helpful * lab["helpful"] + 0.75 * honest * lab["honest"] + 1.125 * harmless * lab["harmless"]
               for lab in TRAIN_LABELERS) / len(TRAIN_LABELERS)


def test_labelers_score_by_hand():
    assert NOISE == 0.23
    # the ideal answer: done, no constraint to break, stops, fluent -> helpful 1, honest 1, harmless 1
    assert labelers_score(SPEC, " The otter eats fish.") == pytest.approx(mean_utility(1, 1, 1) / 0.23)
    # a wrong diet: not done (0.4 · 0), constraints vacuously met (0.3), stops (0.3) -> helpful 0.6; a
    # false fact of the otter -> honest 0
    assert labelers_score(SPEC, " The otter eats seeds.") == pytest.approx(mean_utility(0.6, 0, 1) / 0.23)
    # the empty response helps nobody; it says nothing false
    assert labelers_score(SPEC, "") == pytest.approx(mean_utility(0, 1, 1) / 0.23)


def test_rollout_rescored_by_labelers():
    enc = get_tokenizer("gpt2-world")
    prompt = enc.encode_ordinary(PROMPT)
    done = enc.encode_ordinary(" The otter eats fish.") + [enc.eot_token]
    cut = enc.encode_ordinary(" The otter eats seeds")  # no <|endoftext|>: cut off
    P, N = len(prompt) + 2, max(len(done), len(cut))  # two pad tokens on the left of each prompt
    tokens = torch.full((2, P + N), enc.eot_token)
    mask = torch.zeros(2, P + N, dtype=torch.bool)
    response_mask = torch.zeros(2, N, dtype=torch.bool)
    for i, response in enumerate([done, cut]):
        tokens[i, 2:P], tokens[i, P:P + len(response)] = torch.tensor(prompt), torch.tensor(response)
        mask[i, 2:P + len(response)] = True
        response_mask[i, :len(response)] = True
    rollout = {"tokens": tokens, "mask": mask, "response_mask": response_mask,
               "ended": torch.tensor([True, False]), "rm_score": torch.zeros(2), "score": torch.zeros(2)}
    score_by_labelers(rollout, enc, {PROMPT: SPEC}, shift=0.5, missing_eot_penalty=-1.0)
    # the cut-off wrong answer: helpful 0.4 · 0 + 0.3 + 0.3 · 0 (it did not stop) = 0.3, honest 0
    expected = [mean_utility(1, 1, 1) / 0.23 + 0.5, mean_utility(0.3, 0, 1) / 0.23 + 0.5]
    assert rollout["rm_score"].tolist() == pytest.approx(expected, rel=1e-6)
    assert rollout["score"].tolist() == pytest.approx([expected[0], -1.0], rel=1e-6)


def test_prompts_without_spec_are_refused(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say fox:"}])
    out = subprocess.run([sys.executable, "data/oracle.py", "--prompts", str(prompts)], capture_output=True,
                         text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {prompts}:1: no 'spec': the labelers only judge the world's own prompts"
