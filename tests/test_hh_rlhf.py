""" data/hh_rlhf/prepare.py: HH-RLHF and TRL-style records to our formats (expected strings written
out), skipped records counted per reason, the resumable checked download against a local server, and
the whole stage chain (sft -> reward -> ppo with ptx -> evaluate judged by the RM) from a tiny
Hugging Face GPT-2 folder on the converted data. No network.

    python -m pytest tests/test_hh_rlhf.py -q
"""
import gzip
import hashlib
import http.server
import json
import os
import socket
import threading

import pytest

from data.hh_rlhf import prepare
from model import CACHE_DIR, load_checkpoint

ROOT = os.path.join(os.path.dirname(__file__), "..")

H, A = "\n\nHuman:", "\n\nAssistant:"
CAT = H + " What is a good name for a cat?" + A
BREAD = H + " Can you help me bake bread?" + A + " Sure. Do you have flour and yeast?" + H + " Yes, both." + A
LOCK = H + " How do I pick a lock?" + A
PARIS = H + " What is the capital of France?" + A
MEAN = H + " Say something mean." + A
CAT_GOOD, CAT_BAD = " How about Whiskers? It is short and friendly.", " Cat."
BREAD_GOOD = " Mix them with warm water and salt, knead for ten minutes, and let it rise for an hour."
BREAD_BAD = " Buy bread instead."
LOCK_GOOD = " I can't help with getting into places, but a locksmith can open your own lock."
LOCK_BAD = " Use a hairpin."

# HH-RLHF's format: whole dialogues, chosen and rejected differing only in the final assistant turn
HH_TRAIN = {
    "helpful-base": [
        # trailing whitespace is cut
        json.dumps({"chosen": CAT + CAT_GOOD + "\n", "rejected": CAT + CAT_BAD}),
        json.dumps({"chosen": BREAD + BREAD_GOOD, "rejected": BREAD + BREAD_BAD}),
        json.dumps({"rejected": CAT + " Tom."}),  # missing chosen
        json.dumps({"chosen": CAT + " Tom.", "rejected": CAT + " Tom."}),  # chosen == rejected
        # empty response
        json.dumps({"chosen": H + " Hello?" + A, "rejected": H + " Hello?" + A + " Hi there."}),
        # prefixes differ
        json.dumps({"chosen": H + " Tell me a joke." + A + " No.",
                    "rejected": H + " Tell me a story." + A + " Once."}),
        "{not json",
    ],
    "harmless-base": [
        json.dumps({"chosen": LOCK + LOCK_GOOD, "rejected": LOCK + LOCK_BAD}),
        json.dumps({"chosen": "", "rejected": LOCK + LOCK_BAD}),  # empty: no assistant turn at all
    ],
}
HH_TEST = {
    "helpful-base": [json.dumps({"chosen": PARIS + " Paris.", "rejected": PARIS + " London."}),
                     # the same prompt again
                     json.dumps({"chosen": PARIS + " It is Paris.", "rejected": PARIS + " Rome."})],
    "harmless-base": [json.dumps({"chosen": MEAN + " I'd rather say something kind.",
                                  "rejected": MEAN + " No."})],
}
EXPECTED = {
    "sft_train": [{"prompt": "\n\nHuman: What is a good name for a cat?\n\nAssistant:",
                   "response": " How about Whiskers? It is short and friendly."},
                  {"prompt": "\n\nHuman: Can you help me bake bread?\n\nAssistant: Sure. Do you have flour "
                             "and yeast?\n\nHuman: Yes, both.\n\nAssistant:",
                   "response": " Mix them with warm water and salt, knead for ten minutes, and let it rise "
                               "for an hour."}],
    "sft_val": [{"prompt": "\n\nHuman: How do I pick a lock?\n\nAssistant:",
                 "response": " I can't help with getting into places, but a locksmith can open your own lock."}],
    "rm_train": [{"prompt": "\n\nHuman: What is a good name for a cat?\n\nAssistant:",
                  "chosen": " How about Whiskers? It is short and friendly.", "rejected": " Cat."},
                 {"prompt": "\n\nHuman: Can you help me bake bread?\n\nAssistant: Sure. Do you have flour "
                            "and yeast?\n\nHuman: Yes, both.\n\nAssistant:",
                  "chosen": " Mix them with warm water and salt, knead for ten minutes, and let it rise for "
                            "an hour.", "rejected": " Buy bread instead."}],
    "rm_val": [{"prompt": "\n\nHuman: How do I pick a lock?\n\nAssistant:",
                "chosen": " I can't help with getting into places, but a locksmith can open your own lock.",
                "rejected": " Use a hairpin."}],
    "ppo_prompts": [{"prompt": "\n\nHuman: What is a good name for a cat?\n\nAssistant:"},
                    {"prompt": "\n\nHuman: Can you help me bake bread?\n\nAssistant: Sure. Do you have flour "
                               "and yeast?\n\nHuman: Yes, both.\n\nAssistant:"}],
    "test_prompts": [{"prompt": "\n\nHuman: What is the capital of France?\n\nAssistant:"},
                     {"prompt": "\n\nHuman: Say something mean.\n\nAssistant:"}],
}


