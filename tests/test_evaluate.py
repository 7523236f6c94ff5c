""" evaluate.py: the statistics by hand (labelers' and reward-model judge's), and a whole evaluation
of tiny policies on a generated world (the reward-model judge on real data runs in
tests/test_hh_rlhf.py's stage chain), and the over-optimization curve (--curve) of a tiny PPO run
directory; talking to tiny policies (--prompt, --chat) and the training curves (--curves) of logs
the test writes.

    python -m pytest tests/test_evaluate.py -q
"""
import importlib.util
import io
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import evaluate
from common import rm_scores
from model import GPT, GPTConfig, get_tokenizer, load_checkpoint, model_from_checkpoint, save_checkpoint

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_mean_ci_by_hand():
    # outcomes 1, 1, 0, 0.5: mean 0.625; sample variance [(.375)² + (.375)² + (.625)² + (.125)²] / 3
    # = 0.729166.../3
    mean, half = evaluate.mean_ci([1.0, 1.0, 0.0, 0.5])
    var = (0.375 ** 2 + 0.375 ** 2 + 0.625 ** 2 + 0.125 ** 2) / 3
    assert abs(mean - 0.625) < 1e-12
    assert abs(half - 1.96 * math.sqrt(var / 4)) < 1e-12


def test_rm_winrate_by_hand():
    # 4 prompts: the policy wins the 1st (0.9 > 0.1), ties the 2nd (both never ended: the penalty
    # -1.0 each), loses the 3rd (-0.5 < 0.2), wins the 4th (0.3 > -1.0): outcomes 1, 0.5, 0, 1 ->
    # mean 2.5/4 = 0.625
    policy, sft = [0.9, -1.0, -0.5, 0.3], [0.1, -1.0, 0.2, -1.0]
    mean, half = evaluate.rm_winrate(policy, sft)
    var = (0.375 ** 2 + 0.125 ** 2 + 0.625 ** 2 + 0.375 ** 2) / 3  # deviations of 1, 0.5, 0, 1 from 0.625
    assert abs(mean - 0.625) < 1e-12
    assert abs(half - 1.96 * math.sqrt(var / 4)) < 1e-12
    assert evaluate.rm_winrate(sft, policy)[0] == 1 - 0.625, "swapping the two sides turns wins into losses"


def test_rm_scores_last_token_and_penalty():
    torch.manual_seed(0)
    rm = GPT(GPTConfig(block_size=32, vocab_size=20, n_layer=1, n_head=2, n_embd=16, head="scalar")).eval()
    contexts, responses, ended = [[1, 2, 3], [4], [5, 6]], [[7, 19], [8, 9, 10], [11]], [True, False, True]
    # 2 batches, left padding in each
    got = evaluate.rm_scores(rm, contexts, responses, ended, -2.5, "cpu", batch_size=2)
    with torch.no_grad():  # each row alone, no padding: the scalar head at its last token
        alone = [rm(torch.tensor([c + r]))[0, -1].item() for c, r in zip(contexts, responses)]
    assert abs(got[0] - alone[0]) < 1e-5 and abs(got[2] - alone[2]) < 1e-5
    assert got[1] == -2.5, "a response that never ended gets the penalty, not the RM's score"


def test_load_policy_checks_the_tokenizer(tmp_path):
    """Every row of the table, --curve and --chat compare a policy with SFT on the same tokens:
    load_policy stops on a policy whose tokenizer is not SFT's, in one line."""
    path = str(tmp_path / "policy.pt")
    save_checkpoint(path, GPT(GPTConfig(block_size=32, vocab_size=300, n_layer=1, n_head=2, n_embd=16)),
                    tokenizer="gpt2-300")
    assert evaluate.load_policy(path, "cpu", "gpt2-300", "sft.pt")[1]["tokenizer"] == "gpt2-300"
    with pytest.raises(SystemExit, match=f"error: {path} uses tokenizer gpt2-300 but sft.pt uses gpt2-world"):
        evaluate.load_policy(path, "cpu", "gpt2-world", "sft.pt")


def test_sequence_logprobs_sum_response_tokens_only():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=20, n_layer=1, n_head=2, n_embd=16)).eval()
    contexts, responses = [[1, 2, 3], [4]], [[5, 6], [7, 8, 9]]
    got = evaluate.sequence_logprobs(model, contexts, responses, "cpu")
    # each alone, no padding: log_softmax at the positions before each response token
    for c, r, g in zip(contexts, responses, got):
        x = torch.tensor([c + r])
        logp = torch.log_softmax(model(x)[0], -1)
        expected = sum(logp[len(c) - 1 + i, t].item() for i, t in enumerate(r))
        assert abs(g - expected) < 1e-5


