"""A real one-node Slurm (munged, slurmctld, slurmd) on localhost for tests: `up`, `down`, `env`.

    eval "$(python tests/slurm_cluster.py up)"    # starts it (idempotent), exports SLURM_CONF
    sbatch --wait slurm/pretrain.sh ...
    python tests/slurm_cluster.py down

Everything it writes lives under one state directory (`$MMPT_SLURM_STATE`, default
`$TMPDIR/mmpt-slurm-<uid>`): its own slurm.conf, a freshly generated munge key and socket, spool,
state save and logs. Nothing under /etc is read or changed, so it can run next to a site install.
The node gets every core of the machine. Tested with Debian's Slurm 22.05 running as root
(proctrack/linuxproc and task/none: no cgroups needed). From Python, `cluster()` is a context
manager that a pytest fixture can wrap; it leaves a cluster it did not start running.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster lives and how it is reached."""

    state: Path  # every file of the cluster lives below this directory
    port: int = 6817  # slurmctld listens here, slurmd on port + 1
    cpus: int = os.cpu_count() or 1  # cores given to the one node
    node: str = socket.gethostname().split(".")[0]  # must be the name slurmd finds for itself
    partition: str = "debug"

    @property
    def conf(self) -> Path:
        return self.state / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        # munged wants a socket directory everyone can traverse, its key directory private.
        return self.state / "run" / "munge.socket.2"

    def pid_file(self, daemon: str) -> Path:
        return self.state / "run" / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.state / "log" / f"{daemon}.log"

    def env(self) -> dict[str, str]:
        """Environment for Slurm clients (and, through sbatch's export, for the jobs)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}


def default_config() -> ClusterConfig:
    state = os.environ.get("MMPT_SLURM_STATE") or str(Path(tempfile.gettempdir()) / f"mmpt-slurm-{os.getuid()}")
    port = int(os.environ.get("MMPT_SLURM_PORT", "6817"))
    return ClusterConfig(state=Path(state), port=port)


def missing_binaries() -> list[str]:
    """Slurm/munge programs this helper needs that are not installed."""
    found = {name: shutil.which(name) or _sbin(name) for name in DAEMONS + CLIENTS}
    return [name for name, path in found.items() if path is None]


def _sbin(name: str) -> str | None:
    # Daemons live in /usr/sbin, which is not on a non-root PATH.
    path = Path("/usr/sbin") / name
    return str(path) if path.exists() else None


def _binary(name: str) -> str:
    path = shutil.which(name) or _sbin(name)
    if path is None:
        raise RuntimeError(f"{name} not found; install slurmctld slurmd slurm-client munge")
    return path


def slurm_conf(config: ClusterConfig) -> str:
    """The slurm.conf of the one-node cluster."""
    s = config.state
    return f"""\
