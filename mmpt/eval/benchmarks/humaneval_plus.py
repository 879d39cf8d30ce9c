"""HumanEval+ (EvalPlus): HumanEval's problems judged by EvalPlus's base and plus inputs (`evalplus`)."""

from __future__ import annotations

from mmpt.eval.benchmarks import evalplus, humaneval


def _task(task_id: object) -> tuple[str, object]:
    return str(task_id), lambda args: args  # HumanEval's ids; inputs as JSON holds them


def _hub_reference(row: dict, function: str) -> tuple[object, object]:
    return row.get("prompt", "") + row.get("canonical_solution", ""), row.get("entry_point")


PLUS = evalplus.PlusBenchmark(
    name="humaneval+",
    hub="evalplus/humanevalplus",
    release="HumanEvalPlus-v0.1.10.jsonl.gz",
    release_repo="humanevalplus_release",
    base="humaneval",
    base_problems=humaneval.problems,
    oracles={"find_zero": "poly_root"},  # HumanEval/32
    task=_task,
    hub_reference=_hub_reference,
)