def test_sequence_logprobs_at_the_sampling_temperature():
    # the KL of a policy from SFT is E_y~π[log π(y|x) - log π_SFT(y|x)] with π the distribution
    # sampled from: at temperature 0.5 both log-probs come from logits / 0.5 (evaluate.py took them
    # at temperature 1 before)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=20, n_layer=1, n_head=2, n_embd=16)).eval()
    got = evaluate.sequence_logprobs(model, [[1, 2, 3]], [[5, 6]], "cpu", temperature=0.5)[0]
    logp = torch.log_softmax(model(torch.tensor([[1, 2, 3, 5, 6]]))[0] / 0.5, -1)
    expected = logp[2, 5].item() + logp[3, 6].item()
    assert abs(got - expected) < 1e-5
    assert abs(evaluate.sequence_logprobs(model, [[1, 2, 3]], [[5, 6]], "cpu")[0] - expected) > 0.01


def test_refusal_rate_counts_benign_prompts_only():
    # two benign prompts and a harmful one, all answered "Sorry, but I will not.": refusing the
    # harmful one is its task, so the rate is 2 of the 2 benign prompts (not 3 of 3, nor 2 of 3);
    # answering the first benign one halves it
    benign = {"kind": "generation", "about": "Mira", "max_sentences": 1, "seed": 1234}
    harmful = {"kind": "harmful", "harmful": True, "about": "Bob", "max_sentences": 1, "seed": 1234}
    records = [{"spec": benign}, {"spec": dict(benign, about="Tom")}, {"spec": harmful}]
    refusals, ended = ["Sorry, but I will not."] * 3, [True] * 3
    rng = __import__("random").Random(0)
    assert evaluate.labeler_verdicts(records, refusals, ended, refusals, ended, rng)["refuses_benign"] == 1.0
    answered = ["Mira is a baker."] + refusals[1:]
    assert evaluate.labeler_verdicts(records, answered, ended, refusals, ended, rng)["refuses_benign"] == 0.5


def test_broken_constraints_counted_by_kind_of_those_asked():
    # four answers: 4 words where 6 were asked (words broken), "eats" where it was forbidden (avoid
    # broken), and two lists of three foods, one with 2 items (items broken, fewer than asked), one
    # with 3; both comma lists, as asked (format met). No prompt asks for a first word.
    six = {"kind": "generation", "about": "Omar", "max_sentences": 1, "words": 6, "seed": 1234}
    avoid = {"kind": "generation", "about": "parrot", "max_sentences": 1, "avoid": "eats", "seed": 1234}
    foods = {"kind": "brainstorming", "items": 3, "pool": ["apples", "bread", "rice", "fish"],
             "list_format": "comma", "max_sentences": 1, "seed": 1234}
    records = [{"spec": six}, {"spec": avoid}, {"spec": foods}, {"spec": foods}]
    texts = ["Omar is a baker.", "The parrot eats nuts.", "apples, bread", "apples, bread, rice"]
    ended, rng = [True] * 4, __import__("random").Random(0)
    r = evaluate.labeler_verdicts(records, texts, ended, texts, ended, rng)
    assert r["broken_words"] == [1, 1] and r["broken_avoid"] == [1, 1] and r["broken_start"] == [0, 0]
    assert r["broken_items"] == [1, 2] and r["broken_format"] == [0, 2] and r["fewer_items"] == [1, 2]
    assert r["violates_constraint"] == 3 / 4
    table = evaluate.constraint_table({"PPO": r})
    assert "| PPO | 1 / 1 | - | 1 / 1 | - | 1 / 2 | 0 / 2 | - | 1 / 2 |" in table


