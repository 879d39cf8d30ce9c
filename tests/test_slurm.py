"""slurm/pretrain.sh, slurm/eval.sh and slurm/watch.sh on a real one-node Slurm (tests/slurm_cluster.py), and the
Slurm/MPI/sandbox checks of `mmpt doctor`.

The pipeline runs once per module: `mmpt prepare` on tests/assets, then `sbatch --wait
slurm/pretrain.sh` (2 tasks), once uninterrupted and once for each way a save request arrives
(USR1 to the job's steps as `--signal=USR1@T` sends it, USR1 to the batch script alone, plain
`scancel`): it saves, requeues itself where Slurm lets it, and resumes with the uninterrupted
losses; then `sbatch --wait slurm/eval.sh` on its final/ model and `sbatch --wait slurm/watch.sh` on
its checkpoints.
Without Slurm installed these skip, which CI (CI=true) counts as a failure.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from mmpt.doctor import DoctorConfig, check_mpi, check_sandbox, check_slurm

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"
MAX_STEPS = 12  # long enough that the signal lands mid-run, short enough for CI

_spec = importlib.util.spec_from_file_location("slurm_cluster", REPO / "tests" / "slurm_cluster.py")
slurm_cluster = sys.modules.setdefault("slurm_cluster", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(slurm_cluster)

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def cluster():
    missing = slurm_cluster.missing_binaries()
    if missing:
        pytest.skip(f"Slurm not installed ({', '.join(missing)} missing)")
    with slurm_cluster.cluster() as config:
        yield config


@pytest.fixture(scope="module")
def job_env(cluster) -> dict[str, str]:
    """Environment for sbatch: the cluster's config and this interpreter's venv on PATH."""
    env = cluster.env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    for name in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        del env[name]  # when the suite itself runs inside a Slurm job
    env["MMPT_NODE_CHECK_S"] = "0"  # a failed run: look for a dead node once, not for 30 s
    return env


def _sbatch(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """`sbatch --wait ARGS`: returns when the job has ended, with the job's exit status."""
    return subprocess.run(["sbatch", "--wait", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _log(cwd: Path, job_name: str) -> str:
    logs = sorted(cwd.glob(f"slurm-{job_name}-*.out"))
    assert len(logs) == 1, f"expected one log slurm-{job_name}-JOBID.out in {cwd}, found {logs}"
    return logs[0].read_text()


# ---------------------------------------------------------------------------- the cluster itself


def test_cluster_is_idempotent_and_runs_mpi_ranks_under_srun(cluster, job_env):
    slurm_cluster.up(cluster)  # a second `up` on a running cluster is a no-op
    assert slurm_cluster.is_up(cluster)
    probe = "from mpi4py import MPI; c = MPI.COMM_WORLD; print(c.Get_rank(), c.Get_size())"
    proc = subprocess.run(
        ["srun", "--ntasks=2", "--mpi=pmi2", sys.executable, "-c", probe],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split("\n")[:2]) == ["0 2", "1 2"], proc.stdout


def test_slurm_conf_uses_only_the_state_dir(cluster):
    paths = re.findall(r"=(/\S+)", cluster.conf.read_text())
    assert paths and all(p.startswith(str(cluster.state)) for p in paths), paths


def test_a_job_the_node_cannot_run_is_refused_at_submission(cluster, job_env, tmp_path):
    too_many = f"--ntasks={cluster.cpus + 1}"
    proc = _sbatch([too_many, "--wrap=true"], tmp_path, job_env, timeout=60)
    assert proc.returncode != 0 and "More processors requested than permitted" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------- pretrain.sh


# the header asks for 8 GPUs x 8 cpus per task; this node has no GPU and few cores
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1"]


def test_pretrain_exits_nonzero_when_training_fails(job_env, tmp_path):
    proc = _sbatch(
        [
            *CPU_JOB,
            "--ntasks-per-node=1",
            "--job-name=bad",
            str(REPO / "slurm" / "pretrain.sh"),
            "--config",
            str(REPO / "mmpt" / "configs" / "tiny-cpu.yaml"),
            "--data_dir",
            str(tmp_path / "missing"),
        ],
        tmp_path,
        {**job_env, "MMPT_DEVICE": "cpu"},
    )
    assert proc.returncode != 0
    assert "data_dir" in _log(tmp_path, "bad")  # the trainer's own error reached the log


def _stub(tmp_path: Path, body: str) -> Path:
    """An interpreter stand-in for the ranks: a bash script."""
    stub = tmp_path / "python"
    stub.write_text("#!/bin/bash\n" + body)
    stub.chmod(0o755)
    return stub


def test_pretrain_starts_one_rank_per_gpu_with_the_arguments(cluster, job_env, tmp_path):
    """The launch itself, with a stub interpreter: the GPU branch (SLURM_GPUS_ON_NODE, as slurmd
    sets it on a GPU node) with one task requested, rendezvous, cores per rank and arguments."""
    stub = _stub(
        tmp_path,
        'echo "rank $SLURM_PROCID $SLURM_LOCALID $SLURM_NTASKS ${DS_ACCELERATOR:-gpu} '
        '$MASTER_ADDR:$MASTER_PORT cpus=$SLURM_CPUS_PER_TASK omp=$OMP_NUM_THREADS $*"\n',
    )
    env = {**job_env, "PYTHON": str(stub), "SLURM_GPUS_ON_NODE": "2"}
    args = ["--config", "configs/X.yaml", "--max_steps", "100"]
    proc = _sbatch(
        [*CPU_JOB, "--ntasks-per-node=1", "--job-name=stub", str(REPO / "slurm" / "pretrain.sh"), *args], tmp_path, env
    )
    log = _log(tmp_path, "stub")
    assert proc.returncode == 0, log
    job_id = int(re.search(r"job (\d+) restart 0", log).group(1))
    ranks = sorted(line.split()[1:] for line in log.splitlines() if line.startswith("rank "))
    launch = f"{cluster.node}:{20000 + job_id % 20000} cpus=1 omp=1 -u -m mmpt.train --save_signal SIGUSR1 {' '.join(args)}"
    assert ranks == [["0", "0", "2", "gpu", *launch.split()], ["1", "1", "2", "gpu", *launch.split()]], log


def test_pretrain_without_gpus_fails_loudly_unless_cpu_is_asked_for(job_env, tmp_path):
    stub = _stub(tmp_path, 'echo "rank $SLURM_PROCID ${DS_ACCELERATOR:-gpu}"\n')
    script = [*CPU_JOB, "--ntasks-per-node=1", "--job-name=nogpu", str(REPO / "slurm" / "pretrain.sh"), "--config", "X"]
    proc = _sbatch(script, tmp_path, {**job_env, "PYTHON": str(stub)})
    log = _log(tmp_path, "nogpu")
    assert proc.returncode != 0 and "has no GPU" in log and "MMPT_DEVICE=cpu" in log and "rank " not in log, log
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    proc = _sbatch(script, cpu, {**job_env, "PYTHON": str(stub), "MMPT_DEVICE": "cpu"})
    log = _log(cpu, "nogpu")
    assert proc.returncode == 0 and "rank 0 cpu" in log, log


def test_pretrain_never_requeues_a_run_that_failed_after_the_signal(job_env, tmp_path):
    """USR1 arrives, the ranks crash instead of saving: the job ends with their status, once."""
    stub = _stub(tmp_path, 'trap "echo crashing; exit 3" USR1\necho "rank $SLURM_PROCID up"\nwhile true; do sleep 0.2; done\n')
    submit = subprocess.Popen(
        ["sbatch", "--wait", *CPU_JOB, "--ntasks-per-node=1", "--job-name=crash", str(REPO / "slurm" / "pretrain.sh")],
        cwd=tmp_path,
        env={**job_env, "PYTHON": str(stub), "MMPT_DEVICE": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any("rank 0 up" in p.read_text() for p in tmp_path.glob("slurm-crash-*.out")):
        assert time.monotonic() < deadline and submit.poll() is None, "the stub rank never started"
        time.sleep(0.3)
    job_id = next(tmp_path.glob("slurm-crash-*.out")).name.removeprefix("slurm-crash-").removesuffix(".out")
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=job_env, check=True, timeout=60)
    submit.communicate(timeout=120)
    log = _log(tmp_path, "crash")
    assert submit.returncode != 0, log
    assert "crashing" in log and "not requeueing" in log and "requeueing job" not in log and "restart 1" not in log, log


# A stand-in for the interpreter that plays both parts pretrain.sh gives it: `-m mmpt.run_dir
# run-state|node-failure-requeue` (from files in $STUB_DIR) and a rank, which saves ("stopped") on
# the save signal or SIGTERM and finishes once the job has been requeued. MODE=fail: a rank exits 7.
STUB_RANK = """
if [[ $2 == mmpt.run_dir ]]; then
    case $3 in
        run-state) cat "$STUB_DIR/state" 2>/dev/null || echo none ;;
        node-failure-requeue) n=$(( $(cat "$STUB_DIR/count" 2>/dev/null || echo 0) + 1 )); echo $n > "$STUB_DIR/count"; echo $n ;;
    esac
    exit 0
fi
save() { echo "rank $SLURM_PROCID saved on $1"; echo stopped > "$STUB_DIR/state"; exit 0; }
trap "save USR1" USR1
trap "save TERM" TERM
echo "rank $SLURM_PROCID up, restart ${SLURM_RESTART_COUNT:-0}"
[[ ${MODE:-} == fail ]] && { sleep 1; exit 7; }
[[ ${SLURM_RESTART_COUNT:-0} -gt 0 ]] && { echo finished > "$STUB_DIR/state"; exit 0; }
while true; do sleep 0.2; done
"""


def _stub_job(tmp_path: Path, job_env: dict[str, str], scancel: list[str] | None, **env) -> tuple[int, str]:
    """pretrain.sh with 2 stub ranks (STUB_RANK); `scancel SCANCEL JOBID` once both ranks are up.
    Returns the job's exit status and log."""
    stub = _stub(tmp_path, STUB_RANK)
    env = {**job_env, "PYTHON": str(stub), "MMPT_DEVICE": "cpu", "STUB_DIR": str(tmp_path), **env}
    args = ["sbatch", "--wait", *CPU_JOB, "--ntasks-per-node=2", "--job-name=stubrun", str(REPO / "slurm" / "pretrain.sh")]
    submit = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if scancel is not None:
        deadline = time.monotonic() + 120
        while not any(p.read_text().count("up, restart 0") == 2 for p in tmp_path.glob("slurm-stubrun-*.out")):
            assert time.monotonic() < deadline and submit.poll() is None, "the stub ranks never started"
            time.sleep(0.3)
        job_id = next(tmp_path.glob("slurm-stubrun-*.out")).name.removeprefix("slurm-stubrun-").removesuffix(".out")
        subprocess.run(["scancel", *scancel, job_id], env=job_env, check=True, timeout=60)
    submit.communicate(timeout=300)
    return submit.returncode, _log(tmp_path, "stubrun")


@pytest.mark.parametrize(
    "scancel, received",
    [
        (["--batch", "--signal=TERM"], "USR1"),  # also --signal=B:TERM@T: the script passes it on as USR1
        (["--batch", "--signal=INT"], "USR1"),
        (["--signal=TERM"], "TERM"),  # the steps alone (--signal=TERM@T, preemption's GraceTime): the ranks save
    ],
)
def test_every_signal_form_saves_and_requeues(job_env, tmp_path, scancel, received):
    """A TERM to the batch script used to reach srun, which turns it into SIGKILL for every task
    ("tasks 0-1: Killed", no checkpoint, job FAILED)."""
    status, log = _stub_job(tmp_path, job_env, scancel)
    assert status == 0, log
    assert log.count(f"saved on {received}") == 2 and "Killed" not in log, log
    assert "requeueing job" in log and "up, restart 1" in log and "restart 2" not in log, log
    assert (tmp_path / "state").read_text().strip() == "finished"


def test_a_dead_node_is_requeued_a_bounded_number_of_times(job_env, tmp_path):
    """The ranks fail while `scontrol show node` has a node of the job DOWN: requeued
    MMPT_NODE_FAILURE_REQUEUES times (counted in run_state.json by the real interpreter), then the
    job ends with the ranks' status."""
    fake = tmp_path / "bin"
    fake.mkdir()
    real = subprocess.run(["which", "scontrol"], env=job_env, capture_output=True, text=True).stdout.strip()
    (fake / "scontrol").write_text(
        "#!/bin/bash\n"
        'if [[ $1 == show && $2 == node ]]; then echo "NodeName=$(hostname -s) Arch=x86_64 State=IDLE+NOT_RESPONDING"; exit 0; fi\n'
        f'exec {real} "$@"\n'
    )
    (fake / "scontrol").chmod(0o755)
    env = {"PATH": f"{fake}{os.pathsep}{job_env['PATH']}", "MODE": "fail", "MMPT_NODE_FAILURE_REQUEUES": "1"}
    status, log = _stub_job(tmp_path, job_env, None, **env)
    assert status != 0, log
    assert "node failure requeue 1 of 1" in log and "up, restart 1" in log and "restart 2" not in log, log
    assert "1 node-failure requeue(s) done already" in log and "the run failed (status 7)" in log, log
    assert (tmp_path / "count").read_text().strip() == "2"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm")


@pytest.fixture(scope="module")
def data_dir(workdir, job_env) -> Path:
    out = workdir / "data"
    cmd = [
        sys.executable,
        "-m",
        "mmpt",
        "prepare",
        "--pairs",
        str(ASSETS / "pairs.jsonl"),
        "--tokenizer",
        str(ASSETS / "tokenizer"),
        "--separation",
        "partial",
        "--max-seq-length",
        "256",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=job_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def _pretrain_args(data_dir: Path, output_dir: Path, job_name: str) -> list[str]:
    return [
        *CPU_JOB,
        "--ntasks-per-node=2",
        f"--job-name={job_name}",
        str(REPO / "slurm" / "pretrain.sh"),
        "--config",
        str(REPO / "mmpt" / "configs" / "tiny-cpu.yaml"),
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(MAX_STEPS),
        "--save_steps",
        "1000",
        "--logging_steps",
        "1",
        "--per_device_batch_size",
        "1",
    ]


def _submit_and_signal(cwd: Path, data_dir: Path, env: dict[str, str], scancel: list[str] | None, output_dir=None) -> dict:
    """`sbatch --wait slurm/pretrain.sh` in `cwd`; once training reached step 2, `scancel SCANCEL
    JOBID` (None: no signal). Returns the run's output dir (default CWD/train), log, exit status
    and stderr."""
    cwd.mkdir(parents=True, exist_ok=True)
    output_dir = output_dir or cwd / "train"
    args = ["sbatch", "--wait", *_pretrain_args(data_dir, output_dir, "pretrain")]
    submit = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if scancel is not None:
        job_id, deadline = None, time.monotonic() + 600  # a loaded 2-core machine: imports and setup take minutes
        while time.monotonic() < deadline and submit.poll() is None:
            logs = list(cwd.glob("slurm-pretrain-*.out"))
            if logs and re.search(r"^step 2/", logs[0].read_text(), re.M):
                job_id = logs[0].name.removeprefix("slurm-pretrain-").removesuffix(".out")
                break
            time.sleep(0.5)
        assert job_id is not None, f"training never reached step 2 (sbatch exit {submit.poll()})"
        subprocess.run(["scancel", *scancel, job_id], env=env, check=True, timeout=60)
    out, err = submit.communicate(timeout=900)
    # `sbatch --wait` returns as soon as a job is cancelled, while its script and ranks still run
    job_id = re.search(r"Submitted batch job (\d+)", out).group(1)
    deadline = time.monotonic() + 120
    while subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"job {job_id} still in the queue"
        time.sleep(0.5)
    return {"dir": output_dir, "log": _log(cwd, "pretrain"), "status": submit.returncode, "stderr": err}


@pytest.fixture(scope="module")
def uninterrupted_run(workdir, data_dir, job_env) -> dict:
    """The reference: the same job, never signalled."""
    run = _submit_and_signal(workdir / "uninterrupted", data_dir, {**job_env, "MMPT_DEVICE": "cpu"}, None)
    assert run["status"] == 0, run["stderr"] + run["log"][-3000:]
    return run


@pytest.fixture(scope="module")
def preempted_run(workdir, data_dir, job_env) -> dict:
    """USR1 to the job's steps once training runs, as `--signal=USR1@T` sends it near the time
    limit and `scancel --signal=USR1 JOBID` by hand: srun's tasks get it, the batch script does not."""
    return _submit_and_signal(workdir / "steps", data_dir, {**job_env, "MMPT_DEVICE": "cpu"}, ["--signal=USR1"])


def _assert_requeued_once_and_resumed(run: dict) -> int:
    log = run["log"]
    assert run["status"] == 0, run["stderr"] + log[-3000:]
    # SLURM_RESTART_COUNT, as Slurm counts requeues of the job
    assert "restart 0: 1 node(s) x 2 rank(s)" in log and "restart 1: 1 node(s) x 2 rank(s)" in log
    assert "restart 2:" not in log  # the finished run was not requeued again
    assert "slurm launch, 2 rank(s), cpu" in log  # srun was the launcher, DS_ACCELERATOR=cpu
    stopped = int(re.search(r"save requested \(SIGUSR1\), stopped after step (\d+)", log).group(1))
    resumed = int(re.search(r"resumed from step (\d+)", log).group(1))
    assert 2 <= stopped == resumed < MAX_STEPS
    assert json.loads((run["dir"] / "run_state.json").read_text()) == {"state": "finished", "step": MAX_STEPS}
    return stopped


def _assert_the_uninterrupted_losses(run: dict, reference: dict) -> None:
    want = {r["step"]: r["loss"] for r in map(json.loads, (reference["dir"] / "metrics.jsonl").read_text().splitlines())}
    got = {r["step"]: r["loss"] for r in map(json.loads, (run["dir"] / "metrics.jsonl").read_text().splitlines())}
    assert sorted(want) == sorted(got) == list(range(1, MAX_STEPS + 1))
    for step in want:
        assert abs(got[step] - want[step]) <= 1e-6 * abs(want[step]), (step, got[step], want[step])


def test_pretrain_requeues_on_usr1_to_the_steps_and_resumes(preempted_run, uninterrupted_run):
    _assert_requeued_once_and_resumed(preempted_run)
    # the batch script never saw the signal: the ranks' run_state.json told it to requeue
    assert "asking the ranks to save" not in preempted_run["log"]
    _assert_the_uninterrupted_losses(preempted_run, uninterrupted_run)


def test_pretrain_requeues_on_usr1_to_the_batch_script_and_resumes(workdir, data_dir, job_env, uninterrupted_run):
    """`scancel --batch --signal=USR1` (and `--signal=B:USR1@T`): the script passes it to srun."""
    run = _submit_and_signal(workdir / "batch", data_dir, {**job_env, "MMPT_DEVICE": "cpu"}, ["--batch", "--signal=USR1"])
    _assert_requeued_once_and_resumed(run)
    assert "USR1: asking the ranks to save" in run["log"]
    _assert_the_uninterrupted_losses(run, uninterrupted_run)


def test_plain_scancel_saves_and_the_same_sbatch_resumes(workdir, data_dir, job_env, uninterrupted_run):
    """Plain `scancel` (SIGTERM to every process of the job, the batch script too; SIGKILL after
    KillWait): the ranks save within KillWait; a cancelled job stays cancelled, and submitting it
    again resumes."""
    env = {**job_env, "MMPT_DEVICE": "cpu"}
    cancelled = _submit_and_signal(workdir / "cancel", data_dir, env, [])
    log = cancelled["log"]
    assert "TERM: asking the ranks to save" in log and "not requeueing it myself" in log and "requeueing job" not in log, log
    # slurmd's SIGTERM reaches the ranks, and so does the script's USR1: whichever came first
    stopped = int(re.search(r"save requested \(SIG(?:TERM|USR1)\), stopped after step (\d+)", log).group(1))
    assert json.loads((cancelled["dir"] / "run_state.json").read_text()) == {"state": "stopped", "step": stopped}
    assert (cancelled["dir"] / "checkpoints" / f"step_{stopped:08d}" / "complete.json").is_file()
    assert "restart 1:" not in log
    again = _submit_and_signal(workdir / "resubmitted", data_dir, env, None, output_dir=cancelled["dir"])
    assert again["status"] == 0, again["stderr"] + again["log"][-3000:]
    assert f"resumed from step {stopped}" in again["log"] and "requeueing" not in again["log"]
    _assert_the_uninterrupted_losses(again, uninterrupted_run)


def test_pretrain_logs_every_step_once_across_the_restart(preempted_run):
    records = [json.loads(line) for line in (preempted_run["dir"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, MAX_STEPS + 1))
    seen = [r["tokens_seen"] for r in records]
    assert all(b > a for a, b in itertools.pairwise(seen))  # the count was restored, not restarted


def test_pretrain_leaves_checkpoints_tensorboard_and_final(preempted_run):
    out = preempted_run["dir"]
    steps = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert steps and steps[-1] == f"step_{MAX_STEPS:08d}"
    assert len(steps) >= 2  # the save at the signal and the last one
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    for name in ("config.json", "model.safetensors", "mmpt.json", "tokenizer.json"):
        assert (out / "final" / name).is_file(), name


# ---------------------------------------------------------------------------- eval.sh


def _pass_at_k(passed: list[bool], k: int) -> float:
    """Brute force: the share of k-subsets of the samples that hold a passing one."""
    subsets = list(itertools.combinations(passed, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_eval_generates_executes_over_mpi_and_writes_passk(preempted_run, workdir, job_env):
    out = workdir / "eval"
    env = {**job_env, "K": "1,2"}
    proc = _sbatch(
        [
            "--ntasks-per-node=2",
            "--job-name=eval",
            str(REPO / "slurm" / "eval.sh"),
            "--model",
            str(preempted_run["dir"] / "final"),
            "--benchmark",
            "humaneval",
            "--limit",
            "2",
            "--n",
            "2",
            "--temperature",
            "1.0",
            "--max-new-tokens",
            "24",
            "--out",
            str(out),
        ],
        workdir,
        env,
    )
    log = _log(workdir, "eval")
    assert proc.returncode == 0, proc.stderr + log[-3000:]
    assert "generate on 1 node(s) x 2 rank(s)" in log and "execute on 2 task(s)" in log
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    keys = sorted((r["task_id"], r["completion_id"]) for r in results)
    # both MPI ranks' results reached rank 0: one result per sample, none twice
    assert keys == sorted((s["task_id"], s["completion_id"]) for s in samples)
    assert keys == [(f"HumanEval/{t}", c) for t in range(2) for c in range(2)]
    by_task = defaultdict(list)
    for r in results:
        by_task[r["task_id"]].append(r["passed"])
    passk = json.loads((out / "passk.json").read_text())
    assert passk["n_tasks"] == 2 and passk["n_samples"] == 4
    for k in (1, 2):
        expected = sum(_pass_at_k(p, k) for p in by_task.values()) / len(by_task)
        assert passk[f"pass@{k}"] == pytest.approx(expected)


def test_eval_as_written_fits_a_small_node(cluster, job_env, tmp_path):
    """`sbatch slurm/eval.sh ...` with its header alone: Slurm accepts it on a node of few CPUs (here
    os.cpu_count()), and it runs as one task with a sandbox worker per CPU."""
    script = str(REPO / "slurm" / "eval.sh")
    args = [script, "--model", "m", "--benchmark", "mbpp", "--out", "o"]
    test = subprocess.run(["sbatch", "--test-only", *args], cwd=tmp_path, env=job_env, capture_output=True, text=True, timeout=60)
    assert test.returncode == 0 and "to start at" in test.stderr, (cluster.cpus, test.stderr)
    proc = _sbatch(args, tmp_path, {**job_env, "PYTHON": "false"})  # the interpreter fails at once: only the sizes run
    log = next(tmp_path.glob("slurm-mmpt-eval-*.out")).read_text()  # the log name the header and docs/slurm.md give
    assert proc.returncode != 0 and f"execute on 1 task(s) x {cluster.cpus} sandbox worker(s)" in log, log


def test_eval_rejects_a_missing_out(job_env, tmp_path):
    script = str(REPO / "slurm" / "eval.sh")
    proc = _sbatch(["--ntasks-per-node=1", "--job-name=noout", script, "--model", "m", "--benchmark", "mbpp"], tmp_path, job_env)
    assert proc.returncode == 2
    assert "usage: sbatch slurm/eval.sh" in _log(tmp_path, "noout")


# ---------------------------------------------------------------------------- watch.sh


def test_watch_scores_every_checkpoint_of_the_run_and_ends_with_it(preempted_run, workdir, job_env):
    """slurm/watch.sh as its own job on the run pretrain.sh left (requeued once, finished): one
    scalar per checkpoint, then the job ends because the run has."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mmpt.eval.watch_records import read_scores
    from mmpt.train_checkpoints import list_complete

    run = preempted_run["dir"]
    args = ["--benchmark", "humaneval", "--greedy", "--limit", "1", "--max-new-tokens", "8", "--poll-s", "1"]
    proc = _sbatch([*CPU_JOB, "--job-name=watch", str(REPO / "slurm" / "watch.sh"), str(run), *args], workdir, job_env)
    log = _log(workdir, "watch")
    assert proc.returncode == 0, proc.stderr + log[-3000:]
    saved = [int(c.name.removeprefix("step_")) for c in list_complete(run)]
    assert len(saved) >= 2 and saved[-1] == MAX_STEPS
    assert [r["step"] for r in read_scores(run, "humaneval")] == saved
    events = EventAccumulator(str(run / "tensorboard" / "watch-humaneval"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/humaneval/pass@1")] == saved
    assert "0 GPU(s), 1 cpu(s)" in log and f"the run finished at step {MAX_STEPS}" in log


# ---------------------------------------------------------------------------- mmpt doctor


def test_doctor_reports_a_running_cluster(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    [result] = check_slurm(DoctorConfig())
    assert result.ok and "is UP" in result.detail and "pmi2 available" in result.detail, result


def test_doctor_fails_an_expected_but_unreachable_cluster(cluster, monkeypatch, tmp_path):
    conf = tmp_path / "slurm.conf"  # the same cluster, but a port nobody listens on
    conf.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=1", cluster.conf.read_text()))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    [result] = check_slurm(DoctorConfig())
    assert not result.ok and "unreachable" in result.detail, result


def test_doctor_reports_absent_slurm_without_failing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    [result] = check_slurm(DoctorConfig())
    assert result.ok and "not installed" in result.detail


def test_doctor_mpi_finds_the_library():
    [result] = check_mpi(DoctorConfig())
    assert result.ok and "MPICH" in result.detail, result


def test_doctor_mpi_fails_when_mpi4py_cannot_load(monkeypatch, tmp_path):
    (tmp_path / "mpi4py").mkdir()
    (tmp_path / "mpi4py" / "__init__.py").write_text("raise ImportError('no MPI library found')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the probe child imports this broken mpi4py
    [result] = check_mpi(DoctorConfig())
    assert not result.ok and "no MPI library found" in result.detail, result


def test_doctor_sandbox_judges_programs():
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap not installed")
    [result] = check_sandbox(DoctorConfig())
    assert result.ok and "passing program passed, failing program failed" in result.detail, result
