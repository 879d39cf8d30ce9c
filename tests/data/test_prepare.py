"""Tests of mmpt/data/prepare.py: rows against encode_instance, meta, the folder contract, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest

from mmpt.data import prepare as prepare_module
from mmpt.data.instances import encode_instance, sentinel_ids
from mmpt.data.prepare import (
    PrepareConfig,
    corpus_chunks,
    encode_batch,
    held_out,
    load_prepared,
    load_validation,
    main,
    prepare,
)
from mmpt.data.separation import SeparationMap, build_separation_map
from mmpt.data.tokenizer import load_tokenizer
from mmpt.modality import CODE, NL


def _pairs(assets: Path) -> list[dict]:
    return [json.loads(line) for line in (assets / "pairs.jsonl").read_text().splitlines()]


def _split_row(row: dict) -> list[tuple[list[int], list[int]]]:
    """A row's instances, cut where position ids restart at 0."""
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
    return [
        (row["input_ids"][a:b], row["modality"][a:b])
        for a, b in itertools.pairwise(starts)
        if row["position_ids"][a:b] == list(range(b - a))
    ]


@pytest.mark.parametrize(
    "layout,separation,chunk_tokens",
    [("docstring-first", "partial", 1 << 24), ("signature-first", "full", 1 << 24), ("docstring-first", "none", 1 << 24),
     ("docstring-first", "partial", 300)],  # many chunks: every instance still lands in one row
)  # fmt: skip
def test_rows_hold_every_kept_instance_once(assets: Path, tmp_path: Path, tiny_tokenizer, layout, separation, chunk_tokens):
    max_len = 160
    config = PrepareConfig(
        pairs=str(assets / "pairs.jsonl"), tokenizer=str(assets / "tokenizer"), out=str(tmp_path / "out"),
        separation=separation, layout=layout, max_seq_length=max_len, cache_dir=str(tmp_path / "cache"),
        chunk_tokens=chunk_tokens,
    )  # fmt: skip
    meta = prepare(config)
    rows, loaded_meta = load_prepared(tmp_path / "out")
    assert loaded_meta == json.loads(json.dumps(meta))

    # independent reference: encode_instance on each pair, one at a time
    smap, split = build_separation_map(tiny_tokenizer, separation)
    expected = [
        encode_instance(tiny_tokenizer, smap, layout, p["docstring"], p["code"], p["signature"], p["body"])
        for p in _pairs(assets)
    ]
    kept = [e for e in expected if len(e[0]) <= max_len]
    assert 0 < len(kept) < len(expected)  # the fixture has instances on both sides of the limit
    got = [instance for row in rows for instance in _split_row(row)]
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(ids) for ids, _ in got)  # nothing between
    assert sorted(map(repr, got)) == sorted(map(repr, kept))
    assert all(len(r["input_ids"]) <= max_len for r in rows)
    assert all(set(r["modality"]) <= {NL, CODE} for r in rows)

    tokens = sum(len(ids) for ids, _ in kept)
    assert meta["pairs"] == len(expected) and meta["instances"] == len(kept)
    assert meta["dropped_too_long"] == len(expected) - len(kept)
    assert meta["rows"] == len(rows) and meta["tokens"] == tokens
    assert meta["fill_ratio"] == pytest.approx(tokens / (len(rows) * max_len))
    assert meta["separation"] == separation and meta["layout"] == layout and meta["max_seq_length"] == max_len
    assert meta["separated_tokens"] == len(smap.separated) and meta["split_tokens"] == split
    assert meta["id_map"] == smap.to_dict()
    assert SeparationMap.load(tmp_path / "out").to_dict() == smap.to_dict()
    saved = tmp_path / "out" / "tokenizer"
    assert meta["tokenizer"]["sha256"] == hashlib.sha256((saved / "tokenizer.json").read_bytes()).hexdigest()
    assert meta["tokenizer"]["vocab_size"] == len(load_tokenizer(str(saved))) == len(tiny_tokenizer)
    assert meta["sentinel_ids"]["python"] == sentinel_ids(tiny_tokenizer).python
    assert meta["created_by"].startswith("mmpt ")
    features = rows.features
    assert (features["input_ids"].feature.dtype, features["modality"].feature.dtype) == ("int32", "int8")
    assert features["position_ids"].feature.dtype in ("int16", "int32")
    # 64-bit offsets: a column may hold more than 2^31 tokens
    assert all(pa.types.is_large_list(field.type) for field in rows.data.schema)
    assert meta["validation_rows"] == 0 and not (tmp_path / "out" / "validation").exists()