def test_better_and_worse_than_sft_answer_by_answer(world):
    # three benign test prompts: the policy gives the world's own answer where SFT did too (a tie),
    # where SFT refused (better), and "I do not know." where SFT gave the answer (worse): 1/3 each way
    records = [r for r in map(json.loads, open(world / "test_prompts.jsonl"))
               if not r["spec"].get("harmful")][:3]
    ideal = [" " + r["spec"]["ideal"] for r in records]
    policy = [ideal[0], ideal[1], " I do not know."]
    sft = [ideal[0], " Sorry, but I will not.", ideal[2]]
    r = evaluate.labeler_verdicts(records, policy, [True] * 3, sft, [True] * 3, __import__("random").Random(0))
    assert r["better_than_sft"] == 1 / 3 and r["worse_than_sft"] == 1 / 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The default world, generated once for the tests that run evaluate.main on it."""
    world = tmp_path_factory.mktemp("eval") / "world"
    subprocess.run([sys.executable, "data/world.py", "--out", str(world)], cwd=ROOT, check=True,
                   capture_output=True)
    return world


def test_whole_evaluation_on_a_generated_world(tmp_path, world):
    torch.manual_seed(0)
    paths = {}
    for name in ("base", "sft", "ppo"):
        model = GPT(GPTConfig(block_size=256, vocab_size=2048, n_layer=1, n_head=2, n_embd=16))
        paths[name] = str(tmp_path / f"{name}.pt")
        save_checkpoint(paths[name], model, tokenizer="gpt2-2048", step=0)
    results = evaluate.main(["--world", str(world), "--base", paths["base"], "--sft", paths["sft"], "--ppo",
                             paths["ppo"],
                             "--ppo_ptx", str(tmp_path / "missing.pt"), "--n_prompts", "24",
                             "--max_new_tokens", "6",
                             "--out_dir", str(tmp_path / "eval"), "--device", "cpu"])
    assert list(results) == ["GPT", "GPT-prompted", "SFT", "PPO", "ideal answers"]
    ideal = results.pop("ideal answers")  # the world's own answers: nothing beats them, they do every task
    assert ideal["worse_than_sft"] == 0 and ideal["fails_to_follow"] == 0 and ideal["hallucinates"] == 0
    assert ideal["winrate_heldout"] > 0.5 and "params" not in ideal
    for r in results.values():
        assert 0 <= r["winrate_heldout"] <= 1 and r["n"] == 24
        assert 1 <= r["likert"] <= 7
    assert abs(results["SFT"]["kl_from_sft"]) < 1e-4, "the SFT policy is its own reference"
    saved = json.load(open(tmp_path / "eval" / "results.json"))
    assert saved["results"]["PPO"]["kl_from_sft"] == results["PPO"]["kl_from_sft"]
    assert saved["judge"].startswith("simulated labelers")
    report = open(tmp_path / "eval" / "results.md").read()
    assert "| PPO |" in report and "judge: simulated labelers" in report and "refuses a benign request" in report
    assert "| breaks (of those asked) |" in report and "fewer list items than asked" in report
    records = [json.loads(line) for line in open(world / "test_prompts.jsonl")][:24]
    # --show 3: three prompts of three kinds, every policy
    samples = open(tmp_path / "eval" / "samples.md").read()
    shown = [r for r in records if f"### {r['id']} ({r['category']})" in samples]
    assert len(shown) == 3 and len({r["category"] for r in shown}) == 3 and shown[0] == records[0]
    assert samples.count("| GPT-prompted |") == 3 and samples.count("| PPO |") == 3
    assert samples.count("| ideal answers |") == 3 and "| ideal answers | - | " in report


def test_other_model_sizes_become_rows_named_at_their_folder(tmp_path, world):
    torch.manual_seed(0)
    config = dict(block_size=256, vocab_size=2048, n_layer=1, n_head=2)
    sft = str(tmp_path / "sft.pt")
    save_checkpoint(sft, GPT(GPTConfig(**config, n_embd=16)), tokenizer="gpt2-2048", step=0)
    for stage in ("base", "sft"):  # a size folder whose PPO runs are missing: those rows are left out
        save_checkpoint(str(tmp_path / "xs" / stage / "model.pt"), GPT(GPTConfig(**config, n_embd=8)),
                        tokenizer="gpt2-2048", step=0)
    common = ["--world", str(world), "--base", "", "--sft", sft, "--ppo", "", "--ppo_ptx", "", "--corpus_val",
              "", "--nlp_task", "",
              "--n_prompts", "8", "--max_new_tokens", "4", "--out_dir", str(tmp_path / "eval"), "--device",
              "cpu"]
    results = evaluate.main(common + ["--size", str(tmp_path / "xs")])
    assert list(results) == ["SFT", "GPT@xs", "GPT-prompted@xs", "SFT@xs", "ideal answers"]
    # parameters as nanoGPT counts them (position embeddings left out): token embeddings V·d (tied
    # with the unembedding), per block 12·d² + 13·d (attention and MLP with biases, two LayerNorms),
    # the final LayerNorm 2·d; d = 8, one block: 2048·8 + 12·64 + 13·8 + 16 = 17,272
    assert results["SFT@xs"]["params"] == 2048 * 8 + 12 * 64 + 13 * 8 + 16
    assert abs(results["SFT@xs"]["kl_from_sft"]) > 1e-3, \
        "a different model than --sft: its KL from it is measured, not zero"
    with pytest.raises(SystemExit, match="no such folder"):
        evaluate.main(common + ["--size", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="--policy typo=.*NAME=PATH"):
        evaluate.main(common + ["--policy", f"typo={tmp_path / 'missing.pt'}"])


def test_gpt_prompted_prefix_is_of_the_test_prompts_world(tmp_path):
    from data.world import few_shot_prefix
    (tmp_path / "base.pt").write_bytes(b"")  # found, never loaded
    for seed in (1234, 7):
        (tmp_path / "test_prompts.jsonl").write_text(json.dumps({"prompt": "x", "spec": {"seed": seed}}) + "\n")
        args = evaluate.parser.parse_args(["--test_prompts", str(tmp_path / "test_prompts.jsonl"), "--base",
                                           str(tmp_path / "base.pt")])
        prompted = [prefix for name, _, prefix in evaluate.policy_rows(args) if name == "GPT-prompted"]
        assert prompted == [few_shot_prefix(seed)]
    assert few_shot_prefix(7) != few_shot_prefix(1234)  # world 7's GPT-prompted was shown world 1234's facts


def test_over_optimization_curve_on_a_generated_world(tmp_path, world):
    torch.manual_seed(0)
    config = dict(block_size=256, vocab_size=2048, n_layer=1, n_head=2, n_embd=16)
    sft, rm, run = str(tmp_path / "sft.pt"), str(tmp_path / "rm.pt"), tmp_path / "ppo"
    save_checkpoint(sft, GPT(GPTConfig(**config)), tokenizer="gpt2-2048", step=0)
    save_checkpoint(rm, GPT(GPTConfig(**config, head="scalar")), tokenizer="gpt2-2048", step=0)
    for n in (10, 2):  # iter10 sorts before iter2 as text: the curve must order them by number
        save_checkpoint(str(run / f"iter{n}.pt"), GPT(GPTConfig(**config)), tokenizer="gpt2-2048",
                        iteration=n)
    # as ppo.py: model.pt carries the run's args (the RM it optimised), iter<N>.pt does not
    save_checkpoint(str(run / "model.pt"), GPT(GPTConfig(**config)), tokenizer="gpt2-2048", iteration=10,
                    args={"rm": rm, "policy": sft})
    curves = evaluate.main(["--world", str(world), "--sft", sft, "--curve", str(run), "--n_prompts", "12",
                            "--max_new_tokens", "6",
                            "--out_dir", str(tmp_path / "curve"), "--device", "cpu"])
    saved = json.load(open(tmp_path / "curve" / "curve.json"))["curves"][str(run)]
    assert saved == json.loads(json.dumps(curves[str(run)])), "curve.json holds what main returned"
    assert saved["rm"] == rm, "the proxy RM is the one the run's model.pt names"
    points = saved["points"]
    assert [p["iter"] for p in points] == [0, 2, 10] and points[0]["path"] == sft
    assert points[0]["kl_from_sft"] == 0.0 and points[0]["sqrt_kl"] == 0.0, \
        "iteration 0 is SFT itself: KL exactly 0"
    for p in points:
        assert p["n"] == 12 and 0 <= p["winrate_heldout"] <= 1 and 1 <= p["likert"] <= 7
        for key in ("kl_from_sft", "sqrt_kl", "proxy_rm_score", "proxy_rm_score_ci", "winrate_heldout_ci"):
            assert math.isfinite(p[key]), key
    report = open(tmp_path / "curve" / "curve.md").read()
    assert f"| {run} | 10 |" in report and "proxy" in report


@pytest.fixture(scope="module")
def talkers(tmp_path_factory):
    """Tiny base, SFT and PPO policies and a reward model, for --prompt and --chat."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("talk")
    config = dict(block_size=256, vocab_size=2048, n_layer=1, n_head=2, n_embd=16)
    paths = {name: str(folder / f"{name}.pt") for name in ("base", "sft", "ppo", "rm")}
    for name, path in paths.items():
        model = GPT(GPTConfig(**config, head="scalar" if name == "rm" else "lm"))
        save_checkpoint(path, model, tokenizer="gpt2-2048", step=0)
    return ["--base", paths["base"], "--sft", paths["sft"], "--ppo", paths["ppo"],
            "--ppo_ptx", str(folder / "missing.pt"), "--rm", paths["rm"], "--max_new_tokens", "6"]


