"""Benchmark files shipped as package data (see README.md here): their paths, no loading."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
MBPP = FOLDER / "mbpp.jsonl"  # google-research's release, all 974 problems (CC BY 4.0)
HUMANEVAL_X_PYTHON = FOLDER / "humaneval_x_python.jsonl.gz"  # HumanEval-X's Python file (Apache-2.0)