@pytest.mark.parametrize("layout", ["docstring-first", "signature-first"])
def test_batched_encoding_equals_encode_instance(assets: Path, tiny_tokenizer, layout: str):
    pairs = _pairs(assets)
    smap, _ = build_separation_map(tiny_tokenizer, "partial")
    batch = {k: [p[k] for p in pairs] for k in ("docstring", "code", "signature", "body")}
    got = encode_batch(batch, tiny_tokenizer, smap, layout, sentinel_ids(tiny_tokenizer))
    for p, ids, modality in zip(pairs, got["input_ids"], got["modality"]):
        assert (ids, modality) == encode_instance(
            tiny_tokenizer, smap, layout, p["docstring"], p["code"], p["signature"], p["body"]
        )
    # separation actually happened on code tokens only
    flat_ids = np.concatenate(got["input_ids"])
    flat_mod = np.concatenate(got["modality"])
    assert (flat_ids[flat_mod == CODE] >= smap.base_vocab_size).any()
    assert (flat_ids[flat_mod == NL] < smap.base_vocab_size).all()


def test_parallel_tokenization_and_separate_tokens_file(assets: Path, tmp_path: Path, tiny_tokenizer):
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text("def\n return\n(\n\nnot-a-single-piece-token\n")
    common = {
        "pairs": str(assets / "pairs.jsonl"), "tokenizer": str(assets / "tokenizer"), "separation": "partial",
        "separate_tokens": str(tokens_file), "max_seq_length": 512,
    }  # fmt: skip
    # separate caches: a shared one would hand the parallel run the serial run's encoding
    serial = prepare(PrepareConfig(out=str(tmp_path / "a"), cache_dir=str(tmp_path / "c1"), **common))
    parallel = prepare(PrepareConfig(out=str(tmp_path / "b"), cache_dir=str(tmp_path / "c2"), num_proc=2, **common))
    assert serial["split_tokens"] == ["not-a-single-piece-token"] and serial["separated_tokens"] == 3
    assert serial["id_map"]["tokens"] == tiny_tokenizer.convert_ids_to_tokens(serial["id_map"]["separated"])
    assert load_prepared(tmp_path / "a")[0]["input_ids"] == load_prepared(tmp_path / "b")[0]["input_ids"]
    assert serial["fill_ratio"] == parallel["fill_ratio"] and serial["dropped_too_long"] == 0


def test_load_prepared_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no prepared data folder"):
        load_prepared(tmp_path / "none")
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="meta.json: missing"):
        load_prepared(tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="rows: missing"):
        load_prepared(tmp_path / "d")