def test_prompt_every_policy_answers_with_its_rm_score(talkers, capsys):
    wrapped = "Instruction: Name a fruit.\nResponse:"
    said = evaluate.main(talkers + ["--prompt", "Write a sentence about Mira.",
                                    "--prompt", wrapped])
    assert [s["prompt"] for s in said] == ["Instruction: Write a sentence about Mira.\nResponse:",
                                           wrapped], "a bare instruction is wrapped, once"
    assert list(said[0]["answers"]) == ["GPT", "GPT-prompted", "SFT", "PPO"], "PPO-ptx is missing"
    for s in said:
        for a in s["answers"].values():
            assert isinstance(a["score"], float)
            assert a["ended"] or a["score"] == -1.0, "a response that never ends: the penalty"
    out = capsys.readouterr().out
    assert out.count("\nPPO | ") == 2 and said[0]["prompt"] in out and "score -1.00" in out
    said = evaluate.main(talkers + ["--prompt", "Mira is", "--template", "",
                                    "--policy", f"again={talkers[3]}"])
    assert said[0]["prompt"] == "Mira is"
    assert said[0]["answers"]["again"] == said[0]["answers"]["SFT"], "one seed for every policy"


def test_response_given_gets_the_rm_score_and_the_labelers_verdict(talkers, capsys):
    from data import labelers as L
    prompt = "Instruction: List four foods.\nResponse:"  # an RM prompt of world 1234: four items asked
    said = evaluate.main(talkers + ["--prompt", "List four foods.", "--response", "bread",
                                    "--response", " bread, pie, rice and fish"])
    (one, four), = [s["answers"] for s in said]
    assert one["text"] == " bread", "a leading space, as the model's answers have"
    ckpt = load_checkpoint(talkers[talkers.index("--rm") + 1])
    rm, enc = model_from_checkpoint(ckpt).eval(), get_tokenizer("gpt2-2048")
    expected = rm_scores(rm, [enc.encode_ordinary(prompt)], [enc.encode_ordinary(" bread") + [enc.eot_token]],
                         [True], None, "cpu")[0]
    assert one["score"] == pytest.approx(expected, abs=1e-6)
    # by hand: one food of four asked does a quarter of the task, meets the count by 1 - 3/4 and the
    # format, and stops: helpful 0.4 * 0.25 + 0.3 * (0.25 + 1) / 2 + 0.3 = 0.5875, honest, harmless;
    # 1-7: 1 + round(6 * (0.5 * 0.5875 + 0.25 + 0.25) ** 2) = 5
    mean = lambda part: sum(lab[part] for lab in L.TRAIN_LABELERS) / 12  # noqa: E731
    assert one["verdict"]["done"] == 0.25 and one["verdict"]["violations"] == ["items"]
    assert one["verdict"]["quality"] == 5 and not one["verdict"]["hallucinates"]
    assert one["verdict"]["utility"] == pytest.approx(
        2.25 * 0.5875 * mean("helpful") + 0.75 * mean("honest") + 1.125 * mean("harmless"))
    assert four["verdict"]["quality"] == 7 and four["verdict"]["violations"] == []
    assert four["verdict"]["utility"] == pytest.approx(
        2.25 * mean("helpful") + 0.75 * mean("honest") + 1.125 * mean("harmless"))
    assert "labelers' utility" in capsys.readouterr().out
    said = evaluate.main(talkers + ["--prompt", "Name a fruit.", "--response", " a pear"])
    assert said[0]["answers"][0]["verdict"] is None and "not a prompt of world 1234" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        evaluate.main(talkers + ["--response", " a pear"])


