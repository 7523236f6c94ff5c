"""
The default world: deterministic files, splits disjoint by user and by prompt, demonstrations that
every labeler scores perfect, a corpus without the instruction template.

    python -m pytest tests/test_world.py -q
"""
import json
import os
import random

import pytest

from data import world
from data.labelers import TRAIN_LABELERS, HELDOUT_LABELERS, judge, utility

FILES = ["corpus_train.txt", "corpus_val.txt", "nlp_task.jsonl", "sft_train.jsonl", "sft_val.jsonl",
         "rm_prompts.jsonl",
         "ppo_prompts.jsonl", "test_prompts.jsonl"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    world.main(["--seed", "1234", "--out", str(a)])
    world.main(["--seed", "1234", "--out", str(b)])
    return a, b


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_deterministic(out):
    a, b = out
    assert sorted(os.listdir(a)) == sorted(FILES)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), \
            f"{name} differs between two runs with the same seed"


def test_other_seed_other_world(tmp_path):
    assert world.make_world(1234) != world.make_world(7)
    assert world.build_splits(7)["test_prompts"][0]["prompt"] != world.build_splits(1234)["test_prompts"][0]["prompt"]


def test_corpus(out):
    a, _ = out
    train = (a / "corpus_train.txt").read_text(encoding="utf-8")
    val = (a / "corpus_val.txt").read_text(encoding="utf-8")
    for text in (train, val):
        assert "Instruction:" not in text and "Response:" not in text
        assert all(line.strip() for line in text.split("\n")[:-1]), "one non-empty document per line"
    assert 2e6 < len(train) < 4e6, len(train)
    assert 0.03 < len(val) / len(train) < 0.08
    for item in read_jsonl(a / "nlp_task.jsonl"):
        assert item["prompt"].endswith(" A:") and item["answer"]


def test_world_tokenizer_file_is_what_world_py_computes():
    with open(os.path.join(os.path.dirname(world.__file__), "gpt2-world.txt")) as f:
        assert [int(r) for r in f.read().split()] == world.tokenizer_ranks(), \
            "rerun python data/world.py --tokenizer"


def test_reading_comprehension_in_the_corpus(out):
    # the base must learn to copy from its context: passages with questions about them, and words said twice
    a, _ = out
    docs = (a / "corpus_train.txt").read_text(encoding="utf-8").split("\n")[:-1]
    reading = [d for d in docs if " went to the " in d and " Q: " in d]
    echoed = [d for d in docs if " read it back: " in d or " said it again: " in d]
    assert 0.15 < len(reading) / len(docs) < 0.18 and 0.20 < len(echoed) / len(docs) < 0.24  # 3/18, 4/18
    for d in echoed[:50]:  # the second time is the first, word for word
        first, second = d.split(": ", 1)[1].split(". ", 1) if " read it back: " in d else d.split('"')[1::2]
        assert second.split(": ",
                            1)[-1].rstrip(".") == first.rstrip(".") if " read it back: " in d else first == second
    items = read_jsonl(a / "nlp_task.jsonl")
    skills = {i["skill"] for i in items}
    assert skills == {"facts", "reading"}
    for i in items:  # each answer is in the passage before the question: reading comprehension is copying
        if i["skill"] == "reading":
            assert i["answer"] in i["prompt"][:i["prompt"].index(" Q: ")]


def test_prompt_files(out):
    a, _ = out
    for name, n in world.SPLITS.items():
        records = read_jsonl(a / f"{name}.jsonl")
        assert len(records) == n
        for r in records:
            assert isinstance(r["prompt"],
                              str) and r["prompt"].startswith("Instruction: ") and r["prompt"].endswith("\nResponse:")
            assert isinstance(r["user"],
                              int) and r["category"] in world.CATEGORIES and r["style"] in world.STYLES
            assert r["id"].startswith(name) and r["spec"]["kind"] == r["category"]
            assert len(world.words(r["prompt"])) <= 80 and world.approx_tokens(r["prompt"]) <= world.MAX_PROMPT_TOKENS
            if name.startswith("sft"):
                assert r["response"] == " " + r["spec"]["ideal"]
            else:
                assert "response" not in r
        cats = {c: sum(r["category"] == c for r in records) / n for c in world.CATEGORIES}
        assert 0.3 < cats["generation"] < 0.5 and cats["harmful"] > 0.02, cats
        assert {r["style"] for r in records} == set(world.STYLES)


def test_splits_disjoint():
    splits = world.build_splits(1234)
    test_users = {r["user"] for r in splits["test_prompts"]}
    train_users = {r["user"] for name, rs in splits.items() if name != "test_prompts" for r in rs}
    assert not test_users & train_users, "test prompts must come from users never seen in training"
    texts = [r["prompt"] for rs in splits.values() for r in rs]
    assert len(texts) == len(set(texts)), "a prompt text appears twice"


def test_demonstrations_are_perfect():
    for name, records in world.build_splits(1234).items():
        for r in records:
            j = judge(r["spec"], r["spec"]["ideal"])
            assert j["follows"] and j["stops"], (r["prompt"], r["spec"]["ideal"], j)
            assert not (j["violates_constraint"] or j["hallucinates"] or j["inappropriate"]), (r["prompt"], j)
            assert j["quality"] == 7 and 1 <= len(world.words(r["spec"]["ideal"])) <= 30


def test_few_shot_prefix():
    prefix = world.few_shot_prefix(1234)
    shots = world.build_splits(1234)["sft_train"][:len(world.FEW_SHOT_CATEGORIES)]
    assert prefix == "".join(r["prompt"] + r["response"] + "\n\n" for r in shots), \
        "the prefix is sft_train's first demonstrations"
    assert prefix.count("Instruction:") == len(shots) and prefix.endswith("\n\n")


def test_candidates_are_worse_than_the_ideal():
    rng = random.Random(0)
    for r in world.build_splits(1234)["rm_prompts"][:500]:
        cands = world.candidates(r["spec"], rng)
        assert cands[0] == r["spec"]["ideal"] and len(cands) == len(set(cands)) >= 4
        for labeler in (TRAIN_LABELERS[0], HELDOUT_LABELERS[0]):
            best = utility(labeler, judge(r["spec"], cands[0]))
            assert all(utility(labeler, judge(r["spec"], c)) < best for c in cands[1:]), r["prompt"]


def test_no_task_asks_for_another_case():
    # a 1M model does not carry what it knows of " hen" over to " Hen" or " HEN" (RESULTS.md, "No change of
    # case"): nothing asks for capitals or lowercase, and a one-word answer is the word as a sentence writes it
    people, checked = world.make_world(1234)["people"], {}
    for records in world.build_splits(1234).values():
        for r in records:
            spec, ask = r["spec"], r["prompt"].rsplit("Instruction:", 1)[1]
            assert "caps" not in spec and "capitals" not in ask and "lowercase" not in ask, r["prompt"]
            if spec.get("words") == 1 and spec["kind"] == "classification":  # "Is Oakton ...?" -> "town."
                assert spec["ideal"] == spec["needs"][0] + "." and spec["ideal"].islower(), spec["ideal"]
            if spec.get("words") == 1 and spec.get("field") in ("town", "pet"):
                # "What pet does Bob have? Answer in one word." -> "hen." ("Bob has a brown hen."); towns are names
                truth = people[spec["about"]][spec["field"]]
                assert spec["ideal"] == truth + "." and spec["ideal"][0].isupper() == (spec["field"] == "town")
                checked[spec["field"]] = checked.get(spec["field"], 0) + 1
    assert checked["town"] > 10 and checked["pet"] > 10, checked
