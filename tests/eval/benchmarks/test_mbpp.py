"""mmpt/eval/benchmarks/mbpp.py: splits, the prompt's layout, references with their setup, both file formats, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmpt.eval import data
from mmpt.eval.benchmarks.registry import load_problems
from mmpt.jsonl import read_jsonl

MBPP = data.MBPP  # the shipped release


def runs(program: str) -> bool:
    """Whether `program` exits cleanly in a plain interpreter (reference checks: trusted code)."""
    return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60).returncode == 0


def test_mbpp_test_split_and_layout():
    problems = load_problems("mbpp", MBPP)
    assert len(problems) == 500 and problems[0].task_id == "MBPP/11" and problems[-1].task_id == "MBPP/510"
    p = problems[0]
    assert p.signature.startswith("def remove_Occ(") and "\n" not in p.signature
    assert p.docstring.splitlines() == [
        "Write a python function to remove first and last occurrence of a given character from the string.",
        'assert remove_Occ("hello","l") == "heo"',
    ]
    assert p.prompt == p.signature + "\n" and p.entry_point == "remove_Occ"
    assert len(load_problems("mbpp", MBPP, split="all")) == 974
    assert len(load_problems("mbpp", MBPP, split="validation")) == 90


def test_mbpp_references_pass():
    problems = load_problems("mbpp", MBPP, limit=40)
    for p in problems:
        assert runs(p.program(p.reference)), p.task_id


def _code_lines(code: str) -> set[str]:
    return {line.strip() for line in code.replace("\r\n", "\n").split("\n") if line.strip()}


def test_mbpp_prompts_hold_no_reference_code_but_the_signature_line():
    rows = {row["task_id"]: row for _, row in read_jsonl(MBPP)}
    problems = load_problems("mbpp", MBPP, split="all")
    helpers = 0
    for p in problems:
        reference = _code_lines(rows[int(p.task_id.split("/")[1])]["code"])
        header = _code_lines(p.signature)
        assert len(header) == 1 and next(iter(header)).startswith(("def ", "async def ")), p.task_id
        leaked = (_code_lines(p.docstring) | _code_lines(p.prompt)) & reference - header
        assert not leaked, (p.task_id, leaked)
        helpers += len(reference) > len(_code_lines(p.reference)) + 1
    assert helpers > 19  # MBPP/152 and others do define code beside the entry point
    p = next(p for p in problems if p.task_id == "MBPP/1")
    assert p.signature == "def min_cost(cost, m, n): " and p.setup.startswith("R = 3\nC = 3\n")


def test_mbpp_test_split_references_pass_with_their_helpers():
    for p in load_problems("mbpp", MBPP)[130:160]:  # MBPP/152's merge sort calls a helper
        assert runs(p.program(p.reference)), p.task_id


def test_mbpp_hub_sanitized_format_and_errors(tmp_path):
    row = {
        "task_id": 11,
        "prompt": "Add two numbers.",
        "code": "def add(a, b): return a + b",
        "test_imports": [],
        "test_list": ["assert add(1, 2) == 3"],
    }
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n")
    [p] = load_problems("mbpp", path)
    assert (p.signature, p.reference) == ("def add(a, b):", "    return a + b\n")
    assert runs(p.program(p.reference))
    path.write_text(json.dumps({**row, "test_list": ["assert nothing(1) == 3"]}) + "\n")
    with pytest.raises(ValueError, match=r"m.jsonl:1: field 'code' of task 11"):
        load_problems("mbpp", path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"m.jsonl:1: invalid JSON"):
        load_problems("mbpp", path)
