"""mmpt/eval/styles/registry.py: the prompt styles by name, chosen as strategies and never by an `if` on a name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmpt.eval.styles.flat import Flat
from mmpt.eval.styles.own import Own
from mmpt.eval.styles.paper import Paper
from mmpt.eval.styles.registry import STYLES, load_problems, prompt_style
from mmpt.modality import PROMPT_STYLES

ROOT = Path(__file__).resolve().parents[3]
COMMANDS = ["generate.py", "score.py", "prompts.py", "watch.py", "paper_table.py", "sandbox/execute.py"]


def test_names_checkpoint_formats_and_unknown_names():
    assert tuple(STYLES) == PROMPT_STYLES  # the names a checkpoint's mmpt.json may hold
    assert type(prompt_style("mmpt")) is Own and type(prompt_style("mmpt", "flat")) is Flat
    assert type(prompt_style("paper")) is Paper and type(prompt_style("paper", "flat")) is Paper
    with pytest.raises(ValueError, match=r"--prompt-style must be one of \('mmpt', 'paper'\), got 'official'"):
        prompt_style("official")
    # what a samples file records and execute reads back
    assert [s.name for s in (Own(), Flat(), Paper())] == ["mmpt", "mmpt", "paper"]
    assert (Own().time_limit, Paper().time_limit) == ((3.0, 4.0), (5.0, 0.0))


def test_the_styles_problems_differ_where_the_paper_says():
    ours, paper = load_problems("mmpt", "mbpp", limit=2), load_problems("paper", "mbpp", limit=2)
    assert [p.task_id for p in ours] == [p.task_id for p in paper] == ["MBPP/11", "MBPP/12"]
    assert paper[0].setup == "" and paper[0].test.startswith("\ndef check(")  # the official program
    assert ours[0].test.startswith("assert ")


def test_the_commands_choose_no_style_or_code_format_by_name():
    """The commands call the strategies; no `style == "paper"` or `code_format == "flat"` left in them."""
    branch = re.compile(r"""(style|code_format)\s*[!=]=\s*["'](paper|mmpt|flat|plain)["']""")
    found = [
        f"{name}:{n}" for name in COMMANDS
        for n, line in enumerate((ROOT / "mmpt" / "eval" / name).read_text().splitlines(), 1)
        if branch.search(line)
    ]  # fmt: skip
    assert found == []


def test_an_unknown_benchmark_is_an_error_under_each_style():
    """Under paper too: no benchmark falls to the MBPP rules by default."""
    for style in ("mmpt", "paper"):
        with pytest.raises(ValueError, match="unknown benchmark 'apps'; choose one of humaneval, mbpp, humaneval"):
            load_problems(style, "apps")
