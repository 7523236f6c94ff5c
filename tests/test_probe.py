"""
data/probe.py --relabel: rankings ordered by one part of the labelers' judgement alone, on a hand-made
ranking of a world-1234 prompt; the prompt-swap accuracy that tells a prompt-reading scorer from a blind one;
--ceiling's accuracy of a scorer of judged parts; --contrast's pairs of demonstrations; --false_facts' minimal
pairs; the one constraint that alone separates two judged completions (the probe's per-constraint rows);
--best_of's pick among a prompt's samples by each picker, judged against the prompt's last sample; and the
lists and stories of --counts, every one true, the labelers' verdict best at the count asked; and the people
--few_shot counts as copied from the few-shot prefix; and a language model's checkpoint passed as the reward
model is a one-line error.

    python -m pytest tests/test_probe.py -q
"""
import json
import os
import random
import re

import pytest

from data.labelers import judge
from data.probe import (best_of, ceiling_accuracy, contrast, count_lists, count_stories,
                        false_fact_contrast, load_rm, names_copied, prompt_swap_accuracy, read_rankings, relabel,
                        the_one_constraint)
from data.world import FOODS, PEOPLE, build_splits, few_shot_prefix, make_world
from model import GPT, GPTConfig, save_checkpoint

PROMPT = "Instruction: Write a sentence about the swan in exactly 4 words.\nResponse:"  # world 1234's rm_prompts-439