# Written by tests/slurm_cluster.py: a one-node test cluster; every path is under {s}.
ClusterName=mmpt
SlurmctldHost={config.node}(127.0.0.1)
SlurmctldPort={config.port}
SlurmdPort={config.port + 1}
SlurmUser={_user()}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={config.munge_socket},cred_expire=5
StateSaveLocation={s}/state
SlurmdSpoolDir={s}/spool
SlurmctldPidFile={config.pid_file("slurmctld")}
SlurmdPidFile={config.pid_file("slurmd")}
SlurmctldLogFile={config.log_file("slurmctld")}
SlurmdLogFile={config.log_file("slurmd")}
# No cgroups in containers: track processes by parentage, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Trust this file over what slurmd detects (a sandboxed kernel may report other topology).
SlurmdParameters=config_overrides
MpiDefault=none
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (defaults: 60 s, backfill 30 s) so that a requeued job restarts at once.
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# Refuse a job the node can never run at submission instead of leaving it pending forever.
EnforcePartLimits=ALL
JobRequeue=1
# SIGTERM -> SIGKILL after 30 s (Slurm's default): a save on a plain `scancel` must fit in it.
# `sbatch --wait` sleeps 2 s between polls and quadruples that (to 32 s) only while it is under
# MinJobAge / 2: 5 keeps it at 2 s.
KillWait=30
MinJobAge=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={config.node} NodeAddr=127.0.0.1 CPUs={config.cpus} State=UNKNOWN
PartitionName={config.partition} Nodes={config.node} Default=YES MaxTime=INFINITE State=UP
"""


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _run(cmd: list[str], config: ClusterConfig, check: bool = True) -> str:
    proc = subprocess.run(cmd, env=config.env(), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def is_up(config: ClusterConfig) -> bool:
    """All three daemons run and the node accepts jobs."""
    if not all(_alive(config.pid_file(d)) for d in DAEMONS):
        return False
    try:
        state = _run(["sinfo", "-h", "-n", config.node, "-o", "%T"], config, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # idle, mixed or allocated are all usable; down/drain (or no answer) are not.
    return state.strip().rstrip("*~#") in ("idle", "mixed", "allocated", "completing")


def _write_files(config: ClusterConfig) -> None:
    s = config.state
    for sub in ("etc", "munge", "run", "log", "state", "spool"):
        (s / sub).mkdir(parents=True, exist_ok=True)
    # munged refuses group/world-writable directories on the way to its key and socket.
    for sub, mode in (("", 0o755), ("run", 0o755), ("munge", 0o700)):
        os.chmod(s / sub, mode)
    key = s / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    config.conf.write_text(slurm_conf(config))


def _start_daemons(config: ClusterConfig) -> None:
    m = config.state / "munge"
    commands = {
        "munged": [
            _binary("munged"),
            f"--socket={config.munge_socket}",
            f"--key-file={m / 'munge.key'}",
            f"--pid-file={config.pid_file('munged')}",
            f"--log-file={config.log_file('munged')}",
            f"--seed-file={m / 'munged.seed'}",
        ],
        # -i: ignore unreadable state from an older run instead of refusing to start.
        "slurmctld": [_binary("slurmctld"), "-f", str(config.conf), "-i"],
        "slurmd": [_binary("slurmd"), "-f", str(config.conf), "-N", config.node],
    }
    for daemon, cmd in commands.items():
        if _alive(config.pid_file(daemon)):
            continue
        # Each daemon forks into the background and writes its pid file itself.
        proc = subprocess.run(cmd, env=config.env(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{daemon} failed to start (exit {proc.returncode}): {proc.stderr.strip()}\n{_tail(config.log_file(daemon))}"
            )
        if daemon == "munged":
            _wait(lambda: config.munge_socket.exists(), 15, f"munged socket {config.munge_socket}")


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return f"last lines of {path}:\n" + "\n".join(path.read_text().splitlines()[-lines:])


def _wait(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def up(config: ClusterConfig, timeout: float = 90) -> None:
    """Start the cluster unless it is already up; return once the node takes jobs."""
    if is_up(config):
        return
    missing = missing_binaries()
    if missing:
        raise RuntimeError(f"not installed: {', '.join(missing)}")
    _write_files(config)
    _start_daemons(config)
    try:
        _wait(lambda: is_up(config), timeout, f"node {config.node} to become idle")
    except RuntimeError as err:
        logs = "\n".join(_tail(config.log_file(d)) for d in DAEMONS)
        raise RuntimeError(f"{err}\n{logs}") from None


def down(config: ClusterConfig, timeout: float = 30) -> None:
    """Stop the daemons (slurmd first so that running steps are killed); keep the state dir."""
    for daemon in reversed(DAEMONS):
        pid_file = config.pid_file(daemon)
        if not _alive(pid_file):
            continue
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        try:
            _wait(lambda: not _alive(pid_file), timeout, f"{daemon} (pid {pid}) to exit")
        except RuntimeError:
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


@contextlib.contextmanager
def cluster(config: ClusterConfig | None = None) -> Iterator[ClusterConfig]:
    """Yield a running cluster; stop it afterwards only if this call started it."""
    config = config or default_config()
    started = not is_up(config)
    up(config)
    try:
        yield config
    finally:
        if started:
            down(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "env", "status"])
    args = parser.parse_args(argv)
    config = default_config()
    try:
        if args.action == "up":
            up(config)
        elif args.action == "down":
            down(config)
        elif args.action == "status":
            print("up" if is_up(config) else "down")
            return 0 if is_up(config) else 1
    except RuntimeError as err:
        print(f"slurm_cluster {args.action}: {err}", file=sys.stderr)
        return 1
    if args.action in ("up", "env"):
        # On stdout only what `eval "$(... up)"` should run.
        print(f"export SLURM_CONF={config.conf}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
