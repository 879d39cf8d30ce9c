"""What each stage of a demo run and each command of a launch took: wall and CPU seconds, in run order.

A stage's marker OUT/stages/STAGE.json holds its wall and CPU seconds (`mmpt.demo.stages`); the
ranks of a launch append one record per command to OUT/stages/STAGE.parts.rank{r}.jsonl
(`mmpt.demo.batch`). The demo prints them as a table at its end and the report shows the same table.
"""

from __future__ import annotations

import resource
from pathlib import Path

from mmpt.eval.samples import rank_files
from mmpt.jsonl import read_json, read_jsonl

PART = "· "  # a command of a launch stage, listed under it


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (RUSAGE_SELF) or of its waited-for children."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def finished(done: Path) -> dict[str, dict[str, float]]:
    """{command: {"seconds": wall (its slowest rank), "cpu_seconds": summed over ranks}} of the commands
    rank 0 finished, in the order it finished them, from the DONE.rank{r}.jsonl files."""
    records = [r for path in rank_files(done) for _, r in read_jsonl(path, skip_torn_tail=True)]
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    order = [r["name"] for r in records if r["rank"] == 0]
    return {
        n: {"seconds": max(r["seconds"] for r in by_name[n]), "cpu_seconds": sum(r["cpu_seconds"] for r in by_name[n])}
        for n in order
    }


def read_times(out: Path) -> list[tuple[str, float, float | None]]:
    """(stage, wall seconds, CPU seconds or None) of each finished stage of a demo run, in run order;
    after a launch stage, each of its commands as ("· command", ...) (CPU: its ranks' own)."""
    markers = [(read_json(path, dict), path.stem) for path in (out / "stages").glob("*.json")]
    rows: list[tuple[str, float, float | None]] = []
    for marker, name in sorted(markers, key=lambda mn: mn[0].get("finished", 0)):
        rows.append((name, marker["seconds"], marker.get("cpu_seconds")))
        rows += [(PART + c, t["seconds"], t["cpu_seconds"]) for c, t in finished(out / "stages" / f"{name}.parts").items()]
    return rows


def clock(seconds: float) -> str:
    """A duration as the demo shows it, on its console and in its report: "6 min 05 s"."""
    return f"{int(seconds) // 60} min {int(seconds) % 60:02d} s"
