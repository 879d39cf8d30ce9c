"""Which launcher started us, this process's rank, and a process group that cannot hang forever.

Launchers: `deepspeed` and `torchrun` set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*; `srun` sets only
SLURM_* (the rendezvous host is the first node of the step); `mpiexec` sets its process manager's
variables (Open MPI, MPICH/Hydra and PMI-2, PMIx); a plain `python` is one process.
A dead peer must not hang the survivors: a watchdog (faulthandler's own thread, which runs even
while the main thread is stuck in a collective) dumps every thread's stack and exits non-zero when
a rank makes no progress for `hang_timeout_s`. The process group has its own, longer timeout
(`process_group_timeout_s`): a collective may legitimately wait minutes (a checkpoint barrier on a
slow shared filesystem, a late rendezvous) while the watchdog is told to allow it.
"""

from __future__ import annotations

import faulthandler
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

# (rank, size, local rank) variables of the process managers `mpiexec` (and `srun --mpi=...`) use
MPI_VARS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),  # MPICH/Hydra, PMI-2
    ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),  # PMIx
)


@dataclass(frozen=True)
class DistEnv:
    launcher: str  # deepspeed | torchrun | slurm | mpiexec | single
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_host(nodelist: str) -> str:
    """First host of a Slurm node list: `scontrol` when present, else the simple `a[1-3,5],b` forms."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    head = re.split(r",(?![^\[]*\])", nodelist)[0]  # first entry, commas inside [] kept
    m = re.fullmatch(r"(.*?)\[([^\]]+)\](.*)", head)
    if not m:
        return head
    first = m.group(2).split(",")[0].split("-")[0]  # keeps zero padding: node[007-009] -> node007
    return f"{m.group(1)}{first}{m.group(3)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detect(environ: dict[str, str] | None = None) -> DistEnv:
    """This process's place in the job, from the launcher's environment variables."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "deepspeed"
        return DistEnv(
            launcher,
            int(env["RANK"]),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_RANK", "0")),
            env.get("MASTER_ADDR", "127.0.0.1"),
            int(env.get("MASTER_PORT", "29500")),
        )
    if "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        # inside an `srun` step; the port is derived from the job id so that every task agrees on it
        world = int(env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"])
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        port = int(env.get("MASTER_PORT") or 20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        return DistEnv(
            "slurm",
            int(env["SLURM_PROCID"]),
            world,
            int(env.get("SLURM_LOCALID", "0")),
            env.get("MASTER_ADDR") or _first_host(nodes),
            port,
        )
    for rank, size, local in MPI_VARS:
        if rank in env and size in env:
            # mpiexec names no rendezvous: MASTER_ADDR/MASTER_PORT must be set for more than one host
            return DistEnv(
                "mpiexec",
                int(env[rank]),
                int(env[size]),
                int(env.get(local, "0")),
                env.get("MASTER_ADDR", "127.0.0.1"),
                int(env.get("MASTER_PORT", "29500")),
            )
    return DistEnv("single", 0, 1, 0, "127.0.0.1", free_port())


def mpi_launched(environ: dict[str, str] | None = None) -> bool:
    """Whether an MPI process manager started us (mpiexec, `srun --mpi=pmi2`): mpi4py can join its world."""
    env = os.environ if environ is None else environ
    return any(rank in env or size in env for rank, size, _ in MPI_VARS)  # srun's PMIx sets no PMIX_SIZE


def device_index(local_rank: int, visible: int) -> int:
    """The accelerator index of this rank among the `visible` devices.

    One device per rank on a node: device `local_rank`. Where the site binds one GPU per task
    (`--gpus-per-task=1`, `--gpu-bind=single:1`, cgroup device constraints) each rank sees only
    its own GPU, as index 0, whatever its local rank.
    """
    if visible == 1:
        return 0
    if 0 <= local_rank < visible:
        return local_rank
    raise RuntimeError(f"local rank {local_rank} but only {visible} visible device(s): start one rank per device")


def rank_device(dist: DistEnv):
    """The torch device an eval rank (generate, score, watch) runs its model on: GPU `local_rank` where
    there is a GPU, else the CPU."""
    import torch

    return torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")


def set_compile_caches(environ: dict[str, str] | None = None) -> str:
    """Point Triton's and Inductor's caches (flex_attention is compiled at run time) at a folder of
    this job on the node's local disk, unless the user set them; returns the folder.

    Their defaults are ~/.triton/cache and /tmp/torchinductor_USER: a home directory on a shared
    filesystem is slow and shared by every node and job at once, and a job's first compile should
    not depend on what an earlier job (another torch, another Triton) left there. The job is the
    Slurm job, else the torchrun run, else the launcher process that the node's ranks share.
    """
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID") or env.get("TORCHELASTIC_RUN_ID") or f"pid{os.getppid()}"
    folder = os.path.join(env.get("TMPDIR") or "/tmp", f"mmpt-compile-{os.getuid()}-{job}")
    env.setdefault("TRITON_CACHE_DIR", os.path.join(folder, "triton"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(folder, "inductor"))
    return folder


def to_device(t, device):
    """Tensor `t` on `device` without the host waiting for the copy: from page-locked memory on a GPU
    (a pinned tensor is pinned once), `non_blocking` everywhere."""
    return (t.pin_memory() if device.type == "cuda" else t).to(device, non_blocking=True)


def init(dist: DistEnv, timeout_s: float, backend: str | None = None) -> None:
    """Join the process group (deepspeed.comm over torch.distributed, env:// rendezvous).

    `timeout_s` bounds every collective as well as the rendezvous (`process_group_timeout_s`, not
    the hang watchdog's); on a CPU accelerator the backend is gloo, else the accelerator's own
    (nccl on CUDA), on the device `device_index` picks.
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    os.environ.update(
        RANK=str(dist.rank),
        WORLD_SIZE=str(dist.world_size),
        LOCAL_RANK=str(dist.local_rank),
        MASTER_ADDR=dist.master_addr,
        MASTER_PORT=str(dist.master_port),
    )
    accelerator = get_accelerator()
    if backend is None:
        backend = "gloo" if accelerator.device_name() == "cpu" else accelerator.communication_backend_name()
    if accelerator.device_name() != "cpu":
        accelerator.set_device(device_index(dist.local_rank, accelerator.device_count()))
    if backend == "gloo":
        # DeepSpeed's TorchBackend JIT-compiles its shared-memory all-reduce op (a C++ build, about a
        # minute per install) whenever DeepSpeed counts that op as compatible, yet only its
        # inference_all_reduce uses it, never training: gloo serves alone. DeepSpeed's own switch:
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(
        dist_backend=backend, auto_mpi_discovery=False, timeout=timedelta(seconds=timeout_s), verbose=False
    )


class Watchdog:
    """Exit the process (status 1, stacks on stderr) when `beat` is not called for `timeout_s`.

    A survivor of a dead peer can sit inside a collective that never returns; Python signal
    handlers and threads holding the GIL cannot help there, faulthandler's C thread can.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def beat(self, allow_s: float | None = None) -> None:
        """Restart the countdown; `allow_s` grants a longer one (a checkpoint save, the first step)."""
        faulthandler.dump_traceback_later(allow_s or self.timeout_s, exit=True, file=sys.stderr)

    def beat_slow(self) -> None:
        """Restart the countdown at ten times the timeout: for what may legitimately take longer than
        a step (the first step warms up kernels and buckets, a checkpoint save, an evaluation, the end)."""
        self.beat(allow_s=10 * self.timeout_s)

    def stop(self) -> None:
        faulthandler.cancel_dump_traceback_later()


def shutdown(watchdog: Watchdog | None = None) -> None:
    """Leave the process group once every rank got here (under `watchdog`: a peer that died at the
    end makes this rank exit non-zero after its timeout, not the process group's 30 min).

    Exiting with the group still up lets the interpreter tear down gloo's (and DeepSpeed's shared
    memory) threads in any order, which now and then aborts a finished rank ("terminate called
    without an active exception", exit status 250 from the launcher).
    """
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        if watchdog is not None:
            watchdog.beat()
        torch_dist.barrier()
        torch_dist.destroy_process_group()
    if watchdog is not None:
        watchdog.stop()
