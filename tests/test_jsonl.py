"""mmpt/jsonl.py: JSON(-lines) reading with file:line errors, gzip, and torn last lines."""

from __future__ import annotations

import gzip

import pytest

from mmpt.jsonl import JsonlError, cut_torn_tail, read_json, read_jsonl, require


def test_read_jsonl_numbers_lines_and_skips_blank_ones(tmp_path):
    text = '{"a": 1}\n\n  \n{"a": 2}\n'
    (tmp_path / "x.jsonl").write_text(text)
    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as f:
        f.write(text)
    for name in ("x.jsonl", "x.jsonl.gz"):
        assert list(read_jsonl(tmp_path / name)) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": 1}\n{"a": \n{"a": 3}\n', r"x.jsonl:2: invalid JSON \(Expecting value\)"),
        ('{"a": 1}\n[1, 2]\n', r"x.jsonl:2: expected a JSON object, got array"),
        ('{"a": 1}\n{"a": ', r"x.jsonl:2: invalid JSON"),  # a torn tail is an error unless asked to skip it
    ],
)
def test_read_jsonl_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "x.jsonl").write_text(text)
    with pytest.raises(JsonlError, match=message):
        list(read_jsonl(tmp_path / "x.jsonl"))


def test_torn_tail_is_skipped_on_request_and_cut_before_appending(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert [obj for _, obj in read_jsonl(path, skip_torn_tail=True)] == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": \n{"a": 2}\n')  # a broken line followed by a newline is not torn: still an error
    with pytest.raises(JsonlError, match="x.jsonl:1"):
        list(read_jsonl(path, skip_torn_tail=True))
    path.write_text('{"a": 1}\n{"a": ')
    cut_torn_tail(path)
    assert path.read_text() == '{"a": 1}\n'
    cut_torn_tail(path)  # whole lines stay; a missing file is fine
    assert path.read_text() == '{"a": 1}\n'
    cut_torn_tail(tmp_path / "absent.jsonl")
    with pytest.raises(FileNotFoundError, match="absent.jsonl: no such file"):
        list(read_jsonl(tmp_path / "absent.jsonl"))


def test_read_json_checks_syntax_and_kind(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n  "a": [1, 2]\n}\n')
    assert read_json(path) == read_json(path, dict) == {"a": [1, 2]}
    with pytest.raises(JsonlError, match=r"c.json: expected a JSON array, got object"):
        read_json(path, list)
    path.write_text('{\n  "a": [1, 2\n}\n')
    with pytest.raises(JsonlError, match=r"c.json:3: invalid JSON"):
        read_json(path)


def test_require_names_where_and_field():
    fields = {"task_id": str, "passed": bool, "n": int}
    require({"task_id": "a", "passed": True, "n": 3, "extra": None}, fields, "f:1")  # extra keys are fine
    for obj, message in [
        ([1], r"^f:2: expected a JSON object, got array$"),
        ({"passed": True, "n": 1}, r"^f:2: missing field 'task_id'$"),
        ({"task_id": 5, "passed": True, "n": 1}, r"^f:2: field 'task_id' must be a string, got integer$"),
        ({"task_id": "a", "passed": True, "n": "1"}, r"^f:2: field 'n' must be an integer, got string$"),
    ]:
        with pytest.raises(JsonlError, match=message):
            require(obj, fields, "f:2")
