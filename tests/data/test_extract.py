"""Tests of mmpt/data/extract.py: pair records against inspect, skips, duplicates, parallelism."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import sys
from pathlib import Path

from mmpt.data.extract import extract_file, extract_pairs, main


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"fixture_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _dedent_like_first_line(source: str) -> str:
    # textwrap.dedent would stop at a multi-line string's unindented lines; strip the def's indent
    indent = source[: len(source) - len(source.lstrip())]
    return "".join(line.removeprefix(indent) for line in source.splitlines(True))


def _resolve(module, qualname: str):
    obj = module
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part)
    return obj.fget if isinstance(obj, property) else obj


def test_records_match_inspect(assets: Path, tmp_path: Path):
    out = tmp_path / "pairs.jsonl"
    extract_pairs([str(assets / "pysrc")], out, workers=1)
    records = _read(out)
    names = {r["qualname"] for r in records}
    # functions without a docstring, with only a docstring, or one-liners give no pair
    assert "no_docstring" not in names and "only_docstring" not in names and "one_liner" not in names
    assert {"Circle.area", "Circle.diameter", "Circle.Unit.scale", "outer.<locals>.square", "fetch_all"} <= names
    checked = 0
    for r in records:
        assert r["code"] == r["signature"] + "\n" + r["body"]
        assert not r["signature"].endswith("\n") and not r["signature"][0].isspace()
        ast.parse(r["code"])  # dedented methods parse on their own
        assert r["id"] == f"{r['path']}:{r['qualname']}:{r['line']}"
        if "<locals>" in r["qualname"]:
            continue
        obj = _resolve(_import(Path(r["path"])), r["qualname"])
        # independent reference: inspect's cleaned docstring and source (decorators included)
        assert r["docstring"] == inspect.getdoc(obj)
        reference = _dedent_like_first_line(inspect.getsource(obj)).rstrip("\n").split("\n")
        code = r["code"].rstrip("\n").split("\n")
        head = len(r["signature"].split("\n"))
        removed = len(reference) - len(code)
        assert reference[:head] + reference[head + removed :] == code
        # what was cut out is exactly the docstring statement (plus blank lines); its text is
        # re-indented by the dedent, which cleandoc undoes
        cut = ast.literal_eval("\n".join(reference[head : head + removed]).strip())
        assert inspect.cleandoc(cut) == inspect.getdoc(obj)
        assert inspect.getsourcelines(obj)[1] == r["line"]
        checked += 1
    assert checked >= 12


def test_duplicates_removed_and_parallel_equals_serial(assets: Path, tmp_path: Path):
    serial, parallel = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    summary = extract_pairs([str(assets / "pysrc")], serial, workers=1)
    extract_pairs([str(assets / "pysrc")], parallel, workers=2)
    assert serial.read_bytes() == parallel.read_bytes()
    records = _read(serial)
    assert summary.duplicates == 1 and summary.pairs == len(records)
    assert [r["name"] for r in records].count("distance") == 1
    assert len({(r["docstring"], r["code"]) for r in records}) == len(records)


def test_skips_are_counted_by_reason(tmp_path: Path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.py").write_text('def f(x):\n    """Add one."""\n    return x + 1\n')
    (src / "broken.py").write_text("def f(:\n    pass\n")
    (src / "latin.py").write_bytes(b'def g():\n    """Caf\xe9."""\n    return 1\n')  # not UTF-8, no cookie
    (src / "huge.py").write_text('def h():\n    """Big."""\n    return 2\n' + "#" * 5000 + "\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "cached.py").write_text('def c():\n    """Never walked."""\n    return 0\n')
    out = tmp_path / "pairs.jsonl"
    summary = extract_pairs([str(src)], out, workers=1, max_file_bytes=1000)
    assert summary.files == 4 and summary.pairs == 1
    assert dict(summary.skipped) == {"syntax_error": 1, "undecodable": 1, "too_large": 1}
    assert main([str(src), "--out", str(out), "--workers", "1", "--max-file-bytes", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "files 4, pairs 1" in printed and "syntax_error 1" in printed and "undecodable 1" in printed
    assert main([str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_encoding_cookie_and_crlf(tmp_path: Path):
    path = tmp_path / "m.py"
    path.write_bytes(b'# -*- coding: latin-1 -*-\r\ndef g():\r\n    """Caf\xe9."""\r\n    return 1\r\n')
    (pair,), skip = extract_file(str(path), "m.py")
    assert skip is None and pair["docstring"] == "Café." and pair["code"] == "def g():\n    return 1\n"


def test_stdlib_yields_at_least_5000_pairs(tmp_path: Path):
    out = tmp_path / "stdlib.jsonl"
    summary = extract_pairs(["stdlib"], out, workers=2)
    assert summary.pairs >= 5000
    first = json.loads(out.open().readline())
    assert first["path"].startswith("stdlib/")
