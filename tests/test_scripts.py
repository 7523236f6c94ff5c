""" The shell scripts the README runs (data/pipeline.sh, sizes.sh, rounds.sh) and the commands
written out in README.md, RESULTS.md and data/README.md: every flag they pass exists in the `--help`
of the script it is passed to, so renaming a flag cannot silently break them. (bench/README.md's
scripts need bench/requirements.txt.)

    python -m pytest tests/test_scripts.py -q
"""
import functools
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
SHELL_SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "data", "*.sh")))


@functools.lru_cache(maxsize=None)
def flags_in_help(script):
    out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"(--[a-z_]+)", out.stdout))


def commands_in(lines):
    """(script, flags) of every `python X.py ...` or `torchrun ... X.py ...` in lines of shell."""
    commands = []
    for line in lines:
        for m in re.finditer(r"(?:python|torchrun(?: +--\S+)*) ([\w/]+\.py)((?: +[^\s&;|]+)*)",
                             line.split("#", 1)[0]):
            commands.append((m.group(1), re.findall(r"(?<!\S)(--[a-z_]+)", m.group(2))))
    return commands


def python_commands(path):
    """The commands of a shell script."""
    return commands_in(open(path).read().replace("\\\n", " ").split("\n"))


def readme_commands(path):
    """The commands of a markdown file: in fenced blocks a line is a command (a trailing backslash
    continues it); an inline `code` span may wrap over lines."""
    text = open(path).read()
    lines = [line for block in re.findall(r"```[a-z]*\n(.*?)```", text,
                                          re.S) for line in block.replace("\\\n", " ").split("\n")]
    return commands_in(lines + [" ".join(span.split()) for span in re.findall(r"`([^`]+)`",
                                                                              re.sub(r"```.*?```", "", text,
                                                                                     flags=re.S))])


def test_the_scripts_run_every_stage():
    assert [os.path.basename(p) for p in SHELL_SCRIPTS] == ["pipeline.sh", "rounds.sh", "sizes.sh"]
    pipeline = [script for script, _ in python_commands(SHELL_SCRIPTS[0])]
    assert pipeline == ["data/world.py", "sft.py", "sft.py", "data/collect.py", "reward.py",
                        "ppo.py", "ppo.py", "evaluate.py", "evaluate.py"]


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=os.path.basename)
def test_every_flag_exists(path):
    commands = python_commands(path)
    assert commands, f"{path}: no python commands found"
    for script, flags in commands:
        unknown = set(flags) - flags_in_help(script)
        assert not unknown, f"{os.path.basename(path)}: {script} has no {sorted(unknown)}"


@pytest.mark.parametrize("path", ["README.md", "RESULTS.md", "data/README.md"])
def test_every_flag_in_the_readme_exists(path):
    commands = [(script, flags) for script, flags in readme_commands(os.path.join(ROOT, path))
                if not script.startswith("bench/")]
    assert len(commands) >= 10, f"{path}: only {len(commands)} python commands found"
    for script, flags in commands:
        unknown = set(flags) - flags_in_help(script)
        assert not unknown, f"{path}: {script} has no {sorted(unknown)}"
