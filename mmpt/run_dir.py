"""A run's OUTPUT_DIR: one directory every rank sees, held by one run at a time, and how its last run ended.

OUTPUT_DIR must be one directory that every rank sees (`require_shared`): rank 0 writes the
checkpoints' markers and the export files there, every rank its shards, and every rank reads them
all back on resume (`mmpt.train_checkpoints`).
OUTPUT_DIR/run_state.json says how the last run ended: {"state": "stopped", "step": 40} after a
save request (a signal), {"state": "finished", ...} at the end; `slurm/pretrain.sh` requeues a
stopped run (`python -m mmpt.run_dir run-state --config X [--field value]...`) and, a bounded
number of times, a run that failed with a node of its job down, which it counts there
(`"node_failure_requeues": n`, kept across the runs' own writes; `... node-failure-requeue`).
OUTPUT_DIR/run.lock is held (flock) by rank 0 of the run that uses OUTPUT_DIR and names it: a second
run there is refused while the first lives (`lock_output_dir`); the kernel drops the lock of a
process that died, so a stale file blocks nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

from mmpt.config import ConfigError, config_from_argv
from mmpt.jsonl import read_json, write_json

RUN_STATE = "run_state.json"
LOCK = "run.lock"
NODE_FAILURES = "node_failure_requeues"  # run_state.json's count of the script's node-failure requeues


def require_shared(output_dir: str | Path, timeout_s: float = 10.0) -> None:
    """Refuse an `output_dir` that is not one directory for every rank (a node-local path).

    Collective: rank 0 writes a probe file of a fresh name, every rank looks for it (for up to
    `timeout_s`: a shared filesystem's attribute cache may be late), and every rank raises the same
    ConfigError if any of them does not see it. Checkpoints need it: rank 0 writes the marker and
    the export files, every rank its shards, and every rank reads them all back on resume.
    """
    import torch.distributed as torch_dist

    out = Path(output_dir)
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or torch_dist.get_world_size() == 1:
        out.mkdir(parents=True, exist_ok=True)
        return
    rank = torch_dist.get_rank()
    name = [f".shared-probe-{uuid.uuid4().hex}" if rank == 0 else None]
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / name[0]).write_text(socket.gethostname())
    torch_dist.broadcast_object_list(name, src=0)
    probe = out / name[0]
    deadline = time.monotonic() + timeout_s
    while not probe.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(seen, probe.is_file())  # objects: on the current device under NCCL
    if rank == 0:
        probe.unlink()
    ranks = [r for r, ok in enumerate(seen) if not ok]
    if ranks:
        raise ConfigError(
            f"config field 'output_dir': {str(out)!r} is not shared by every rank (rank(s) {ranks} do not see "
            f"the files rank 0 writes there, e.g. a node-local disk); use a directory on a filesystem every node mounts"
        )


def write_run_state(output_dir: str | Path, state: str, **info) -> None:
    """Record how the run ended (rank 0): "stopped" (saved on a request, to be resumed) or "finished"
    (also "running" at the start); the Slurm script's node-failure count is kept."""
    kept = {k: v for k, v in read_run_state(output_dir).items() if k == NODE_FAILURES}
    write_json(Path(output_dir) / RUN_STATE, {"state": state, **info, **kept})


def read_run_state(output_dir: str | Path) -> dict:
    """How the last run in `output_dir` ended: {"state": "stopped" | "finished" | "running", ...};
    {"state": "none"} before any."""
    path = Path(output_dir) / RUN_STATE
    return read_json(path, dict) if path.is_file() else {"state": "none"}


def count_node_failure(output_dir: str | Path) -> int:
    """Add one to run_state.json's node-failure requeues; returns the new count."""
    state = read_run_state(output_dir)
    state[NODE_FAILURES] = int(state.get(NODE_FAILURES, 0)) + 1
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(output_dir) / RUN_STATE, state)
    return state[NODE_FAILURES]


class OutputDirLock:
    """Rank 0's hold on OUTPUT_DIR/run.lock (an open file with an exclusive flock); `release` ends it."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _holder() -> dict:
    """Who holds the lock, as the refusal names it: host, pid, Slurm job (if any), since when."""
    who = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if os.environ.get("SLURM_JOB_ID"):
        who["slurm_job"] = os.environ["SLURM_JOB_ID"]
    return who


def _take_lock(output_dir: Path) -> tuple[int | None, str | None]:
    """(fd of the held lock, None) or (None, why it is refused); (None, None) where the filesystem
    has no flock (a warning: the run goes on unguarded)."""
    path = output_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None, (
                f"config field 'output_dir': {str(output_dir)!r} is in use by a live run ({path}: {text or 'holder unknown'}); "
                f"wait for it to end or stop it, or use another output_dir"
            )
        print(
            f"mmpt train: warning: {path}: no file locking on this filesystem ({e}); two runs could share output_dir",
            file=sys.stderr,
        )
        return None, None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
    return fd, None


def lock_output_dir(output_dir: str | Path) -> OutputDirLock:
    """Hold `output_dir` for this run, or raise the same ConfigError on every rank (collective) when a
    live run holds it. Only rank 0 locks; the lock goes with its process, however that ends."""
    import torch.distributed as torch_dist

    out = Path(output_dir)
    distributed = torch_dist.is_available() and torch_dist.is_initialized()
    fd, refused = (None, None)
    if not distributed or torch_dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        fd, refused = _take_lock(out)
    if distributed:
        said = [refused]
        torch_dist.broadcast_object_list(said, src=0)
        refused = said[0]
    if refused:
        raise ConfigError(refused)
    return OutputDirLock(fd)


def main(argv: list[str] | None = None) -> int:
    """`python -m mmpt.run_dir run-state|node-failure-requeue --config X [--field value]...`:
    print the run's state, or count one more node-failure requeue and print the count."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run-state", "node-failure-requeue"):
        print("usage: python -m mmpt.run_dir run-state|node-failure-requeue --config X [--field value]...", file=sys.stderr)
        return 2
    try:
        config = config_from_argv(argv[1:])
    except (ConfigError, FileNotFoundError) as e:
        print(f"mmpt run_dir: {e}", file=sys.stderr)
        return 2
    if argv[0] == "run-state":
        print(read_run_state(config.output_dir)["state"])
    else:
        print(count_node_failure(config.output_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
