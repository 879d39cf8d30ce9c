"""Tests of mmpt/eval/benchmarks/official.py and each benchmark's `official_problems`: the paper's text rules, as facts.

Every expected value here is a fact worked out from the official scripts' rules (utils.read_problems
of NLP/text2code_mrpt, CodeGeeX's Python harness and the authors' MBPP script) and checked once by
running that code outside this repository; none of it is computed here by the code under test.
"""

from __future__ import annotations

from pathlib import Path

from mmpt.eval.benchmarks import humaneval, mbpp, official
from mmpt.eval.styles import paper
from mmpt.eval.styles.registry import load_problems

HE0_DOC = (
    "Check if in given list of numbers, are any two numbers closer to each other than\ngiven threshold.\n"
    ">>> has_close_elements([1.0, 2.0, 3.0], 0.5)\nFalse\n>>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\nTrue\n"
)
HE0_SIG = "def has_close_elements(numbers: List[float], threshold: float):"


def test_humaneval_docstring_and_signature():
    problems = {p.task_id: p for p in humaneval.problems()}
    assert official.split_humaneval_prompt(problems["HumanEval/0"].prompt) == (HE0_DOC, HE0_SIG)  # annotation gone
    # the entry point's def after two helpers' docstrings; a docstring that opens on its own line
    assert official.split_humaneval_prompt(problems["HumanEval/38"].prompt) == (
        "\ntakes as input string encoded with encode_cyclic function. Returns decoded string.\n",
        "def decode_cyclic(s: str):",
    )
    assert official.split_humaneval_prompt(problems["HumanEval/10"].prompt)[1] == "def make_palindrome(string: str):"
    assert official.drop_return_annotation("def f(a,\nb) -> Dict[str, int] :") == "def f(a,\nb):"


def test_mbpp_rules(mbpp_file: Path):
    problems = {p.task_id: p for p in load_problems("paper", "mbpp", mbpp_file)}
    vol = problems["MBPP/14"]
    assert (vol.docstring, vol.signature) == (
        "Write a python function to find the volume of a triangular prism.",
        "def find_Volume(l,b,h) :",
    )
    # the tests: test_list inside check(NAME), NAME between the first "def " and the first "("
    assert vol.test == (
        "\ndef check(find_Volume):\n    assert find_Volume(10,8,6) == 240\n    assert find_Volume(3,2,2) == 6\n"
        "    assert find_Volume(1,2,1) == 1\n\ncheck(find_Volume)\n"
    )
    program = vol.prompt + paper.program_code("\n    return ((l * b * h) / 2)\nprint(1)") + "\n" + vol.test
    assert program == official.HELPER_BLOCK + "def find_Volume(l,b,h) :\n    return ((l * b * h) / 2)\n" + vol.test
    # the first def of the reference is a helper (MBPP/18): it is the signature, the entry point is not defined
    assert problems["MBPP/18"].signature == "def str_to_list(string):" and problems["MBPP/18"].entry_point == "remove_dirty_chars"


def test_incremental_given_lines():
    # one <DEDENT> however many levels close; blank lines as extra <NEW_LINE>s (after a <DEDENT>,
    # before an <INDENT>); the whole solution is no task; CRLF leaves a blank first line
    solution = "    if a:\n        for x in a:\n\n            y = 1\n\n    return y\n    z = 2\n"
    assert official.flat_given(solution, "def f(a):") == [
        "",
        "<NEW_LINE><INDENT>if a:<NEW_LINE>",
        "<NEW_LINE><INDENT>if a:<NEW_LINE><INDENT>for x in a:<NEW_LINE>",
        "<NEW_LINE><INDENT>if a:<NEW_LINE><INDENT>for x in a:<NEW_LINE><NEW_LINE><INDENT>y = 1<NEW_LINE>",
        "<NEW_LINE><INDENT>if a:<NEW_LINE><INDENT>for x in a:<NEW_LINE><NEW_LINE><INDENT>y = 1<NEW_LINE><DEDENT><NEW_LINE>return y<NEW_LINE>",
    ]
    assert official.flat_given("def f(x):\r\n\treturn x\r\n\tpass", "def f(x):") == [
        "",
        "<NEW_LINE><NEW_LINE><INDENT>return x<NEW_LINE>",
    ]


def test_mbpp_official_problems_read_the_file_once(mbpp_file, monkeypatch):
    reads = []
    original = mbpp.read_jsonl
    monkeypatch.setattr(mbpp, "read_jsonl", lambda path: reads.append(path) or original(path))
    problems = mbpp.official_problems(mbpp_file, "all", None, incremental=True)
    assert reads == [mbpp_file] and problems[0].task_id.endswith("#0")
