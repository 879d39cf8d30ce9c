"""Tests of mmpt/data/pairs.py: the three local formats, malformed input, signature splitting."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmpt.data.pairs import PairsError, check_pairs_file, load_pairs, split_pair_code
from mmpt.hub import HubMiss


def _fixture_records(assets: Path) -> list[dict]:
    return [json.loads(line) for line in (assets / "pairs.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet"])
def test_local_formats_load_the_same_pairs(assets: Path, tmp_path: Path, kind: str):
    records = _fixture_records(assets)
    path = tmp_path / f"pairs.{kind}"
    if kind == "jsonl":
        path.write_text((assets / "pairs.jsonl").read_text())
    elif kind == "json":
        path.write_text(json.dumps(records, indent=1))
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    dataset = load_pairs(path, cache_dir=str(tmp_path / "cache"))
    assert dataset.column_names == ["docstring", "code", "signature", "body", "converted"]
    assert dataset["docstring"] == [r["docstring"] for r in records]
    assert dataset["code"] == [r["code"] for r in records]
    assert dataset["signature"] == [r["signature"] for r in records]


def test_signature_and_body_derived_when_absent(assets: Path, tmp_path: Path):
    records = _fixture_records(assets)
    path = tmp_path / "hub_like.jsonl"
    rows = [{"docstring": r["docstring"], "code": r["code"]} for r in records] + [
        {"docstring": "not code", "code": "this is not python ("}
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_pairs(path, cache_dir=str(tmp_path / "cache"))
    # the reference is what extraction cut from the whole file's AST
    assert dataset["signature"][:-1] == [r["signature"] for r in records]
    assert dataset["body"][:-1] == [r["body"] for r in records]
    assert dataset["signature"][-1] == "" and dataset["body"][-1] == ""


def test_split_code_removes_a_leading_docstring():
    signature = "import os\n\n@cache\ndef f(\n    a: dict[str, int],\n) -> int:"
    body = "    x = len(a)\n    return x\n"
    code = signature + '\n    """Doc: with a colon.\n\n    More.\n    """\n\n' + body
    assert split_pair_code(code) == (signature, body)
    assert split_pair_code(signature + "\n" + body) == (signature, body)
    with pytest.raises(ValueError, match="no top-level function"):
        split_pair_code("x = 1\n")


def test_bad_json_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"docstring": "d", "code": "c"})
    path.write_text(f"{good}\n\n{good}\n{{'docstring': oops}}\n{good}\n")
    with pytest.raises(PairsError, match=rf"^{path}:4: invalid JSON"):
        check_pairs_file(path)
    with pytest.raises(PairsError, match=rf"^{path}:4: invalid JSON"):
        load_pairs(path)


def test_missing_or_wrong_fields_name_file_and_line(tmp_path: Path):
    path = tmp_path / "missing.jsonl"
    path.write_text(json.dumps({"docstring": "d", "code": "c"}) + "\n" + json.dumps({"code": "c"}) + "\n")
    with pytest.raises(PairsError, match=rf"^{path}:2: missing field 'docstring'"):
        load_pairs(path)
    path.write_text(json.dumps({"docstring": None, "code": "c"}) + "\n")
    with pytest.raises(PairsError, match=rf"^{path}:1: field 'docstring' must be a string"):
        load_pairs(path)
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"docstring": "d", "code": "c"}, {"docstring": "d"}]))
    with pytest.raises(PairsError, match=rf"^{array}: record 1: missing field 'code'"):
        load_pairs(array)
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"docstring": "d",\n  "code": }\n]')
    with pytest.raises(PairsError, match=rf"^{broken}:3: invalid JSON"):
        load_pairs(broken)


def test_parquet_errors_name_the_column(tmp_path: Path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"docstring": ["d"], "text": ["c"]}), path)
    with pytest.raises(PairsError, match=rf"^{path}: missing column 'code'"):
        load_pairs(path)
    pq.write_table(pa.table({"docstring": ["d", None], "code": ["c", "c"]}), path)
    with pytest.raises(PairsError, match=rf"^{path}: row 1: field 'docstring' is null"):
        load_pairs(path)


def test_unsupported_file_and_saved_dataset(tmp_path: Path, assets: Path):
    path = tmp_path / "pairs.csv"
    path.write_text("docstring,code\n")
    with pytest.raises(PairsError, match="unsupported pairs file"):
        load_pairs(path)
    saved = tmp_path / "saved"
    load_pairs(assets / "pairs.jsonl", cache_dir=str(tmp_path / "cache")).save_to_disk(str(saved))
    assert len(load_pairs(saved)) == len(_fixture_records(assets))


def test_hub_dataset_branch(monkeypatch, assets: Path):
    import datasets

    calls = []

    def fake_load_dataset(name, split, cache_dir):
        calls.append((name, split))
        if name == "offline/pairs":
            raise ConnectionError("Couldn't reach 'offline/pairs' on the Hub")
        records = _fixture_records(assets)
        columns = {"docstring": [r["docstring"] for r in records], "code": [r["code"] for r in records]}
        if name == "owner/no-docstring":
            columns["text"] = columns.pop("docstring")
        return datasets.Dataset.from_dict(columns)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = load_pairs("owner/text2code")
    assert calls == [("owner/text2code", "train")]
    assert dataset["signature"] == [r["signature"] for r in _fixture_records(assets)]
    missing = r"hub dataset 'owner/no-docstring' \(train\): missing columns \['docstring'\]"
    with pytest.raises(PairsError, match=missing):
        load_pairs("owner/no-docstring")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    unreachable = (
        r"^--pairs: 'offline/pairs' is not a local file or folder, .*\(ConnectionError: Couldn't reach .*--repo-type dataset"
    )
    with pytest.raises(HubMiss, match=unreachable):
        load_pairs("offline/pairs")


def test_a_downloaded_hub_dataset_folder(tmp_path: Path, assets: Path):
    """What `hf download NAME --repo-type dataset --local-dir DIR` leaves: data files in a folder, no save_to_disk."""
    records = _fixture_records(assets)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    (tmp_path / "repo" / "README.md").write_text("a dataset card\n")
    for i, part in enumerate((records[:5], records[5:])):
        table = pa.table({"docstring": [r["docstring"] for r in part], "code": [r["code"] for r in part]})
        pq.write_table(table, tmp_path / "repo" / "data" / f"train-0000{i}-of-00002.parquet")
    pairs = load_pairs(tmp_path / "repo", cache_dir=str(tmp_path / "cache"))
    assert sorted(pairs["code"]) == sorted(r["code"] for r in records)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_bytes(b"\xff\xfe not text")
    with pytest.raises(PairsError, match=r"notes: a folder, but neither a saved dataset nor data files of one"):
        load_pairs(tmp_path / "notes", cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("empty.json", "[]")])
def test_an_empty_pairs_file_is_an_error_naming_it(tmp_path: Path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PairsError, match=rf"^{path}: no pairs"):
        check_pairs_file(path)
    with pytest.raises(PairsError, match=rf"^{path}: no pairs"):  # before the datasets loader's StopIteration
        load_pairs(path)


@pytest.mark.parametrize("command", ["prepare", "tokenizer"])
def test_cli_on_an_empty_pairs_file_says_so_in_one_line(tmp_path: Path, capsys, command: str):
    from mmpt.data import prepare, tokenizer

    path = tmp_path / "pairs.jsonl"
    path.write_text("")
    if command == "prepare":
        args = ["--tokenizer", str(Path(__file__).parents[1] / "assets" / "tokenizer"), "--max-seq-length", "64"]
        code = prepare.main(["--pairs", str(path), *args, "--out", str(tmp_path / "o")])
    else:
        code = tokenizer.main(["--pairs", str(path), "--vocab-size", "300", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{path}: no pairs" in err, err
