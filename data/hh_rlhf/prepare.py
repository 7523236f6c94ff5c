"""
Real preference data in our formats (data/README.md): Anthropic's HH-RLHF (Bai et al. 2022), downloaded
once, or any local preference JSONL (TRL-style prompt/chosen/rejected, or K-wise rankings).

    python data/hh_rlhf/prepare.py                          # helpful-base + harmless-base ->
    data/hh_rlhf/ python data/hh_rlhf/prepare.py --cache_dir /mnt/hh      # offline:
    <cache_dir>/<subset>/<split>.jsonl.gz placed by hand python data/hh_rlhf/prepare.py --from_jsonl
    prefs.jsonl --from_jsonl_test prefs_test.jsonl --out_dir data/mine

Writes to --out_dir: sft_train.jsonl / sft_val.jsonl (demonstrations: the prompt and the chosen response),
rm_train.jsonl / rm_val.jsonl (rankings: {prompt, chosen, rejected}, or {prompt, completions} when K > 2),
ppo_prompts.jsonl (the training prompts, once each) and test_prompts.jsonl (the test split's prompts).
Every --val_every-th distinct training prompt, and all its records, goes to the validation files, so no
prompt is on both sides. SFT, RM and PPO all draw on the same training dialogues: HH-RLHF is one pool.

The template. HH-RLHF stores a whole dialogue per record, "\n\nHuman: …\n\nAssistant: …" turn after turn,
and chosen and rejected differ only in the final assistant turn. The prompt is the dialogue up to and
including its last "\n\nAssistant:"; the response is what follows (it starts with a space; trailing
whitespace is cut, as <|endoftext|> follows it in training). Sampling uses the same template: a prompt
ends with "\n\nAssistant:". Chat messages [{role, content}] are written in it too (user -> Human,
assistant -> Assistant, system -> System); a text prompt given as a separate field is kept as written.

Records that cannot become a ranking (a missing field, chosen and rejected that differ before the final
assistant turn, chosen == rejected, an empty response, ...) are not written: they are counted per reason
and printed in the summary, with the first place each reason occurred.

Downloads: urllib into $INSTRUCTGPT_CACHE/hh-rlhf (default ~/.cache/instructgpt/hh-rlhf, the folder
model.py caches GPT-2 in), with a progress line; an interrupted download resumes from its .part file
(HTTP Range). No sha256 is pinned here (this file was written offline): a file's first use checks the
download's size against Content-Length and reads it through gzip (which checks the stream's CRC-32), then
writes its sha256 to <file>.sha256; every later run verifies the file against that record.
"""
import argparse
import gzip
import hashlib
import http.client
import json
import os
import sys
from collections import Counter

HH_URL = "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/{subset}/{split}.jsonl.gz"
# model.py, imported where needed
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# model.CACHE_DIR, spelled out: importing model.py would load torch for one path
CACHE_DIR = os.environ.get("INSTRUCTGPT_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                             "instructgpt"))
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
ROLES = {"user": "Human", "assistant": "Assistant", "system": "System"}

# -----------------------------------------------------------------------------
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
# where the data comes from
parser.add_argument("--subsets", default="helpful-base,harmless-base",
                    help="comma-separated HH-RLHF folders to use (also: helpful-online, "
                         "helpful-rejection-sampled)")
parser.add_argument("--cache_dir", default=os.path.join(CACHE_DIR, "hh-rlhf"),
                    help="HH-RLHF files are read from (and downloaded to) "
                         "<cache_dir>/<subset>/{train,test}.jsonl.gz; files already there are used as they "
                         "are")
parser.add_argument("--from_jsonl", default=None,
                    help="convert this local .jsonl (or .jsonl.gz) of preference records instead of HH-RLHF: "
                         "{prompt?, chosen, rejected} or {prompt?, completions: [best, ..., worst]}, texts "
                         "or message lists")
parser.add_argument("--from_jsonl_test", default=None,
                    help="with --from_jsonl: its test split, for test_prompts.jsonl [default: the validation "
                         "prompts]")
# what is written
parser.add_argument("--out_dir", default="data/hh_rlhf", help="where the converted files go")
parser.add_argument("--val_every", type=int, default=20,
                    help="every this-many-th distinct training prompt, with all its records, goes to sft_val "
                         "/ rm_val instead of the training files")
parser.add_argument("--max_prompt_tokens", type=int, default=896,
                    help="leave prompts longer than this out of ppo_prompts / test_prompts (ppo.py stops on "
                         "a prompt that leaves no room for a response; 896 = GPT-2's 1024 minus 128 response "
                         "tokens); 0: keep all")
parser.add_argument("--tokenizer", default="gpt2",
                    help="the tokenizer --max_prompt_tokens counts with (model.get_tokenizer)")

# -----------------------------------------------------------------------------
# the cache: files downloaded by model.download (resumable) and checked


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(path):
    """First use: the file must be a complete gzip stream (CRC-32 and length checked by reading it through);
    its sha256 is then recorded in <path>.sha256. Later uses: the sha256 must match that record."""
    digest, record = file_sha256(path), path + ".sha256"
    if os.path.exists(record):
        with open(record) as f:
            expected = f.read().split()[0]
        if digest != expected:
            raise SystemExit(f"error: {path} has sha256 {digest} but {record} recorded {expected}: the file "
                             "changed; delete both and rerun")
        return
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError) as e:
        raise SystemExit(f"error: {path} is not a complete gzip file ({e}); delete it and rerun to download "
                         "it again")
    with open(record, "w") as f:
        f.write(f"{digest}  {os.path.basename(path)}\n")  # the format of sha256sum -c