def test_cli_reports_malformed_pairs_by_file_and_line(assets: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text((assets / "pairs.jsonl").read_text().splitlines()[0] + "\n" + '{"code": "x"}\n')
    args = ["--pairs", str(bad), "--tokenizer", str(assets / "tokenizer"), "--max-seq-length", "256"]
    assert main(args + ["--out", str(tmp_path / "o")]) == 2
    assert f"{bad}:2: missing field 'docstring'" in capsys.readouterr().err
    good = ["--pairs", str(assets / "pairs.jsonl"), "--tokenizer", str(assets / "tokenizer")]
    assert main(good + ["--max-seq-length", "256", "--separation", "partial", "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == load_prepared(tmp_path / "o")[1]["rows"]
    assert main(good + ["--max-seq-length", "256", "--separate-tokens", "f", "--out", str(tmp_path / "p")]) == 2
    assert "separate_tokens only applies" in capsys.readouterr().err


@pytest.mark.parametrize("block", [3, 1 << 16])
@pytest.mark.parametrize("budget", [1, 10, 25, 1000])
def test_corpus_chunks_cut_at_the_token_budget(monkeypatch, block: int, budget: int):
    monkeypatch.setattr(prepare_module, "LENGTHS_BLOCK", block)  # chunks that straddle blocks
    lengths = np.random.default_rng(budget).integers(1, 12, size=40)
    encoded = datasets.Dataset.from_dict({"input_ids": [[7] * n for n in lengths]})
    chunks = list(corpus_chunks(encoded, budget))
    assert [a for a, _ in chunks] == [0] + [b for _, b in chunks[:-1]] and chunks[-1][1] == len(lengths)
    for k, (a, b) in enumerate(chunks):
        assert b > a and lengths[a : b - 1].sum() < budget  # closed by the instance that reaches the budget
        if k < len(chunks) - 1:
            assert lengths[a:b].sum() >= budget


def test_prepare_holds_one_chunk_in_memory(monkeypatch, assets: Path, tmp_path: Path):
    """Flat memory: no array of tokens larger than one chunk is ever built."""
    seen = []
    flat = prepare_module._flat
    monkeypatch.setattr(prepare_module, "_flat", lambda column: seen.append(len(flat(column)[0])) or flat(column))
    meta = prepare(PrepareConfig(str(assets / "pairs.jsonl"), str(assets / "tokenizer"), str(tmp_path / "o"),
                                 max_seq_length=512, chunk_tokens=512, cache_dir=str(tmp_path / "c")))  # fmt: skip
    assert len(seen) > 4 and max(seen) < 2 * 512 <= meta["tokens"]  # a chunk ends at most one instance past 512


def test_held_out_is_a_seeded_share_independent_of_chunking():
    index = np.arange(200_000)
    a = held_out(index, 0.01, seed=0)
    assert a.mean() == pytest.approx(0.01, rel=0.05)
    assert np.array_equal(held_out(index[1234:5678], 0.01, seed=0), a[1234:5678])  # same choice by position
    assert not np.array_equal(held_out(index, 0.01, seed=1), a)
    assert not held_out(index, 0.0, seed=0).any()
    assert np.array_equal(held_out(index, 0.02, seed=0) | a, held_out(index, 0.02, seed=0))  # nested in F


@pytest.mark.parametrize("chunk_tokens", [1 << 24, 400])
def test_validation_split_holds_out_seeded_instances(assets: Path, tmp_path: Path, tiny_tokenizer, chunk_tokens: int):
    max_len, fraction, seed = 256, 0.3, 5
    config = PrepareConfig(
        pairs=str(assets / "pairs.jsonl"), tokenizer=str(assets / "tokenizer"), out=str(tmp_path / "out"),
        separation="partial", max_seq_length=max_len, cache_dir=str(tmp_path / "cache"),
        validation_fraction=fraction, seed=seed, chunk_tokens=chunk_tokens,
    )  # fmt: skip
    meta = prepare(config)
    rows, _ = load_prepared(tmp_path / "out")
    validation = load_validation(tmp_path / "out")
    assert validation.features == rows.features and validation.column_names == rows.column_names
    # reference: encode each pair alone; instance i is held out iff held_out(i)
    smap, _ = build_separation_map(tiny_tokenizer, "partial")
    expected = [encode_instance(tiny_tokenizer, smap, "docstring-first", p["docstring"], p["code"]) for p in _pairs(assets)]
    chosen = held_out(np.arange(len(expected)), fraction, seed)
    want_val = [e for e, h in zip(expected, chosen) if h and len(e[0]) <= max_len]
    want_train = [e for e, h in zip(expected, chosen) if not h and len(e[0]) <= max_len]
    assert 0 < len(want_val) < len(want_train)
    got_val = [instance for row in validation for instance in _split_row(row)]
    got_train = [instance for row in rows for instance in _split_row(row)]
    assert sorted(map(repr, got_val)) == sorted(map(repr, want_val))
    assert sorted(map(repr, got_train)) == sorted(map(repr, want_train))
    assert all(len(r["input_ids"]) <= max_len for r in validation)
    assert meta["validation_instances"] == len(want_val) and meta["instances"] == len(want_train)
    assert meta["validation_rows"] == len(validation) and meta["rows"] == len(rows)
    assert meta["validation_tokens"] == sum(len(ids) for ids, _ in want_val)
    assert (meta["validation_fraction"], meta["validation_seed"]) == (fraction, seed)
    # rerunning without a split removes the stale one
    prepare(dataclasses.replace(config, validation_fraction=0.0))
    assert load_validation(tmp_path / "out") is None


def test_bad_validation_fraction_and_chunk_are_clear_errors(assets: Path, tmp_path: Path, capsys):
    args = ["--pairs", str(assets / "pairs.jsonl"), "--tokenizer", str(assets / "tokenizer"), "--max-seq-length", "256"]
    assert main(args + ["--out", str(tmp_path / "o"), "--validation-fraction", "1.5"]) == 2
    assert "validation_fraction must lie in [0, 1), got 1.5" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "o"), "--chunk-tokens", "100"]) == 2
    assert "chunk_tokens must lie in [max_seq_length, 2^30), got 100" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "o"), "--validation-fraction", "0.2", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["validation_rows"] == len(load_validation(tmp_path / "o")) > 0