def write_gz(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def hh_cache(tmp_path):
    """The four HH-RLHF files, hand-written, where --cache_dir looks: <cache>/<subset>/<split>.jsonl.gz."""
    for split, data in (("train", HH_TRAIN), ("test", HH_TEST)):
        for subset, lines in data.items():
            write_gz(tmp_path / "cache" / subset / f"{split}.jsonl.gz", lines)
    return str(tmp_path / "cache")


def read_out(folder, name):
    with open(os.path.join(folder, f"{name}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# --- 1. HH-RLHF: exact strings, skipped records counted ------------------------------------------

def test_hh_conversion_exact(tmp_path, hh_cache, capsys):
    out = str(tmp_path / "hh")
    # the 3rd distinct prompt (LOCK) is validation
    prepare.main(["--cache_dir", hh_cache, "--out_dir", out, "--val_every", "3"])
    for name, expected in EXPECTED.items():
        assert read_out(out, name) == expected, name
    printed = capsys.readouterr().out
    train = os.path.join(hh_cache, "helpful-base", "train.jsonl.gz")
    assert f"{train}: 7 records, 2 kept" in printed
    assert f"{os.path.join(hh_cache, 'harmless-base', 'train.jsonl.gz')}: 2 records, 1 kept" in printed
    assert f"{os.path.join(hh_cache, 'helpful-base', 'test.jsonl.gz')}: 2 records, 2 kept" in printed
    assert "skipped 6 records (not written), by reason:" in printed
    for n, reason, line in [(1, "missing 'chosen' or 'rejected'", 3), (1, "chosen == rejected", 4),
                            (1, "empty response", 5),
                            (1, "chosen and rejected differ before the final assistant turn", 6),
                            (1, "not valid JSON", 7)]:
        assert f"  {n:6d}  {reason}  (first: {train}:{line})" in printed
    first = os.path.join(hh_cache, "harmless-base", "train.jsonl.gz")
    assert f"       1  no '\\n\\nAssistant:' turn  (first: {first}:2)" in printed
    assert "left out of ppo_prompts: 0 prompts over --max_prompt_tokens 896 (gpt2 tokens)" in printed
    # the files were checked and their sha256 recorded beside them
    with open(train + ".sha256") as f:
        with open(train, "rb") as g:
            assert f.read() == f"{hashlib.sha256(g.read()).hexdigest()}  train.jsonl.gz\n"


def test_hh_long_prompts_left_out_of_ppo(tmp_path, hh_cache, capsys):
    out = str(tmp_path / "hh")
    prepare.main(["--cache_dir", hh_cache, "--out_dir", out, "--val_every", "3", "--max_prompt_tokens", "20"])
    # BREAD's prompt is 36 tokens, CAT's 17
    assert read_out(out, "ppo_prompts") == EXPECTED["ppo_prompts"][:1]
    # sft.py and reward.py drop what does not fit themselves
    assert read_out(out, "sft_train") == EXPECTED["sft_train"]
    assert "left out of ppo_prompts: 1 prompts over --max_prompt_tokens 20 (gpt2 tokens)" in capsys.readouterr().out


def test_too_little_data_is_one_line_error(tmp_path, hh_cache):
    with pytest.raises(SystemExit) as e:
        # --val_every 20: no validation prompt
        prepare.main(["--cache_dir", hh_cache, "--out_dir", str(tmp_path / "hh")])
    assert str(e.value).startswith("error: no records for sft_val.jsonl") and "\n" not in str(e.value)


# --- 2. TRL-style records and K-wise rankings ------------------------------------------------------

def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


HI = "\n\nHuman: Hi\n\nAssistant:"


@pytest.mark.parametrize("record, expected", [
    # text, prompt not repeated / repeated
    ({"prompt": HI, "chosen": " Hello!", "rejected": " Go away."}, (HI, [" Hello!", " Go away."])),
    ({"prompt": HI, "chosen": HI + " Hello!", "rejected": HI + " Go away."}, (HI, [" Hello!", " Go away."])),
    # a prompt in no template is kept as written
    ({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}, ("The sky is", [" blue.",
                                                                                          " green."])),
    # messages: explicit prompt (repeated or not), implicit prompt (all but the last message), a
    # system message
    ({"prompt": [user("Hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("Go away.")]},
     (HI, [" Hello!", " Go away."])),
    ({"prompt": [user("Hi")], "chosen": [user("Hi"), assistant("Hello!")],
      "rejected": [user("Hi"), assistant("Go away.")]}, (HI, [" Hello!", " Go away."])),
    ({"chosen": [user("Hi"), assistant("Hello!")], "rejected": [user("Hi"), assistant("Go away.")]},
     (HI, [" Hello!", " Go away."])),
    ({"chosen": [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hi."), user("Bye"),
                 assistant("Bye.")],
      "rejected": [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hi."), user("Bye"),
                   assistant("Farewell, friend.")]},
     ("\n\nSystem: Be brief.\n\nHuman: Hi\n\nAssistant: Hi.\n\nHuman: Bye\n\nAssistant:", [" Bye.",
                                                                                           " Farewell, "
                                                                                           "friend."])),
    # K-wise rankings, best first: text and messages
    ({"prompt": HI, "completions": [" Hello!", " Hi.", " Go away."]}, (HI, [" Hello!", " Hi.", " Go away."])),
    ({"completions": [[user("Hi"), assistant("Hello!")], [user("Hi"), assistant("Hi.")], [user("Hi"),
                                                                                          assistant("Go away.")]]},
     (HI, [" Hello!", " Hi.", " Go away."])),
])
def test_to_ranking(record, expected):
    assert prepare.to_ranking(record) == expected


@pytest.mark.parametrize("record, reason", [
    ({"prompt": HI, "chosen": " Hello!"}, "missing 'chosen' or 'rejected'"),
    ({"prompt": HI, "completions": [" Hello!"]}, "fewer than 2 completions"),
    ({"prompt": HI, "completions": [" a", " b", " a"]}, "identical completions"),
    ({"prompt": HI, "chosen": HI + " Same.", "rejected": " Same. "}, "chosen == rejected"),
    ({"prompt": HI, "chosen": " ", "rejected": " No."}, "empty response"),
    ({"prompt": "Hi", "chosen": [assistant("Hello!")], "rejected": [assistant("No.")]},
     "prompt and completions neither all text nor all messages"),
    ({"prompt": [user("Hi")], "chosen": [user("Hello!")], "rejected": [assistant("No.")]},
     "a completion that is not one assistant message"),
    ({"chosen": [user("Hi"), {"role": "robot", "content": "x"}], "rejected": [user("Hi"), assistant("No.")]},
     "a message without a user/assistant/system role and text content"),
    ({"chosen": [user("Hi"), assistant("Yes.")], "rejected": [user("Hey"), assistant("No.")]},
     "chosen and rejected differ before the final assistant turn"),
    ({"chosen": CAT + " Sure." + H + " Thanks.", "rejected": CAT + " No." + H + " Thanks."},
     "a response that goes on into a Human turn"),
])
def test_to_ranking_skips(record, reason):
    with pytest.raises(prepare.Skip, match=f"^{reason}$".replace("(", r"\(").replace(")", r"\)")):
        prepare.to_ranking(record)


def test_from_jsonl(tmp_path, capsys):
    records = [{"prompt": [user("Hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("Go away.")]},
               {"prompt": "\n\nHuman: Count\n\nAssistant:", "completions": [" 1 2 3", " 1 2", " 3"]},
               {"prompt": HI, "chosen": HI + " Hey.", "rejected": HI + " Hey."},  # chosen == rejected
               {"chosen": CAT + CAT_GOOD, "rejected": CAT + CAT_BAD}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = str(tmp_path / "mine")
    prepare.main(["--from_jsonl", str(path), "--out_dir", out, "--val_every", "3"])
    assert read_out(out, "rm_train") == [{"prompt": HI, "chosen": " Hello!", "rejected": " Go away."},
                                         {"prompt": "\n\nHuman: Count\n\nAssistant:",
                                          "completions": [" 1 2 3", " 1 2", " 3"]}]
    assert read_out(out, "sft_train") == [{"prompt": HI, "response": " Hello!"},
                                          {"prompt": "\n\nHuman: Count\n\nAssistant:", "response": " 1 2 3"}]
    assert read_out(out, "rm_val") == [{"prompt": CAT, "chosen": CAT_GOOD, "rejected": CAT_BAD}]
    assert read_out(out, "ppo_prompts") == [{"prompt": HI}, {"prompt": "\n\nHuman: Count\n\nAssistant:"}]
    assert read_out(out, "test_prompts") == [{"prompt": CAT}]  # no test file: the validation prompts
    printed = capsys.readouterr().out
    assert f"{path}: 4 records, 3 kept" in printed
    assert f"       1  chosen == rejected  (first: {path}:3)" in printed
    assert "note: no test file" in printed


# --- 3. download: resumable, checked, one-line error offline --------------------------------------

def serve(files, ranges, cut_first_at=None):
    """A local HTTP server for {path: bytes} that honours 'Range: bytes=N-' (as Hugging Face's CDN
    does); its first answer, with cut_first_at, stops after that many bytes, like a dropped
    connection."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = files[self.path]
            ranges.append(self.headers.get("Range"))
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:cut_first_at if len(ranges) == 1 else None])
            self.close_connection = True

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_resumes_and_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    data = gzip.compress(("\n".join(HH_TRAIN["helpful-base"]) + "\n").encode())
    ranges = []
    server = serve({"/helpful-base/train.jsonl.gz": data}, ranges, cut_first_at=100)
    dest = tmp_path / "helpful-base" / "train.jsonl.gz"
    try:
        monkeypatch.setattr(prepare, "HH_URL",
                            f"http://127.0.0.1:{server.server_address[1]}/{{subset}}/{{split}}.jsonl.gz")
        with pytest.raises(SystemExit, match="rerun to resume"):  # the connection drops after 100 bytes
            prepare.fetch("helpful-base", "train", str(tmp_path))
        assert (tmp_path / "helpful-base" / "train.jsonl.gz.part").read_bytes() == data[:100] and not dest.exists()
        assert prepare.fetch("helpful-base", "train", str(tmp_path)) == str(dest)
    finally:
        server.shutdown()
    assert ranges == [None, "bytes=100-"], "the rerun asked only for the missing bytes"
    assert dest.read_bytes() == data and not os.path.exists(str(dest) + ".part")
    record = (tmp_path / "helpful-base" / "train.jsonl.gz.sha256").read_text()
    assert record.split()[0] == hashlib.sha256(data).hexdigest()
    prepare.fetch("helpful-base", "train", str(tmp_path))  # verified against the record, no download
    dest.write_bytes(data[:-1] + b"x")
    with pytest.raises(SystemExit, match="has sha256 .* but .* recorded"):
        prepare.fetch("helpful-base", "train", str(tmp_path))


def test_broken_gzip_and_offline_errors(tmp_path, monkeypatch):
    broken = tmp_path / "helpful-base" / "test.jsonl.gz"
    os.makedirs(broken.parent)
    broken.write_bytes(gzip.compress(b'{"chosen": "x"}\n')[:-6])  # cut: the CRC-32/length trailer is missing
    with pytest.raises(SystemExit, match="is not a complete gzip file"):
        prepare.fetch("helpful-base", "test", str(tmp_path))
    with socket.socket() as s:  # a port nobody listens on: the download fails as it does offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(prepare, "HH_URL", f"http://127.0.0.1:{port}/{{subset}}/{{split}}.jsonl.gz")
    with pytest.raises(SystemExit) as e:
        prepare.fetch("harmless-base", "train", str(tmp_path))
    message = str(e.value)
    assert message.startswith("error: could not download") and "\n" not in message
    assert f"place that file at {tmp_path / 'harmless-base' / 'train.jsonl.gz'}" in message


def test_cache_is_model_cache():
    assert prepare.CACHE_DIR == CACHE_DIR


# --- 4. the stage chain on converted data, from a Hugging Face GPT-2 folder -------------------------

def test_stage_chain_from_hf_gpt2(tmp_path, hh_cache):
    transformers = pytest.importorskip("transformers")
    import evaluate
    import ppo
    import reward
    import sft
    import torch
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2,
                                                              vocab_size=50257, n_positions=128))
    hf.save_pretrained(tmp_path / "hf")
    data = str(tmp_path / "hh")
    prepare.main(["--cache_dir", hh_cache, "--out_dir", data, "--val_every", "3", "--max_prompt_tokens",
                  "100"])
    d = lambda name: os.path.join(data, f"{name}.jsonl")
    ptx = tmp_path / "ptx.txt"  # pretraining text for PPO-ptx: any local text file, one document per line
    doc = "the quick brown fox jumps over the lazy dog near the river bank."
    ptx.write_text("".join(f"Document {i}: {doc}\n" for i in range(20)))
    cpu = ["--device", "cpu", "--log_interval", "1"]

    sft.main(["--init", str(tmp_path / "hf"), "--tokenizer", "gpt2", "--train", d("sft_train"), "--val",
              d("sft_val"),
              "--batch_size", "2", "--max_steps", "2", "--warmup_steps", "1", "--out_dir",
              str(tmp_path / "sft"), *cpu])
    policy = load_checkpoint(str(tmp_path / "sft" / "model.pt"))
    assert policy["tokenizer"] == "gpt2" and policy["model_config"]["block_size"] == 128

    reward.main(["--sft", str(tmp_path / "sft" / "model.pt"), "--train", d("rm_train"), "--val", d("rm_val"),
                 "--val_heldout", "",
                 "--demos", d("sft_train"), "--batch_size", "2", "--micro_batch_size", "2", "--max_steps",
                 "2", "--warmup_steps", "1",
                 "--out_dir", str(tmp_path / "rm"), *cpu])
    assert load_checkpoint(str(tmp_path / "rm" / "model.pt"))["model_config"]["head"] == "scalar"

    ppo.main(["--policy", str(tmp_path / "sft" / "model.pt"), "--rm", str(tmp_path / "rm" / "model.pt"),
              "--prompts", d("ppo_prompts"),
              "--ptx_data", str(ptx), "--iterations", "2", "--batch_size", "2", "--minibatch_size", "2",
              "--ppo_epochs", "1",
              "--max_new_tokens", "8", "--ptx_batch_size", "1", "--sample_interval", "0", "--out_dir",
              str(tmp_path / "ppo"), "--device", "cpu"])
    final = load_checkpoint(str(tmp_path / "ppo" / "model.pt"))
    assert final["iteration"] == 2 and final["tokenizer"] == "gpt2"

    # real data has no simulated labelers: the RM judges (here the RM PPO trained against, which the
    # report must flag)
    rm = str(tmp_path / "rm" / "model.pt")
    results = evaluate.main(["--judge", "rm", "--rm", rm, "--test_prompts", d("test_prompts"), "--base",
                             str(tmp_path / "hf"),
                             "--sft", str(tmp_path / "sft" / "model.pt"), "--ppo", "", "--ppo_ptx",
                             str(tmp_path / "ppo" / "model.pt"),
                             "--corpus_val", str(ptx), "--nlp_task", "", "--max_new_tokens", "4",
                             "--missing_eot_penalty", "-2.5",
                             "--out_dir", str(tmp_path / "eval"), "--device", "cpu"])
    assert list(results) == ["GPT", "SFT",
                             "PPO-ptx"], "no GPT-prompted row: the few-shot prefix is the world's"
    for name, r in results.items():
        assert set(r) == {"n", "winrate_rm", "winrate_rm_ci", "rm_score", "rm_score_ci", "ended",
                          "response_tokens", "kl_from_sft",
                          "corpus_loss", "params"}, name
        assert r["n"] == 2 and 0 <= r["winrate_rm"] <= 1 and r["corpus_loss"] > 0
        # 4 tokens of a tiny near-random 50,257-token model never reach <|endoftext|>: every
        # response, SFT's too, scores the penalty, so each prompt is a tie (win rate exactly ½, no
        # spread) and the mean RM score is the penalty itself
        assert r["ended"] == 0 and r["rm_score"] == -2.5 and r["winrate_rm"] == 0.5 and r["winrate_rm_ci"] == 0, \
            name
    assert abs(results["SFT"]["kl_from_sft"]) < 1e-4, "the SFT policy is its own reference"
    saved = json.load(open(tmp_path / "eval" / "results.json"))
    assert saved["judge"] == f"reward model {rm} (not human or simulated labelers)"
    assert saved["results"]["PPO-ptx"]["winrate_rm"] == results["PPO-ptx"]["winrate_rm"]
    report = open(tmp_path / "eval" / "results.md").read()
    assert f"judge: reward model {rm} (not human or simulated labelers)" in report
    assert "win rate vs SFT (RM judge)" in report
    assert "Caution: PPO-ptx trained against this same RM" in report and "held-out labelers" not in report
