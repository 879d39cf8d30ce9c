"""Prompt styles, one module each behind `PromptStyle`: how problems are prompted, decoded, scored and executed.

`own` (mmpt's own prompts, `--prompt-style mmpt`), `flat` (mmpt's prompts for a checkpoint trained
on the paper's flattened code) and `paper` (the paper's official evaluation, `--prompt-style
paper`); `registry` picks one by the style's name and the checkpoint's code format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mmpt.eval.benchmarks.problem import Benchmark, Problem


@dataclass(frozen=True)
class SamplingDefaults:
    """What `mmpt generate` uses where its options are not given."""

    greedy: bool  # without --temperature: greedy decoding (else sampling at `temperature`)
    temperature: float
    top_p: float
    n: int  # samples per task when sampling (greedy: 1)
    total_length: int | None  # without --max-new-tokens: ids in total (prompt + new, over a batch); None: 300 new ids


class PromptStyle(Protocol):
    """One prompt style: its problems, the prompt ids of one, a sample record from generated ids,
    the scored instance of `mmpt score`, and the defaults of generate and execute."""

    name: str  # what a samples file's settings record (`prompt_style`): mmpt | paper
    flat: bool  # the model writes flattened text: a sample ends at <eot> only, and vLLM cannot serve it
    total_length: bool  # `max_total_tokens` counts prompt + new ids over a batch (each sample its own budget)
    time_limit: tuple[float, float]  # `mmpt execute`'s defaults: (floor, factor) of max(floor, factor x reference time)
    sampling: SamplingDefaults

    def problems(
        self, benchmark: Benchmark, data_file: str | Path | None, split: str, limit: int | None, incremental: bool
    ) -> list[Problem]:
        """The problems of `benchmark` as this style prompts and executes them (incremental tasks included)."""
        ...

    def prompt(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], object]:
        """(ids, state): the prompt ids the engine gets, and what decoding its samples needs."""
        ...

    def new_token_budgets(self, prompts: list[list[int]], total: int) -> list[int] | None:
        """The most new ids of each prompt where `total` ids count the prompt too; None where the
        style has no such rule (`total_length` False: every sample may write max_new_tokens)."""
        ...

    def sample(
        self, text, problem: Problem, completion_id: int, prompt: list[int], state: object, ids: list[int], budget: int,
        settings: dict,
    ) -> dict:  # fmt: skip
        """The samples-file record of generated code ids `ids` (`text`: the run's `CodeText`)."""
        ...

    def run_note(self, records: list[dict]) -> str:
        """What `mmpt generate`'s summary adds about the samples it wrote ("" for nothing)."""
        ...

    def scored_instance(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], int]:
        """(ids, start): the prompt with the reference written out and `<eot>`, scored from `start`."""
        ...
