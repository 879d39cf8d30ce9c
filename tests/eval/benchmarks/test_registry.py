"""mmpt/eval/benchmarks/registry.py: the benchmarks by name, an unknown one a clear error, and no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mmpt.eval.benchmarks import humaneval, humaneval_plus, mbpp, mbpp_plus
from mmpt.eval.benchmarks.registry import BENCHMARKS, REGISTRY, benchmark, load_problems

PACKAGE = Path(__file__).resolve().parents[3] / "mmpt" / "eval" / "benchmarks"


def test_unknown_benchmark_and_split():
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_problems("apps")
    with pytest.raises(ValueError, match="only the 'test' split"):
        load_problems("humaneval", split="train")


def test_an_unknown_benchmark_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError) as e:
        benchmark("mbpp++")
    assert str(e.value) == "unknown benchmark 'mbpp++'; choose one of humaneval, mbpp, humaneval+, mbpp+"
    assert BENCHMARKS == ("humaneval", "mbpp", "humaneval+", "mbpp+")
    assert [REGISTRY[b] for b in BENCHMARKS] == [humaneval, mbpp, humaneval_plus.PLUS, mbpp_plus.PLUS]


def test_every_benchmark_module_offers_the_interface_and_problem_imports_none():
    for name, module in REGISTRY.items():
        assert callable(module.problems) and callable(module.official_problems), name
    imported = {
        node.module
        for node in ast.walk(ast.parse((PACKAGE / "problem.py").read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not {m for m in imported if m.startswith("mmpt.")}, imported  # Problem depends on no benchmark


def test_a_benchmark_the_paper_has_not_is_an_error_under_the_paper_style():
    for name in ("humaneval+", "mbpp+"):
        with pytest.raises(ValueError, match=f"which has no {name}"):
            benchmark(name).official_problems(None, "test", None, False)
