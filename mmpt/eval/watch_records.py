"""What `mmpt watch` keeps per run and name: OUTPUT_DIR/watch/NAME and its records, one per scored checkpoint."""

from __future__ import annotations

from pathlib import Path

from mmpt.jsonl import read_jsonl

RECORDS = "passk.jsonl"  # one record per scored checkpoint, in the watch folder


def watch_folder(run: Path, name: str) -> Path:
    """OUTPUT_DIR/watch/NAME: the settings, the records and each checkpoint's samples and results."""
    return Path(run) / "watch" / name


def read_scores(run: Path, name: str) -> list[dict]:
    """The records of the checkpoints of `run` scored under NAME, by step ([] when none)."""
    path = watch_folder(run, name) / RECORDS
    found = [r for _, r in read_jsonl(path, skip_torn_tail=True)] if path.exists() else []
    return sorted(found, key=lambda r: r["step"])