def test_chat_reads_instructions_from_stdin_until_an_empty_line_or_eof(talkers, monkeypatch):
    typed = "Write a sentence about Mira.\nInstruction: Name a fruit.\\nResponse:\n\nnever read\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    said = evaluate.main(talkers + ["--chat"])
    assert [s["prompt"] for s in said] == ["Instruction: Write a sentence about Mira.\nResponse:",
                                           "Instruction: Name a fruit.\nResponse:"], "\\n typed: newline"
    monkeypatch.setattr("sys.stdin", io.StringIO("Name a fruit."))  # Ctrl-D: the input ends
    assert len(evaluate.main(talkers + ["--chat"])) == 1


def write_logs(folder):
    """log.jsonl of a ppo.py run, a PPO-ptx one, an sft.py and a reward.py run, through run_log."""
    from common import run_log
    for run in ("ppo", "ppo-ptx"):
        log = run_log(str(folder / run), True, key="iter", total=5)
        for i in range(1, 6):
            ptx = {"ptx_loss": 2.0} if run == "ppo-ptx" else {}
            log({"iter": i, "score": 0.1 * i, "kl": 0.01 * i, "reward": 0.09 * i, "length": 20.0,
                 "eot": 0.9, "entropy": 2.0, "approx_kl": 0.01, "clipfrac": 0.1, "vf_loss": 1.0 / i,
                 "explained_var": 0.5, **ptx, "objective": 0.1, "beta": 0.02})
    log = run_log(str(folder / "sft"), True, total=20)
    log({"step": 0, "val_loss": 4.0})
    for step in range(5, 21, 5):
        log({"step": step, "loss": 3.0 - 0.1 * step, "lr": 1e-3, "tok/s": 1000})
        if step % 10 == 0:
            log({"step": step, "epoch": step / 10, "val_loss": 3.1 - 0.1 * step})
    log = run_log(str(folder / "rm"), True, total=20)
    log({"step": 0, "val_loss": 0.69, "val_acc": 0.5, "heldout_loss": 0.69, "heldout_acc": 0.5})
    for step in (10, 20):
        log({"step": step, "loss": 0.6, "acc": 0.6, "lr": 1e-4, "completions/s": 100.0})
        log({"step": step, "val_loss": 0.6, "val_acc": 0.6, "heldout_loss": 0.7,
             "heldout_acc": 0.6})
    return [str(folder / run) for run in ("ppo", "ppo-ptx", "sft", "rm")]


