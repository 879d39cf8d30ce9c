"""The `evalplus` package's own verdicts on the EvalPlus fixture (tests/assets/evalplus): the reference.

    python tests/eval/benchmarks/evalplus_reference.py [OUT.json]   (default: print)

Runs `evalplus.evaluate` (evalplus 0.3.1, installed without its model-client dependencies: see
.ci/run) offline: its loaders read the fixture's release files through HUMANEVAL_OVERRIDE_PATH /
MBPP_OVERRIDE_PATH, its ground-truth cache goes to a temporary folder. Each sample's program is
the one mmpt runs: the base problem's setup + prompt + completion, plus an alias where EvalPlus
renamed the function (MBPP/164). Writes {benchmark: [{"task_id", "label", "base", "plus"}, ...]}
in sample order, "base"/"plus" being evalplus's status of each split ("pass", "fail", "timeout").
The call floor of the time limits is mmpt's (`evalplus_rules.MIN_TIME_LIMIT`), passed as
evalplus's own `min_time_limit`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "evalplus"
DATA = {"humaneval+": ASSETS / "HumanEvalPlus-mini.jsonl", "mbpp+": ASSETS / "MbppPlus-mini.jsonl"}
SAMPLES = {name: ASSETS / f"samples-{name}.jsonl" for name in DATA}
DATASET = {"humaneval+": "humaneval", "mbpp+": "mbpp"}  # evalplus's names


def _solutions(benchmark: str) -> list[dict]:
    """The fixture's samples as evalplus samples: whole programs under EvalPlus's task ids."""
    from mmpt.eval.benchmarks.registry import load_problems
    from mmpt.jsonl import read_jsonl

    problems = {p.task_id: p for p in load_problems(benchmark, DATA[benchmark])}
    out = []
    for _, sample in read_jsonl(SAMPLES[benchmark]):
        p = problems[sample["task_id"]]
        program = p.setup + p.prompt + sample["completion"]
        if p.reference_entry_point != p.entry_point:
            program += f"\n\n{p.reference_entry_point} = {p.entry_point}\n"
        task_id = sample["task_id"].replace("MBPP/", "Mbpp/")
        out.append({"task_id": task_id, "solution": program, "label": sample["label"]})
    return out


def verdicts(work: Path) -> dict[str, list[dict]]:
    os.environ["HUMANEVAL_OVERRIDE_PATH"] = str(DATA["humaneval+"])  # read when evalplus.data is imported
    os.environ["MBPP_OVERRIDE_PATH"] = str(DATA["mbpp+"])
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # evalplus caches expected outputs there
    from evalplus.evaluate import evaluate

    from mmpt.eval.sandbox.inside.evalplus_rules import MIN_TIME_LIMIT

    result = {}
    for benchmark, dataset in DATASET.items():
        solutions = _solutions(benchmark)
        samples = work / f"{dataset}.jsonl"
        samples.write_text("".join(json.dumps({"task_id": s["task_id"], "solution": s["solution"]}) + "\n" for s in solutions))
        evaluate(dataset, samples=str(samples), parallel=2, min_time_limit=MIN_TIME_LIMIT)
        runs = json.loads((work / f"{dataset}_eval_results.json").read_text())["eval"]
        seen: dict[str, int] = {}
        rows = []
        for s in solutions:  # evalplus lists each task's samples in file order
            i = seen[s["task_id"]] = seen.get(s["task_id"], -1) + 1
            run = runs[s["task_id"]][i]
            assert run["solution"] == s["solution"]
            task_id = s["task_id"].replace("Mbpp/", "MBPP/")
            rows.append({"task_id": task_id, "label": s["label"], "base": run["base_status"], "plus": run["plus_status"]})
        result[benchmark] = rows
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        result = json.dumps(verdicts(Path(work)), indent=1) + "\n"
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(result)
    else:
        sys.stdout.write(result)
    sys.stdout.flush()
    sys.stderr.flush()
    # evaluate() leaves a thread that sleeps 20 s before it notices the run is over
    os._exit(0)


if __name__ == "__main__":
    main()
