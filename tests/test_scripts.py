"""
The shell scripts the README runs (data/pipeline.sh, sizes.sh, rounds.sh): every flag they pass exists in the
`--help` of the script it is passed to, so renaming a flag cannot silently break the README's commands.

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
    out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"(--[a-z_]+)", out.stdout))


def python_commands(path):
    """(script, flags) of every `python X.py ...` command in a shell script."""
    commands = []
    for line in open(path):
        line = line.split("#", 1)[0]
        for m in re.finditer(r"python ([\w/]+\.py)((?: +(?:--[a-z_]+|\S+))*)", line):
            commands.append((m.group(1), re.findall(r"(?<!\S)(--[a-z_]+)", m.group(2))))
    return commands


def test_the_scripts_run_every_stage():
    assert [os.path.basename(p) for p in SHELL_SCRIPTS] == ["pipeline.sh", "rounds.sh", "sizes.sh"]
    pipeline = [script for script, _ in python_commands(SHELL_SCRIPTS[0])]
    assert pipeline == ["data/world.py", "sft.py", "sft.py", "data/collect.py", "reward.py", "ppo.py", "ppo.py", "evaluate.py"]


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=os.path.basename)
def test_every_flag_exists(path):
    commands = python_commands(path)
    assert commands, f"{path}: no python commands found"
    for script, flags in commands:
        unknown = set(flags) - flags_in_help(script)
        assert not unknown, f"{os.path.basename(path)}: {script} has no {sorted(unknown)}"
