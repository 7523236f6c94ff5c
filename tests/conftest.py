"""
Shared set-up of the tests: the repository root first on sys.path, so that a test imports
model, common, sft, reward, ppo, evaluate and data.* as the scripts do (and tests/ itself, which
pytest adds, lets test_restart reuse test_ppo's and test_sft's fixtures).

    python -m pytest -q tests
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