def test_relabel_orders_by_one_part(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    # a labeler's noisy order, worst first on purpose: "It is." names no swan (done 0); both others do (done 1);
    # "The swan is big." stops, the stutter does not
    ranking = {"prompt": PROMPT, "completions": ["It is.", "The swan swan is big.", "The swan is big."]}
    src.write_text(json.dumps(ranking) + "\n" + json.dumps(dict(ranking, completions=["It is.", "It was."])) + "\n")
    rankings = read_rankings(str(src), 1234)
    relabel(rankings, "stops", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the second ranking: both stop, so "stops" never differs and it is dropped; "It is." stops too, so one of the
    # two stopping completions (a seeded choice) comes first, the stutter last
    assert len(rows) == 1 and rows[0]["completions"][-1] == "The swan swan is big."
    assert len(rows[0]["completions"]) == 2 and rows[0]["completions"][0] in ("It is.", "The swan is big.")
    relabel(rankings, "done", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["completions"][-1] == "It is."  # done 0 is last; the second ranking: both 0
    assert not os.path.exists(str(out) + ".tmp")


def test_unknown_prompt_is_named(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Instruction: hello\nResponse:", "completions": ["a", "b"]}) + "\n")
    with pytest.raises(SystemExit, match="is not a prompt of world 1234"):
        read_rankings(str(src), 1234)


def test_a_language_model_is_no_reward_model(tmp_path):
    config = dict(block_size=32, vocab_size=300, n_layer=1, n_head=2, n_embd=16)
    lm, rm = str(tmp_path / "lm.pt"), str(tmp_path / "rm.pt")
    save_checkpoint(lm, GPT(GPTConfig(**config)), tokenizer="gpt2-2048", step=0)
    save_checkpoint(rm, GPT(GPTConfig(**config, head="scalar")), tokenizer="gpt2-2048", step=0)
    with pytest.raises(SystemExit, match=re.escape(f"error: {lm} is not a reward model but a language model")):
        load_rm(lm)
    model, enc = load_rm(rm)
    assert model.config.head == "scalar" and not model.training and enc.n_vocab == 2048


def test_prompt_swap_accuracy_separates_reading_from_blind(tmp_path):
    # two generation prompts of world 1234 and one ranking each, best first
    a = "Instruction: Write a sentence about Hugo.\nResponse:"
    b = "Instruction: Write a sentence about Lena.\nResponse:"
    spec = {"kind": "generation"}
    rankings = [(spec, {"prompt": a, "completions": [" Hugo is a cook.", " Lena is a cook.", " Cook."]}),
                (spec, {"prompt": b, "completions": [" Lena is a cook.", " Hugo is a cook.", " Cook."]})]

    def reading(prompt, completions):  # 2 for naming the prompt's person, 1 for any person, 0 for none
        name = prompt.split("about ")[1].split(".")[0]
        return [2 if name in c else 1 if c.split()[0] in ("Hugo", "Lena") else 0 for c in completions]

    def blind(prompt, completions):  # prefers Hugo, whatever was asked
        return [2 if "Hugo" in c else 1 if "Lena" in c else 0 for c in completions]

    # own prompt: reading orders all 3 pairs of both rankings right; swapped (a's other is b and b's is a):
    # each ranking's first two come out reversed, 2 of 3 right in each -> 4 / 6
    assert prompt_swap_accuracy(reading, rankings) == (1.0, 4 / 6)
    # blind: ranking a all 3 right, ranking b 2 of 3 (Hugo over Lena is wrong), with either prompt
    assert prompt_swap_accuracy(blind, rankings) == (5 / 6, 5 / 6)


def test_ceiling_accuracy_counts_ties_half(tmp_path):
    src = tmp_path / "in.jsonl"  # the labeler's order, worst first on purpose (as in the relabel test)
    ranking = {"prompt": PROMPT, "completions": ["It is.", "The swan swan is big.", "The swan is big."]}
    src.write_text(json.dumps(ranking) + "\n")
    rankings = read_rankings(str(src), 1234)
    # stops: 1, 0, 1 -> pairs (1st, 2nd) right, (1st, 3rd) a tie, (2nd, 3rd) wrong: (1 + 0.5 + 0) / 3
    # done: 0, 1, 1 -> wrong, wrong, a tie: 0.5 / 3
    accuracy = ceiling_accuracy({"stops": lambda j: j["stops"], "done": lambda j: j["done"]}, rankings)
    assert accuracy["stops"] == {"all": 0.5, "generation": 0.5}
    assert accuracy["done"] == {"all": 0.5 / 3, "generation": 0.5 / 3}


def test_contrast_pairs_prompts_that_differ_only_in_names():
    def record(instruction, ideal, style="plain", **spec):
        return {"prompt": f"Instruction: {instruction}\nResponse:", "style": style, "category": spec["kind"],
                "spec": dict(spec, ideal=ideal)}
    story = "{} and {} went to the park. {} brought a kite. They saw a fox there. Then they ate some pie."
    one, two = story.format("Rosa", "Dan", "Rosa"), story.format("Bob", "Ana", "Bob").replace("park", "hill")
    records = [record("Write a sentence about Bob.", "Bob likes pie.", kind="generation"),
               record("Write a sentence about Ana.", "Ana owns a cup.", kind="generation"),
               record("Write a sentence about Tom in exactly 3 words.", "Tom cooks well.", kind="generation", words=3),
               record("Write a sentence about Kim.", "Kim likes rice.", "few_shot", kind="generation"),
               record(f"Summarize in one sentence: {one}", "Rosa and Dan went to the park.", kind="summarization",
                      passage=one, sentences=1),
               record(f"Summarize in one sentence: {two}", "Bob and Ana went to the hill.", kind="summarization",
                      passage=two, sentences=1)]
    # Bob and Ana each other's only partner; Tom's request has a constraint the others lack, Kim's is few-shot;
    # the two summaries differ in their passages and names only
    pairs = contrast(records)
    assert [r["completions"] for r in pairs] == [
        [" Bob likes pie.", " Ana owns a cup."], [" Ana owns a cup.", " Bob likes pie."],
        [" Rosa and Dan went to the park.", " Bob and Ana went to the hill."],
        [" Bob and Ana went to the hill.", " Rosa and Dan went to the park."]]
    assert [r["prompt"] for r in pairs] == [records[i]["prompt"] for i in (0, 1, 4, 5)]


def test_false_facts_swap_one_fact_of_the_subject():
    food = make_world(1234)["people"]["Bob"]["food"]
    ask = lambda about, **spec: {"prompt": f"Instruction: Write a sentence about {about}.\nResponse:",  # noqa: E731
                                 "spec": dict(kind="generation", about=about, max_sentences=1, **spec)}
    records = [ask("Bob", ideal=f"Bob likes {food}."),
               ask("Bob", ideal="Bob is here.", needs=["Bob"]),  # no fact of Bob's to swap: skipped
               ask("Bob", ideal=f"likes {food}.", prefix="Bob")]  # the prompt begins the sentence: skipped
    pairs = false_fact_contrast(records)
    assert len(pairs) == 1 and pairs[0]["prompt"] == records[0]["prompt"]
    true, false = pairs[0]["completions"]
    # the one slot is Bob's food: the second says he likes another food of the world, every other word alike
    assert true == f" Bob likes {food}." and false.startswith(" Bob likes ") and false.endswith(".")
    other = false[len(" Bob likes "):-1]
    assert other in FOODS and other != food
    assert judge(records[0]["spec"], true)["honest"] == 1 and judge(records[0]["spec"], false)["honest"] == 0


def test_the_one_constraint_names_the_constraint_that_alone_differs(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": PROMPT, "completions": ["a", "b"]}) + "\n")
    spec = read_rankings(str(src), 1234)[0][0]
    texts = (" The swan eats plants.", " The swan is an animal that eats plants.", " Swan eats plants.")
    four, eight, three = (judge(spec, c) for c in texts)
    # 4 words meets "exactly 4 words", 8 and 3 words break it: one constraint apart, or none apart
    assert four["violations"] == [] and eight["violations"] == ["words"] == three["violations"]
    assert the_one_constraint(four, eight) == "words" and the_one_constraint(eight, four) == "words"
    assert the_one_constraint(eight, three) is None and the_one_constraint(four, four) is None


def test_best_of_picks_by_each_picker_and_judges_the_pick():
    spec = {r["prompt"]: r["spec"] for r in build_splits(1234)["rm_prompts"]}[PROMPT]  # the swan eats plants
    # each prompt: two samples to pick from, then the independent sample every pick is judged against. Judged
    # alone: " It is." names no swan in 2 words (not done, breaks "exactly 4"); " The swan is big." does the task
    # and is true; " The swan is small." does it but a swan is big (hallucinates)
    texts = [[" It is.", " The swan is big.", " It is."], [" The swan is small.", " The swan is big.", " It is."]]
    ended = [[True] * 3] * 2
    pickers = {"second": [[0.0, 1.0, 9.0], [0.0, 1.0, 9.0]], "first": [[1.0, 0.0, 9.0], [1.0, 0.0, 9.0]]}
    r = best_of([spec, spec], texts, ended, pickers, [1, 2], random.Random(0))
    for name in pickers:  # best of 1 is the first sample whatever the picker: 0 + 1 of 2 follow, 1 of 2 invents
        assert {k: r[name][1][k] for k in ("follows", "violates", "hallucinates")} == \
            {"follows": 0.5, "violates": 0.5, "hallucinates": 0.5}
    # best of 2 by "second": " The swan is big." twice (the 9.0 of the judged sample is never a candidate); it
    # beats " It is." by helpfulness 1 against 0.45 (about 1.1 of utility, noise 0.23: a flip is a 1% chance)
    assert r["second"][2] == {"win": 1.0, "follows": 1.0, "violates": 0.0, "hallucinates": 0.0}
    assert r["first"][2]["follows"] == 0.5 and r["first"][2]["hallucinates"] == 0.5


def test_count_lists_fit_and_the_verdict_is_best_at_the_count_asked():
    spec = {"kind": "brainstorming", "items": 3, "pool": ["cat", "dog", "hamster", "mouse"],
            "list_format": "numbered", "seed": 1234}
    lists = count_lists(spec, random.Random(0))
    assert len(lists) == 4 and all(x.startswith(" 1. ") for x in lists)
    assert [x.count(". ") for x in lists] == [1, 2, 3, 4]
    done = [judge(spec, x)["done"] for x in lists]
    # every item fits: done is the fitting items of those written or asked for if more, items / max(items, 3);
    # the count is met at 3 alone
    assert done == [1 / 3, 2 / 3, 1.0, 1.0]
    assert [judge(spec, x)["violations"] for x in lists] == [["items"], ["items"], [], ["items"]]
    assert count_lists(dict(spec, items=4), random.Random(0))[-1].count(". ") == 4, "no more than the pool"
    comma = count_lists(dict(spec, list_format="comma"), random.Random(0))
    assert comma[2].count(",") == 2 and not judge(dict(spec, list_format="comma"), comma[2])["violations"]


def test_count_stories_are_true_and_the_verdict_is_best_at_the_count_asked():
    # world 1234's sft_train prompt "Write a story about Vera and Sam in two sentences.": its ideal story cut
    # to one sentence, as it is, and with the third sentence of the template (Sam lives in Maplewood)
    spec = {"kind": "generation", "about": "Vera", "needs": ["Vera", "Sam"], "sentences": 2, "max_sentences": 2,
            "ideal": "Vera and Sam met at the garden. Vera brought some honey.", "seed": 1234}
    stories = count_stories(spec, make_world(1234))
    met, brought = " Vera and Sam met at the garden.", " Vera brought some honey."
    assert stories == [met, met + brought, met + brought + " Then Sam went home to Maplewood."]
    judged = [judge(spec, x) for x in stories]
    assert [j["violations"] for j in judged] == [["sentences"], [], ["sentences"]]
    assert not any(j["hallucinates"] for j in judged), "every sentence is true of world 1234"
    three = dict(spec, sentences=3, max_sentences=3, ideal=stories[2][1:])
    assert count_stories(three, make_world(1234)) == stories, "a three-sentence story is cut, never lengthened"


def test_few_shot_copies_are_the_prefix_people_the_prompt_does_not_name():
    prefix = few_shot_prefix(1234)  # world 1234's two solved examples: "What does Cal own?", "... about Vera."
    assert "What does Cal own?" in prefix and "Write a sentence about Vera." in prefix
    people = set(PEOPLE) & set(prefix.replace("?", " ").replace(".", " ").split())
    assert people == {"Cal", "Vera"}
    ask = "Instruction: Write a sentence about Sam.\nResponse:"
    assert names_copied(ask, " Vera is a cook and likes honey.", people) == {"Vera"}
    assert names_copied(ask, " Sam likes pie.", people) == set()
    assert names_copied("Instruction: What does Cal own?\nResponse:", " Cal owns a coat, like Vera.",
                        people) == {"Vera"}, "Cal is the prompt's own, Vera is copied"
    assert names_copied(ask, " Vera and Cal met.", people) == {"Cal", "Vera"}
