"""mmpt/demo/batch.py: several mmpt commands in one process, their times per rank, and a rerun that skips done ones."""

from __future__ import annotations

import json
from pathlib import Path

from mmpt.demo import batch, timing

SOURCE = 'def add(a, b):\n    """Add two numbers and return the sum."""\n    return a + b\n'


def plan(tmp_path: Path, commands: list[tuple[str, list[str]]]) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"done": str(tmp_path / "done"), "commands": [{"name": n, "argv": a} for n, a in commands]}))
    return path


def test_commands_run_in_turn_and_a_rerun_skips_the_finished(tmp_path: Path) -> None:
    (tmp_path / "src.py").write_text(SOURCE)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    extract = ["extract", str(tmp_path / "src.py"), "--workers", "1", "--out"]
    path = plan(tmp_path, [("first", [*extract, str(one)]), ("second", [*extract, str(two)])])
    assert batch.main([str(path), "--local_rank=0"]) == 0  # the deepspeed launcher's flag is dropped
    assert one.read_text().count("\n") == 1 and two.exists()
    done = timing.finished(tmp_path / "done")
    assert list(done) == ["first", "second"] and all(t["seconds"] >= 0 and t["cpu_seconds"] >= 0 for t in done.values())

    one.unlink()
    assert batch.main([str(path)]) == 0
    assert not one.exists()  # done earlier: not run again


def test_a_failing_command_stops_the_batch_unrecorded(tmp_path: Path, capsys) -> None:
    path = plan(tmp_path, [("bad", ["extract", str(tmp_path / "missing.py"), "--out", str(tmp_path / "x.jsonl")]),
                           ("after", ["extract", "--help"])])  # fmt: skip
    assert batch.main([str(path)]) == 2
    assert "bad (`mmpt extract" in capsys.readouterr().err
    assert timing.finished(tmp_path / "done") == {}


def test_finished_takes_the_slowest_rank_and_sums_cpu(tmp_path: Path) -> None:
    rows = {0: [("a", 10.0, 8.0), ("b", 5.0, 4.0)], 1: [("a", 9.0, 7.0), ("b", 6.0, 5.0), ("c", 1.0, 1.0)]}
    for rank, records in rows.items():
        (tmp_path / f"done.rank{rank}.jsonl").write_text(
            "".join(json.dumps({"name": n, "rank": rank, "seconds": s, "cpu_seconds": c}) + "\n" for n, s, c in records)
        )
    # c: rank 0 has not finished it, so it is not done
    assert timing.finished(tmp_path / "done") == {
        "a": {"seconds": 10.0, "cpu_seconds": 15.0},
        "b": {"seconds": 6.0, "cpu_seconds": 9.0},
    }
