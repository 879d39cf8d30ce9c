"""Fixtures of the eval tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PAPER_PROMPTS = Path(__file__).resolve().parents[1] / "assets" / "paper_prompts.json"


@pytest.fixture(scope="module")
def mbpp_file(tmp_path_factory) -> Path:
    """The MBPP rows of tests/assets/paper_prompts.json (the tasks whose official prompt ids it holds) as a JSONL file."""
    path = tmp_path_factory.mktemp("mbpp") / "mbpp.jsonl"
    rows = json.loads(PAPER_PROMPTS.read_text())["mbpp_rows"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
