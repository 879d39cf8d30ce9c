"""JSON and JSON-lines files: reading and field checks with errors naming file and line; torn last lines.

Every JSON(-lines) file mmpt reads goes through here, so that a bad one is always reported the same
way: `path:line: invalid JSON (why)`. Files appended one record per line (samples, results) can end
in a torn line when a process dies mid-write; readers may skip it and appenders cut it first.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


class JsonlError(ValueError):
    """A JSON or JSON-lines file that cannot be used; the message names the file (and line)."""


def read_json(path: str | Path, kind: type | None = None) -> object:
    """The value of a JSON file; with `kind` (dict, list) it must be of that type."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise JsonlError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if kind is not None and not isinstance(value, kind):
        raise JsonlError(f"{path}: expected a JSON {_name(kind)}, got {_name(type(value))}")
    return value


def read_jsonl(path: str | Path, *, skip_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSONL file (gzip when it ends in .gz).

    A line that is not a JSON object is an error naming the file and line, except, with
    `skip_torn_tail`, an unparsable last line with no newline after it (a writer died mid-line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if skip_torn_tail and not line.endswith("\n"):
                    return
                raise JsonlError(f"{path}:{number}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise JsonlError(f"{path}:{number}: expected a JSON object, got {_name(type(obj))}")
            yield number, obj


def cut_torn_tail(path: str | Path) -> None:
    """Truncate `path` after its last newline, so that the next appended record starts a line."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def write_json(path: str | Path, value: object, *, indent: int | None = 1, sort_keys: bool = False) -> Path:
    """Write `value` as JSON to `path` atomically: a temporary file beside it, fsynced, then renamed
    over it, so a reader (or a rerun after a crash) sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write `records` as JSON lines to `path` atomically (a temporary file, fsynced, renamed over
    it); returns how many were written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


class JsonlAppender:
    """Appends one JSON line per record, flushed and (when `durable`) fsynced before the next, so a
    crash loses at most the line being written; a torn last line left by an earlier crash is cut first.
    `durable=False` is for files rewritten from scratch on failure (extract) or logs (metrics)."""

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cut_torn_tail(path)
        self._f = path.open("a", encoding="utf-8")
        self._durable = durable

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        if self._durable:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def require(obj: object, fields: dict[str, type], where: str) -> None:
    """Raise naming `where` (file:line) unless `obj` is an object with each field of the given type."""
    if not isinstance(obj, dict):
        raise JsonlError(f"{where}: expected a JSON object, got {_name(type(obj))}")
    for name, kind in fields.items():
        if name not in obj:
            raise JsonlError(f"{where}: missing field {name!r}")
        if not isinstance(obj[name], kind):
            raise JsonlError(f"{where}: field {name!r} must be {_a(kind)}, got {_name(type(obj[name]))}")


_NAMES = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}


def _name(kind: type) -> str:
    return _NAMES.get(kind, kind.__name__)


def _a(kind: type) -> str:
    name = _name(kind)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
