"""mmpt/eval/benchmarks/humaneval.py: the prompt split, the reference, mmpt's incremental tasks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmpt.eval import data
from mmpt.eval.benchmarks.registry import load_problems

MBPP = data.MBPP  # the shipped release


def runs(program: str) -> bool:
    """Whether `program` exits cleanly in a plain interpreter (reference checks: trusted code)."""
    return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60).returncode == 0


def test_humaneval_split_and_reference():
    problems = load_problems("humaneval")
    assert len(problems) == 164
    p = problems[0]
    assert p.task_id == p.base_task_id == "HumanEval/0"
    assert p.signature == "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:"
    assert p.docstring.startswith("Check if in given list of numbers") and '"""' not in p.docstring
    assert p.docstring.splitlines()[1] == "given threshold."  # cleandoc removed the indentation
    assert p.test.endswith("check(has_close_elements)")
    # HumanEval/115 has a statement before its docstring: it stays in the signature
    assert problems[115].signature.rstrip().endswith("def max_fill(grid, capacity):\n    import math")
    assert all(p.docstring and p.docstring not in p.signature for p in problems)


def test_humaneval_references_pass_and_wrong_bodies_fail():
    problems = load_problems("humaneval", limit=5)
    assert runs("\n".join(p.prompt + p.reference + "\n" + p.test for p in problems))
    assert not runs(problems[0].prompt + "    return None\n" + "\n" + problems[0].test)


def test_incremental_tasks():
    tasks = [t for t in load_problems("humaneval", incremental=True, limit=1)]
    body = tasks[0].reference
    nonempty = [line for line in body.splitlines() if line.strip()]
    assert [t.task_id for t in tasks] == [f"HumanEval/0#{i}" for i in range(len(nonempty))]
    assert {t.base_task_id for t in tasks} == {"HumanEval/0"}
    for i, t in enumerate(tasks):
        assert body.startswith(t.given) and (t.given_lines, t.total_lines) == (i, len(nonempty))
        assert [line for line in t.given.splitlines() if line.strip()] == nonempty[:i]
        assert t.given == "" or t.given.endswith("\n")
    assert tasks[2].fraction == pytest.approx(2 / len(nonempty))