def _flat_pairs(assets: Path, path: Path, broken: int) -> list[dict]:
    """The fixture's pairs in the paper's corpus format (`_id`, `docstring`, flattened `code`), plus
    `broken` records whose code does not parse once converted."""
    from mmpt.data.codeformat import flatten

    records = [{"_id": str(i), "docstring": p["docstring"], "code": flatten(p["code"])} for i, p in enumerate(_pairs(assets))]
    records += [
        {"_id": f"b{i}", "docstring": "bad", "code": "def f ( : <NEW_LINE> <INDENT> return <NEW_LINE> <DEDENT>"}
        for i in range(broken)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_flattened_corpus_is_converted_before_tokenisation(assets: Path, tmp_path: Path, tiny_tokenizer):
    from mmpt.data.codeformat import unflatten
    from mmpt.data.pairs import split_pair_code

    flat = tmp_path / "flat.jsonl"
    records = _flat_pairs(assets, flat, broken=2)
    config = PrepareConfig(
        pairs=str(flat), tokenizer=str(assets / "tokenizer"), out=str(tmp_path / "out"), layout="signature-first",
        max_seq_length=4096, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    meta = prepare(config)
    assert meta["converted_from_flat"] == len(records) and meta["dropped_unparsable"] == 2
    assert meta["pairs"] == len(records) and meta["instances"] == len(records) - 2 - meta["dropped_no_signature"]
    smap = SeparationMap("none", len(tiny_tokenizer))
    expected = []
    for r in records[:-2]:
        code = unflatten(r["code"]).strip("\n") + "\n"
        signature, body = split_pair_code(code)
        if signature:
            expected.append(encode_instance(tiny_tokenizer, smap, "signature-first", r["docstring"], code, signature, body))
    rows, _ = load_prepared(tmp_path / "out")
    got = [instance for row in rows for instance in _split_row(row)]
    assert sorted(map(repr, got)) == sorted(map(repr, expected)) and len(got) > 0
    # the markers never reach the tokenizer
    marker_ids = set(tiny_tokenizer("<NEW_LINE>", add_special_tokens=False)["input_ids"])
    assert not any(tuple(ids[i : i + len(marker_ids)]) == tuple(marker_ids) for ids, _ in got for i in range(len(ids)))


def test_nothing_left_is_a_clear_error(assets: Path, tmp_path: Path, capsys):
    flat = tmp_path / "flat.jsonl"
    _flat_pairs(assets, flat, broken=0)
    args = ["--pairs", str(flat), "--tokenizer", str(assets / "tokenizer"), "--layout", "signature-first"]
    # read as plain code, nothing parses, so no pair has a signature to put first
    assert main(args + ["--code-format", "plain", "--max-seq-length", "256", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no pair left to train on" in err and "without a parsable function for --layout signature-first" in err
    assert main(args + ["--max-seq-length", "8", "--out", str(tmp_path / "p")]) == 2
    assert "longer than --max-seq-length 8" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["docstring-first", "signature-first"])
def test_keep_flat_trains_the_official_flattened_instances(assets: Path, tmp_path: Path, layout: str):
    """The official data: markers are special tokens, code is the flattened text with code ids remapped
    (full separation copying no special token), docstring-first: <comments> doc <python> code <eot>."""
    from mmpt.data.codeformat import MARKERS

    flat = tmp_path / "flat.jsonl"
    records = _flat_pairs(assets, flat, broken=0)
    config = PrepareConfig(
        pairs=str(flat), tokenizer=str(assets / "tokenizer"), out=str(tmp_path / "out"), layout=layout, separation="full",
        separate_special_tokens=False, code_format="keep-flat", max_seq_length=4096, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    meta = prepare(config)
    tok = load_tokenizer(str(tmp_path / "out" / "tokenizer"), sentinels=False)
    assert set(MARKERS) <= set(tok.all_special_tokens) and meta["code_format"] == "keep-flat"
    marker_ids = tok.convert_tokens_to_ids(list(MARKERS))
    smap = SeparationMap.load(tmp_path / "out")
    assert not set(tok.all_special_ids) & set(smap.separated) and len(smap.separated) == len(tok) - len(tok.all_special_ids)
    rows, _ = load_prepared(tmp_path / "out")
    got = [ids for row in rows for ids, _ in _split_row(row)]
    assert len(got) == meta["instances"] > 0
    ids = tok.convert_tokens_to_ids
    if layout == "docstring-first":
        enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
        expected = [
            [ids("<comments>"), *enc(r["docstring"]), ids("<python>"), *smap.to_code(enc(r["code"])), ids("<eot>")]
            for r in records
        ]
        assert sorted(map(repr, got)) == sorted(map(repr, expected))
    for instance in got:  # every marker is one (shared, uncopied) token, and the text reads flattened
        assert any(m in instance for m in marker_ids)
        assert "<NEW_LINE>" in tok.decode(smap.to_original(instance))


def test_special_tokens_flag_only_for_full(assets: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="only applies to separation 'full'"):
        PrepareConfig(pairs="p", tokenizer="t", out="o", separation="partial", separate_special_tokens=False)
    with pytest.raises(ValueError, match="code_format must be one of"):
        PrepareConfig(pairs="p", tokenizer="t", out="o", code_format="flattish")


def test_cli_flags_of_the_official_format_and_separation(assets: Path, tmp_path: Path):
    flat = tmp_path / "flat.jsonl"
    _flat_pairs(assets, flat, broken=0)
    args = ["--pairs", str(flat), "--tokenizer", str(assets / "tokenizer"), "--max-seq-length", "4096"]
    args += ["--separation", "full", "--no-separate-special-tokens", "--code-format", "keep-flat", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["code_format"] == "keep-flat" and meta["separate_special_tokens"] is False


# The official training text, token string for token string. tests/assets/keep_flat_official.json
# holds a corpus sample written for this test (`rows`, the paper's flattened format), a separation
# list (`entries`) and, per layout and separation, the instances the official code made of the rows,
# as token strings (code copies named `[_DUP_]<token>`, as the official names them). Its `how` field
# says how they were made: the official tokenization functions (source/tokenization.py) and
# lm_trainer.py's tokenizer steps, run outside this repository under transformers 4.19.4 on the tiny
# tokenizer of tests/assets; only the resulting strings are kept here.
OFFICIAL = json.loads((Path(__file__).resolve().parents[1] / "assets" / "keep_flat_official.json").read_text())


def _instance_strings(out: Path) -> list[list[str]]:
    """The instances of a prepared folder as token strings, code copies named as the official names them."""
    tok = load_tokenizer(str(out / "tokenizer"), sentinels=False)
    smap = SeparationMap.load(out)
    rows, _ = load_prepared(out)
    names = tok.convert_ids_to_tokens(list(range(smap.base_vocab_size)))
    names += ["[_DUP_]" + names[i] for i in smap.separated]
    return [[names[i] for i in ids] for row in rows for ids, _ in _split_row(row)]


@pytest.mark.parametrize("layout", ["signature-first", "docstring-first"])
@pytest.mark.parametrize("separation", ["none", "partial", "full"])
def test_keep_flat_equals_the_official_training_text(assets: Path, tmp_path: Path, layout: str, separation: str):
    pairs, entries = tmp_path / "rows.jsonl", tmp_path / "entries.txt"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in OFFICIAL["rows"]))
    entries.write_text("\n".join(OFFICIAL["entries"]) + "\n")
    config = PrepareConfig(
        pairs=str(pairs), tokenizer=str(assets / "tokenizer"), out=str(tmp_path / "out"), layout=layout, separation=separation,
        separate_tokens=str(entries) if separation == "partial" else None, space_forms=separation == "partial",
        separate_special_tokens=separation != "full", code_format="keep-flat", max_seq_length=1024,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    meta = prepare(config)
    expected = OFFICIAL["instances"][layout][separation]
    assert meta["instances"] == len(expected) == len(OFFICIAL["rows"])
    assert sorted(_instance_strings(tmp_path / "out")) == sorted(expected)  # packing reorders instances
    if separation == "partial":  # entries that were no token became one; " return" is then "Ġ" + "return"
        assert {"return", "isinstance", "+="} <= set(meta["added_tokens"]) and "in" not in meta["added_tokens"]
    if layout == "signature-first":  # the official opening token, not the backbone's bos
        assert {instance[0] for instance in expected} == {"<|beginoftext|>"}


def test_reporting_entries_keeps_the_backbone_tokenization(assets: Path, tmp_path: Path):
    """--split-tokens report: today's behaviour, entries that are no token are reported, not added,
    and the instances differ from the official's (the space before `return` stays in its token)."""
    pairs, entries = tmp_path / "rows.jsonl", tmp_path / "entries.txt"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in OFFICIAL["rows"]))
    entries.write_text("\n".join(OFFICIAL["entries"]) + "\n")
    args = ["--pairs", str(pairs), "--tokenizer", str(assets / "tokenizer"), "--max-seq-length", "1024", "--layout",
            "signature-first", "--separation", "partial", "--separate-tokens", str(entries), "--space-forms",
            "--code-format", "keep-flat", "--split-tokens", "report", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 0
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["added_tokens"] == [] and "return" in meta["split_tokens"]
    got = _instance_strings(tmp_path / "o")
    assert sorted(got) != sorted(OFFICIAL["instances"]["signature-first"]["partial"])
    assert any("[_DUP_]Ġreturn" in instance for instance in got)