def fetch(subset, split, cache_dir):
    """The path of one HH-RLHF file in the cache: downloaded if missing, verified either way."""
    path = os.path.join(cache_dir, subset, f"{split}.jsonl.gz")
    if not os.path.exists(path):
        url = HH_URL.format(subset=subset, split=split)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        from model import download  # only here: model.py loads torch
        try:
            download(url, path)
        # no network, HTTP errors, timeouts, a cut connection
        except (OSError, http.client.HTTPException) as e:
            raise SystemExit(f"error: could not download {url} ({e}); rerun to resume, or offline place that "
                             f"file at {path} "
                             f"(or pass --cache_dir FOLDER holding {subset}/{split}.jsonl.gz)")
    verify(path)
    return path


def read_records(path):
    """(where, record) for each non-blank line of a .jsonl or .jsonl.gz file; record is None if the
    line is not JSON."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: data file {path} not found")
    with (gzip.open if path.endswith(".gz") else open)(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                yield f"{path}:{n}", record


# -----------------------------------------------------------------------------
# conversion: pure functions, tested on hand-written records in tests/test_hh_rlhf.py


class Skip(Exception):
    """A record that cannot become a ranking; the message is the reason counted in the summary."""


def split_dialogue(text):
    """'\\n\\nHuman: …\\n\\nAssistant: …' -> (prompt up to and including its last
    '\\n\\nAssistant:', the final turn)."""
    i = text.rfind(ASSISTANT)
    if i < 0:
        raise Skip("no '\\n\\nAssistant:' turn")
    return text[:i + len(ASSISTANT)], text[i + len(ASSISTANT):]


def render(messages):
    """Chat messages [{role, content}] as text in the template: '\\n\\nHuman: …\\n\\nAssistant: …'."""
    text = ""
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise Skip("a message without a user/assistant/system role and text content")
        text += f"\n\n{ROLES[m['role']]}: {m['content']}"
    return text


def completion_of(prompt, completion):
    """(prompt text, response) of one completion. prompt is None (the completion is the whole
    dialogue), or the record's prompt, which the completion may repeat; both texts, or both message
    lists."""
    if isinstance(completion, str) and isinstance(prompt, (str, type(None))):
        if prompt is None:
            return split_dialogue(completion)
        return prompt, completion[len(prompt):] if completion.startswith(prompt) else completion
    if isinstance(completion, list) and isinstance(prompt, (list, type(None))) and completion:
        if prompt is None:
            prompt, completion = completion[:-1], completion[-1:]
        elif completion[:len(prompt)] == prompt:  # the prompt repeated inside the completion
            completion = completion[len(prompt):]
        response = render(completion)
        if len(completion) != 1 or completion[0]["role"] != "assistant":
            raise Skip("a completion that is not one assistant message")
        return render(prompt) + ASSISTANT, response[len(ASSISTANT):]
    raise Skip("prompt and completions neither all text nor all messages")


def to_ranking(record):
    """One preference record -> (prompt, [responses, best first]), or Skip(reason). Accepted:
      {"chosen", "rejected"} whole dialogues (HH-RLHF): the prompt is the dialogue to the last
      '\\n\\nAssistant:' {"prompt", "chosen", "rejected"} (TRL): the responses with or without the
      prompt repeated in front chat messages [{role, content}] for all of these (with a prompt: it
      too as messages) {"prompt"?, "completions": [best, ..., worst]} K-wise rankings, in any of the
      forms above."""
    if not isinstance(record, dict):
        raise Skip("not a JSON object")
    if "completions" in record:
        completions = record["completions"]
        if not isinstance(completions, list) or len(completions) < 2:
            raise Skip("fewer than 2 completions")
    elif "chosen" in record and "rejected" in record:
        completions = [record["chosen"], record["rejected"]]
    else:
        raise Skip("missing 'chosen' or 'rejected'")
    pairs = [completion_of(record.get("prompt"), c) for c in completions]
    if len({p for p, _ in pairs}) > 1:
        raise Skip("chosen and rejected differ before the final assistant turn")
    responses = [r.rstrip() for _, r in pairs]
    if not all(r.strip() for r in responses):
        raise Skip("empty response")
    if len(set(responses)) < len(responses):
        raise Skip("chosen == rejected" if len(responses) == 2 else "identical completions")
    if any(HUMAN in r for r in responses):
        raise Skip("a response that goes on into a Human turn")
    return pairs[0][0], responses


def convert(train, test=None, val_every=20):
    """(where, record) pairs of the training and test splits -> (files {name: [records]}, report)
    with report {"skipped": {reason: n}, "first": {reason: where}, "records": {source file: n},
    "kept": {source file: n}}. Every val_every-th distinct training prompt (in order of appearance)
    and all its records are validation."""
    report = {"skipped": Counter(), "first": {}, "records": Counter(), "kept": Counter()}

    def rankings(pairs):
        for where, record in pairs:
            source = where.rsplit(":", 1)[0]
            report["records"][source] += 1
            try:
                if record is None:
                    raise Skip("not valid JSON")
                prompt, responses = to_ranking(record)
            except Skip as e:
                report["skipped"][str(e)] += 1
                report["first"].setdefault(str(e), where)
                continue
            report["kept"][source] += 1
            yield prompt, responses

    files = {name: [] for name in ("sft_train", "sft_val", "rm_train", "rm_val", "ppo_prompts",
                                   "test_prompts")}
    index = {}  # distinct training prompt -> its number
    for prompt, responses in rankings(train):
        k = index.setdefault(prompt, len(index))
        side = "val" if k % val_every == val_every - 1 else "train"
        files[f"sft_{side}"].append({"prompt": prompt, "response": responses[0]})
        files[f"rm_{side}"].append({"prompt": prompt, "chosen": responses[0],
                                    "rejected": responses[1]} if len(responses) == 2
                                   else {"prompt": prompt, "completions": responses})
    val_prompts = {r["prompt"] for r in files["sft_val"]}
    files["ppo_prompts"] = [{"prompt": p} for p in index if p not in val_prompts]
    if test is not None:
        test_prompts = dict.fromkeys(p for p, _ in rankings(test))
    else:
        test_prompts = dict.fromkeys(r["prompt"] for r in files["sft_val"])
    files["test_prompts"] = [{"prompt": p} for p in test_prompts]
    return files, report


def drop_long_prompts(records, max_tokens, enc):
    """Prompt records whose prompt has at most max_tokens tokens, and how many were left out."""
    lengths = [len(ids) for ids in enc.encode_ordinary_batch([r["prompt"] for r in records])]
    kept = [r for r, n in zip(records, lengths) if n <= max_tokens]
    return kept, len(records) - len(kept)


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# -----------------------------------------------------------------------------
# the run

def main(argv=None):
    args = parser.parse_args(argv)
    if args.from_jsonl_test and not args.from_jsonl:
        parser.error("--from_jsonl_test needs --from_jsonl")
    if args.val_every < 1:
        parser.error("--val_every must be >= 1: sft.py and reward.py need validation files")
    if args.from_jsonl:
        train_files, test_files = [args.from_jsonl], [args.from_jsonl_test] if args.from_jsonl_test else []
    else:
        subsets = [s for s in args.subsets.split(",") if s]
        train_files = [fetch(s, "train", args.cache_dir) for s in subsets]
        test_files = [fetch(s, "test", args.cache_dir) for s in subsets]
    read = lambda paths: ((where, record) for path in paths for where, record in read_records(path))
    files, report = convert(read(train_files), read(test_files) if test_files else None, args.val_every)

    # the summary: what was read, what was left out and why
    for path in train_files + test_files:
        print(f"{path}: {report['records'][path]} records, {report['kept'][path]} kept")
    print(f"skipped {sum(report['skipped'].values())} records (not written), by reason:")
    for reason, n in report["skipped"].most_common():
        print(f"  {n:6d}  {reason}  (first: {report['first'][reason]})")
    if not test_files:
        print("note: no test file; test_prompts.jsonl holds the validation prompts")
    if args.max_prompt_tokens:
        from model import get_tokenizer  # only here: it loads torch
        enc = get_tokenizer(args.tokenizer)
        for name in ("ppo_prompts", "test_prompts"):
            files[name], n = drop_long_prompts(files[name], args.max_prompt_tokens, enc)
            print(f"left out of {name}: {n} prompts over --max_prompt_tokens {args.max_prompt_tokens} "
                  f"({args.tokenizer} tokens)")
    for name, records in files.items():
        if not records:
            raise SystemExit(f"error: no records for {name}.jsonl (too little data for --val_every "
                             f"{args.val_every}, or every record skipped)")
    os.makedirs(args.out_dir, exist_ok=True)
    for name, records in files.items():
        write_jsonl(os.path.join(args.out_dir, f"{name}.jsonl"), records)
        print(f"wrote {os.path.join(args.out_dir, name + '.jsonl')}: {len(records)} records")
    return files, report


if __name__ == "__main__":
    main()