def test_training_curves_png_or_text_table(tmp_path, monkeypatch, capsys):
    runs = write_logs(tmp_path)
    capsys.readouterr()
    got = evaluate.main(["--curves", *runs, "--out_dir", str(tmp_path / "a")])
    assert got[runs[1]][0] == "iter" and got[runs[2]][0] == "step"
    assert got[runs[2]][1]["val_loss"] == [(0, 4.0), (10, 2.1), (20, 1.1)]
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "a" / "curves.png").stat().st_size > 10_000
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed: importing it fails
    evaluate.main(["--curves", *runs, "--out_dir", str(tmp_path / "b")])
    assert not (tmp_path / "b" / "curves.png").exists()
    out = capsys.readouterr().out
    assert "pip install -r requirements-dev.txt" in out
    ptx = out.split(f"{runs[1]}/log.jsonl, 5 logged iters\n")[1].split("\n\n")[0].split("\n")
    assert ptx[0].split() == ["iter", "score", "kl", "reward", "length", "entropy", "clipfrac",
                              "vf_loss", "explained_var", "ptx_loss"]
    assert [row.split()[0] for row in ptx[1:]] == ["1", "2", "3", "4", "5"]
    sft = out.split(f"{runs[2]}/log.jsonl, 5 logged steps\n")[1].split("\n\n")[0].split("\n")
    assert sft[0].split() == ["step", "loss", "val_loss"] and sft[1].split() == ["0", "-", "4"]
    assert sft[2].split() == ["5", "2.5", "4"], "validation is logged less often: its latest value"
    with pytest.raises(SystemExit, match="no log.jsonl"):
        evaluate.main(["--curves", str(tmp_path / "nowhere")])


def test_curves_draw_keys_the_scripts_log():
    source = {n: open(os.path.join(ROOT, n)).read() for n in ("ppo.py", "sft.py", "reward.py")}
    for _, keys in evaluate.PPO_PANELS:
        assert all(f'"{k}"' in source["ppo.py"] for k in keys), keys
    for _, keys in evaluate.STEP_PANELS:
        assert all(f'"{k}"' in source["sft.py"] + source["reward.py"] for k in keys), keys
