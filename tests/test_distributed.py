"""mmpt/distributed.py: launcher detection from environment variables, the hang watchdog, the shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from mmpt.distributed import _first_host, detect, mpi_launched


def test_deepspeed_and_torchrun_env():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "1234"}
    d = detect(env)
    assert (d.launcher, d.rank, d.world_size, d.local_rank, d.master_addr, d.master_port) == ("deepspeed", 3, 8, 1, "h0", 1234)
    assert detect(env | {"TORCHELASTIC_RUN_ID": "x"}).launcher == "torchrun"


def test_srun_env():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "16",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[007-009,012],cpu1",
        "SLURM_JOB_ID": "123456",
    }
    d = detect(env)
    assert (d.launcher, d.rank, d.world_size, d.local_rank) == ("slurm", 5, 8, 1)
    assert d.master_addr == "gpu007" and d.master_port == 20000 + 123456 % 20000
    assert detect(env | {"MASTER_ADDR": "x", "MASTER_PORT": "999"}).master_port == 999


def test_mpiexec_env():
    ompi = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "5", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    d = detect(ompi)
    assert (d.launcher, d.rank, d.world_size, d.local_rank, d.master_addr, d.master_port) == (
        "mpiexec",
        3,
        5,
        1,
        "127.0.0.1",
        29500,
    )
    hydra = detect({"PMI_RANK": "1", "PMI_SIZE": "2", "MASTER_ADDR": "h1", "MASTER_PORT": "777"})
    assert (hydra.launcher, hydra.rank, hydra.world_size, hydra.local_rank, hydra.master_addr, hydra.master_port) == (
        "mpiexec",
        1,
        2,
        0,
        "h1",
        777,
    )
    pmix = detect({"PMIX_RANK": "2", "PMIX_SIZE": "4", "PMIX_LOCAL_RANK": "2"})
    assert (pmix.launcher, pmix.rank, pmix.world_size, pmix.local_rank) == ("mpiexec", 2, 4, 2)
    # srun --mpi=pmi2 sets both: the Slurm step is the one that says where the rendezvous is
    srun = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7", "PMI_RANK": "1", "PMI_SIZE": "2"}
    assert detect(srun).launcher == "slurm"
    assert mpi_launched(srun) and mpi_launched({"PMIX_RANK": "0"}) and not mpi_launched({"RANK": "0", "WORLD_SIZE": "1"})


def test_single_process():
    d = detect({})
    assert (d.launcher, d.rank, d.world_size) == ("single", 0, 1) and d.master_port > 0


def test_first_host_forms():
    assert _first_host("node1") == "node1"
    assert _first_host("a[01-04]") == "a01"
    assert _first_host("a[3,5-6],b[1-2]") == "a3"


def test_a_cpu_process_group_builds_no_deepspeed_op(tmp_path):
    # DeepSpeed's TorchBackend would JIT-compile its shm all-reduce op into TORCH_EXTENSIONS_DIR (~1 min)
    code = (
        "import deepspeed.comm.comm as c; from mmpt.distributed import detect, init, shutdown; "
        "init(detect({}), timeout_s=60); print('shm op:', c.cdb.shm_comm_op); shutdown()"
    )
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "shm op: None" in proc.stdout and "built successfully" not in proc.stdout + proc.stderr
    assert not (tmp_path / "ext").exists()


def test_watchdog_exits_a_stuck_process():
    code = "from mmpt.distributed import Watchdog; import time; w = Watchdog(1.0); w.beat(); time.sleep(0.5); w.beat(); time.sleep(30)"
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and time.time() - t < 20
    assert "Timeout" in proc.stderr  # faulthandler dumped the stack before exiting


def test_device_index_where_one_gpu_is_bound_per_task():
    from mmpt.distributed import device_index

    assert [device_index(r, 4) for r in range(4)] == [0, 1, 2, 3]  # one rank per visible GPU
    assert device_index(3, 1) == 0  # --gpus-per-task=1: each rank sees only its own GPU, as cuda:0
    import pytest

    with pytest.raises(RuntimeError, match="local rank 5 but only 2 visible"):
        device_index(5, 2)


# Two gloo ranks; rank 1 never reaches the end (it died, or hangs in its own last step), rank 0
# leaves the group under a watchdog of 2 s.
SHUTDOWN = """
import sys, time, torch.distributed as dist
from mmpt.distributed import Watchdog, shutdown
rank, init = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
if rank == 1:
    time.sleep(60)
shutdown(Watchdog(2.0))
print("left")
"""


def test_the_shutdown_barrier_runs_under_the_watchdog(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHUTDOWN, str(r), init], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in range(2)
    ]
    try:
        t = time.time()
        out, err = procs[0].communicate(timeout=45)  # not the process group's 30 min
        assert procs[0].returncode != 0 and time.time() - t < 40, (procs[0].returncode, err[-2000:])
        assert "left" not in out and "Timeout" in err and "shutdown" in err  # the stack of the barrier
    finally:
        procs[1].kill()
        procs[1].wait()


def test_compile_caches_go_to_a_folder_of_the_job_unless_set():
    from mmpt.distributed import set_compile_caches

    env = {"SLURM_JOB_ID": "4242", "TMPDIR": "/scratch/local"}
    folder = set_compile_caches(env)
    assert folder.startswith("/scratch/local/mmpt-compile-") and folder.endswith("-4242")
    assert env["TRITON_CACHE_DIR"] == f"{folder}/triton" and env["TORCHINDUCTOR_CACHE_DIR"] == f"{folder}/inductor"
    mine = {"TORCHELASTIC_RUN_ID": "r1", "TRITON_CACHE_DIR": "/mine"}
    set_compile_caches(mine)
    assert mine["TRITON_CACHE_DIR"] == "/mine" and mine["TORCHINDUCTOR_CACHE_DIR"].endswith("-r1/inductor")  # a user's own stays
