"""
data/probe.py --relabel: rankings ordered by one part of the labelers' judgement alone, on a hand-made
ranking of a world-1234 prompt.

    python -m pytest tests/test_probe.py -q
"""
import json
import os

import pytest

from data.probe import read_rankings, relabel

PROMPT = "Instruction: Write one sentence about the parrot in exactly 4 words.\nResponse:"  # world 1234's rm_prompts-2


def test_relabel_orders_by_one_part(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    # a labeler's noisy order, worst first on purpose: "It is." names no parrot (done 0); both others do (done 1);
    # "The parrot is small." stops, the stutter does not
    ranking = {"prompt": PROMPT, "completions": ["It is.", "The parrot parrot is small.", "The parrot is small."]}
    src.write_text(json.dumps(ranking) + "\n" + json.dumps(dict(ranking, completions=["It is.", "It was."])) + "\n")
    rankings = read_rankings(str(src), 1234)
    relabel(rankings, "stops", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the second ranking: both stop, so "stops" never differs and it is dropped; "It is." stops too, so one of the
    # two stopping completions (a seeded choice) comes first, the stutter last
    assert len(rows) == 1 and rows[0]["completions"][-1] == "The parrot parrot is small."
    assert len(rows[0]["completions"]) == 2 and rows[0]["completions"][0] in ("It is.", "The parrot is small.")
    relabel(rankings, "done", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["completions"][-1] == "It is."  # done 0 is last; the second ranking: both 0
    assert not os.path.exists(str(out) + ".tmp")


def test_unknown_prompt_is_named(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Instruction: hello\nResponse:", "completions": ["a", "b"]}) + "\n")
    with pytest.raises(SystemExit, match="is not a prompt of world 1234"):
        read_rankings(str(src), 1234)
