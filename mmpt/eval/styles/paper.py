"""Prompt style `paper`: the official evaluation of the paper's code, rule for rule (facts, our code).

The authors generate with `source/generation.py` of `huawei-noah/noah-research` (NLP/text2code_mrpt)
and execute with CodeGeeX's harness (HumanEval-X's Python file, their MBPP script). The problems,
their text and the executed programs follow the official rules of `mmpt.eval.benchmarks.official`
(each benchmark's `official_problems`); the rest, as implemented here:

- **Prompt ids**: signature-first (PyCodeGPT) `<|beginoftext|>` SIG `<comments>` QUOTED-DOC
  `<python>` GIVEN; docstring-first (PanGu) `<comments>` DOC `<python>` SIG GIVEN, cut to 1,024
  ids. Each part is tokenized on its own; SIG and GIVEN are code (separated ids → their copies).
- **Decoding**: the ids after the prompt's docstring part, i.e. GIVEN and what the model wrote,
  turned to tokens and joined (`convert_tokens_to_string`), cut at the first `<eot>`; without one,
  `str.find` returns -1 and the last character is dropped (a bug, reproduced and counted). Then
  split at `<NEW_LINE>`: a line holding `<INDENT>` opens one level (one, however many), each
  `<DEDENT>` closes one and levels may go negative (indented by nothing); each line is stripped.
  What runs is the generation up to its first line at column 0.
- **Length**: 1,024 ids in total, counted over a batch of 16 prompts left-padded to the longest.
- **Time limit**: 5 s per program, flat (CodeGeeX's harness as geneval.sh runs it); `mmpt execute`
  takes it as its defaults under this style (`TIME_LIMIT`), each overridable.
- **Sampling** (geneval.sh): 200 samples at temperature 0.95, top-p 0.8, top-k off, or greedy;
  `mmpt generate` takes these as its defaults under this style, each overridable.
- **`<eot>` as text**: the decoded text is cut at the first `<eot>` in it, also one the model spelled
  in pieces. mmpt's text equals the official's only without separation (the official's code copies
  decode with their `[_DUP_]` names, which break such a spelling), so the cut is made there only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mmpt.data.codeformat import DEDENT, INDENT, NEW_LINE, quoted_docstring
from mmpt.data.instances import sentinel_ids
from mmpt.eval.benchmarks.official import flat_lines
from mmpt.eval.benchmarks.problem import Benchmark, Problem
from mmpt.eval.samples import sample_record
from mmpt.eval.styles import SamplingDefaults
from mmpt.modality import OFFICIAL_BOS

TOTAL_LENGTH = 1024  # generation.py's --max_seq_length in geneval.sh: prompt + generated ids, padding included
BATCH_SIZE = 16  # geneval.sh's BS: prompts are left-padded to the longest of their batch
BOS_TOKEN = OFFICIAL_BOS
EOT_TOKEN = "<eot>"
DUP_PREFIX = "[_DUP_]"
# sampling of geneval.sh: greedy, or 200 samples at temperature 0.95, top-p 0.8 (top-k off), seed 42
SAMPLING_TEMPERATURE = 0.95
SAMPLING_TOP_P = 0.8
SAMPLES = 200
SEED = 42
# CodeGeeX's harness as the official scripts call it: 5 s per program, whatever the reference takes
TIME_LIMIT = (5.0, 0.0)  # (floor, factor) of `mmpt execute`: limit = max(floor, factor x reference time)


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


def scored_instance(tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], int]:
    """(ids, start): the official prompt with every line of the reference written (flattened as its
    incremental tasks are) and `<eot>`; scored from the prompt's end."""
    prompt, _ = prompt_ids(tokenizer, smap, layout, problem)
    lines = flat_lines(problem.reference, problem.signature)
    whole = replace(problem, given=lines[-1] if lines else problem.given)
    ids = prompt_ids(tokenizer, smap, layout, whole)[0] + smap.to_code([sentinel_ids(tokenizer).eot])
    return ids, max(len(prompt), 1)


def sample(text, problem: Problem, completion_id: int, prompt: list[int], start: int, ids: list[int], budget: int,
           settings: dict) -> dict:  # fmt: skip
    """The record of one sample: the official decoding of GIVEN + the generated ids cut to the
    sample's budget (no `<eot>` within it: the last character is dropped)."""
    ended = len(ids) < budget
    code, generation, dropped = completion(text.tokenizer, text.smap, prompt[start:] + ids[:budget], ended)
    record = sample_record(replace(problem, given=""), completion_id, code, settings)
    # the program is prompt + completion as they are: no newline may be taken off
    record.update(completion=code, generated=generation, dropped_last_char=dropped)
    return record


class Paper:
    """The paper's official evaluation as a prompt style (module doc)."""

    name = "paper"
    flat = True  # the official generation ends at <eot> only
    total_length = True
    time_limit = TIME_LIMIT
    sampling = SamplingDefaults(greedy=False, temperature=SAMPLING_TEMPERATURE, top_p=SAMPLING_TOP_P, n=SAMPLES,
                                total_length=TOTAL_LENGTH)  # fmt: skip

    def problems(
        self, benchmark: Benchmark, data_file: str | Path | None, split: str, limit: int | None, incremental: bool
    ) -> list[Problem]:
        """The official problems (`Benchmark.official_problems`)."""
        return benchmark.official_problems(data_file, split, limit, incremental)

    def prompt(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], object]:
        """(ids, start): the official prompt, and where the decoded text starts."""
        return prompt_ids(tokenizer, smap, layout, problem)

    def new_token_budgets(self, prompts: list[list[int]], total: int) -> list[int] | None:
        return new_token_budgets(prompts, total)

    def sample(self, text, problem, completion_id, prompt, state, ids, budget, settings) -> dict:
        return sample(text, problem, completion_id, prompt, state, ids, budget, settings)

    def run_note(self, records: list[dict]) -> str:
        dropped = sum(bool(r.get("dropped_last_char")) for r in records)
        return f"; {dropped} samples without <eot> lost their last character (the official decoding's bug)"

    def scored_instance(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], int]:
        return scored_instance(tokenizer, smap, layout, problem)
