"""`mmpt prepare`: pairs → encoded instances (modality per token, code ids separated) → packed rows.

    mmpt prepare --pairs pairs.jsonl --tokenizer runs/tokenizer --separation partial \\
        --max-seq-length 1024 --out runs/data

Writes DIR/rows (datasets.save_to_disk; columns input_ids int32, position_ids int16/int32 restarting
at 0 per instance, modality int8; rows unpadded, ≤ max_seq_length), DIR/tokenizer (with the
sentinels), DIR/separation.json and DIR/meta.json. `load_prepared(DIR)` reads it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter

import mmpt
from mmpt.data.instances import SentinelIds, assemble_instance, sentinel_ids
from mmpt.data.packing import fill_ratio, pack, row_layout
from mmpt.data.codeformat import CODE_FORMATS
from mmpt.data.pairs import PairsError, drop_unparsable, load_pairs
from mmpt.data.separation import SeparationMap, build_separation_map, with_space_forms
from mmpt.data.tokenizer import load_tokenizer
from mmpt.jsonl import read_json
from mmpt.modality import LAYOUTS, SEPARATIONS

META_FILE = "meta.json"
ROWS_DIR = "rows"
TOKENIZER_DIR = "tokenizer"
ROWS_PER_CHUNK = 4096  # rows laid out per Arrow write; bounds the gather arrays' memory

ENCODED = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "modality": datasets.List(datasets.Value("int8")),
    }
)


@dataclass
class PrepareConfig:
    """What `prepare` reads and writes."""

    pairs: str  # .jsonl/.json/.parquet, a save_to_disk folder, or a hub dataset name
    tokenizer: str  # AutoTokenizer name or folder; missing sentinels are added
    out: str  # output folder
    separation: str = "none"  # none | partial | full
    separate_tokens: str | None = None  # partial: file of strings (JSON list, or one per line)
    space_forms: bool = False  # separate_tokens: also each entry's space-prefixed form (the paper's list is bare)
    layout: str = "docstring-first"  # docstring-first | signature-first
    max_seq_length: int = 1024  # row capacity; longer instances are dropped
    num_proc: int | None = None  # processes for tokenization (None: in-process)
    batch_size: int = 1000  # pairs per tokenizer call
    cache_dir: str | None = None  # `datasets` cache (default: its own)
    code_format: str = "auto"  # auto | plain | flat: the paper's flattened code is converted to Python

    def __post_init__(self) -> None:
        if self.separation not in SEPARATIONS:
            raise ValueError(f"separation must be one of {SEPARATIONS}, got {self.separation!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.separate_tokens and self.separation != "partial":
            raise ValueError("separate_tokens only applies to separation 'partial'")


def read_separate_tokens(path: str | Path) -> list[str]:
    """Strings to separate: a JSON list of strings, or one per line (leading spaces kept)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the separate-tokens file ({e.strerror})") from None
    if text.lstrip().startswith("["):
        tokens = read_json(path, list)
        if not all(isinstance(t, str) and t for t in tokens):
            raise ValueError(f"{path}: expected a JSON list of non-empty strings")
        return tokens
    return [line for line in text.split("\n") if line.strip()]


def encode_batch(batch: dict, tokenizer, smap: SeparationMap, layout: str, ids: SentinelIds) -> dict:
    """Encode a batch of pairs: one tokenizer call per field, then `assemble_instance` per pair."""

    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    docs = tokenize(batch["docstring"])
    if layout == "docstring-first":
        parts = zip(docs, tokenize(batch["code"]), [None] * len(docs))
    else:
        parts = zip(docs, tokenize(batch["body"]), tokenize(batch["signature"]))
    input_ids, modality = [], []
    for doc, code, signature in parts:
        instance, kinds = assemble_instance(smap, layout, ids, doc, code, signature)
        input_ids.append(instance)
        modality.append(kinds)
    return {"input_ids": input_ids, "modality": modality}


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list column: values (tokens,), offsets (instances + 1,)."""
    array = column.combine_chunks()
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(array).to_numpy(zero_copy_only=False)
    return values, np.concatenate([[0], np.cumsum(lengths)])


def _write_rows(encoded: datasets.Dataset, rows: list[np.ndarray], max_seq_length: int, out: Path) -> None:
    """Lay the packed rows out as Arrow lists and save them with `save_to_disk` at `out`."""
    table = encoded.with_format("arrow")[:]
    ids, offsets = _flat(table.column("input_ids"))
    modality, _ = _flat(table.column("modality"))
    position_type = "int16" if max_seq_length <= np.iinfo(np.int16).max + 1 else "int32"
    features = datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "position_ids": datasets.List(datasets.Value(position_type)),
            "modality": datasets.List(datasets.Value("int8")),
        }
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        arrow_file = str(Path(tmp) / "rows.arrow")
        writer = ArrowWriter(features=features, path=arrow_file)
        for start in range(0, len(rows), ROWS_PER_CHUNK):
            gather, positions, row_offsets = row_layout(offsets, rows[start : start + ROWS_PER_CHUNK])
            bounds = pa.array(row_offsets, pa.int32())
            columns = {
                "input_ids": ids[gather].astype("int32"),
                "position_ids": positions.astype(position_type),
                "modality": modality[gather].astype("int8"),
            }
            writer.write_table(
                pa.table({name: pa.ListArray.from_arrays(bounds, pa.array(v)) for name, v in columns.items()})
            )
        writer.finalize()
        writer.close()
        if out.exists():
            shutil.rmtree(out)
        datasets.Dataset.from_file(arrow_file).save_to_disk(str(out))


def _tokenizer_record(tokenizer, name_or_path: str, saved: Path) -> dict:
    content = (saved / "tokenizer.json").read_bytes()
    return {"name_or_path": name_or_path, "vocab_size": len(tokenizer), "sha256": hashlib.sha256(content).hexdigest()}


def _nothing_left(config: PrepareConfig, total: int, formats: dict, no_signature: int, too_long: int) -> str:
    return (
        f"{config.pairs}: no pair left to train on: {total} read, {formats['dropped_unparsable']} converted from the "
        f"flattened format but unparsable (--code-format {config.code_format}), {no_signature} without a parsable "
        f"function for --layout {config.layout}, {too_long} longer than --max-seq-length {config.max_seq_length}"
    )


def prepare(config: PrepareConfig) -> dict:
    """Tokenize, separate and pack the pairs of `config`; write DIR and return its meta."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(config.tokenizer)
    tokens = read_separate_tokens(config.separate_tokens) if config.separate_tokens else None
    if tokens is not None and config.space_forms:
        tokens = with_space_forms(tokens)
    smap, split = build_separation_map(tokenizer, config.separation, tokens)
    ids = sentinel_ids(tokenizer)

    pairs = load_pairs(config.pairs, cache_dir=config.cache_dir, num_proc=config.num_proc, code_format=config.code_format)
    total = len(pairs)
    pairs, formats = drop_unparsable(pairs)
    dropped_no_signature = 0
    if config.layout == "signature-first":
        # pairs whose code has no parsable def have no signature to put first
        kept = pairs.filter(lambda b: [s != "" for s in b], input_columns="signature", batched=True)
        dropped_no_signature = len(pairs) - len(kept)
        pairs = kept
    if len(pairs) == 0:
        raise ValueError(_nothing_left(config, total, formats, dropped_no_signature, 0))
    encoded = pairs.map(
        encode_batch,
        batched=True,
        batch_size=config.batch_size,
        num_proc=config.num_proc,
        remove_columns=pairs.column_names,
        features=ENCODED,
        fn_kwargs={"tokenizer": tokenizer, "smap": smap, "layout": config.layout, "ids": ids},
        desc="encode",
    )
    lengths_all = pc.list_value_length(encoded.with_format("arrow")[:].column("input_ids")).to_numpy()
    keep = np.flatnonzero(lengths_all <= config.max_seq_length)
    if keep.size == 0:
        raise ValueError(_nothing_left(config, total, formats, dropped_no_signature, len(lengths_all)))
    rows = [keep[r] for r in pack(lengths_all[keep], config.max_seq_length)]
    _write_rows(encoded, rows, config.max_seq_length, out / ROWS_DIR)

    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    smap.save(out)
    meta = {
        "pairs": total,
        "code_format": config.code_format,
        "converted_from_flat": formats["converted"],
        "dropped_unparsable": formats["dropped_unparsable"],
        "instances": int(keep.size),
        "dropped_too_long": int(len(lengths_all) - keep.size),
        "dropped_no_signature": dropped_no_signature,
        "rows": len(rows),
        "tokens": int(lengths_all[keep].sum()),
        "fill_ratio": fill_ratio(lengths_all, rows, config.max_seq_length),
        "separation": config.separation,
        "separated_tokens": len(smap.separated),
        "split_tokens": split,
        "tokenizer": _tokenizer_record(tokenizer, config.tokenizer, out / TOKENIZER_DIR),
        "id_map": smap.to_dict(),
        "layout": config.layout,
        "max_seq_length": config.max_seq_length,
        "sentinel_ids": dataclasses.asdict(ids),
        "packing": "best-fit-decreasing",
        "created_by": f"mmpt {mmpt.__version__}",
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def load_prepared(directory: str | Path) -> tuple[datasets.Dataset, dict]:
    """(rows, meta) of a folder written by `prepare`; a clear error when something is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no prepared data folder (run `mmpt prepare`)")
    meta_path = directory / META_FILE
    try:
        meta = read_json(meta_path, dict)
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_path}: missing; {directory} was not written by `mmpt prepare`") from None
    rows_path = directory / ROWS_DIR
    try:
        rows = datasets.load_from_disk(str(rows_path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{rows_path}: missing or not a saved dataset") from None
    missing = {"input_ids", "position_ids", "modality"} - set(rows.column_names)
    if missing:
        raise ValueError(f"{rows_path}: missing columns {sorted(missing)}")
    return rows, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmpt prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", required=True, help="pairs file, saved dataset folder, or hub dataset name")
    parser.add_argument("--tokenizer", required=True, help="tokenizer name or folder")
    parser.add_argument("--separation", choices=SEPARATIONS, default="none")
    parser.add_argument("--separate-tokens", default=None, help="partial: file of strings to separate")
    parser.add_argument(
        "--space-forms", action="store_true",
        help="--separate-tokens: each entry bare and space-prefixed, as the paper's code reads its list",
    )  # fmt: skip
    parser.add_argument("--layout", choices=LAYOUTS, default="docstring-first")
    parser.add_argument("--code-format", choices=CODE_FORMATS, default="auto", help="flat: the paper's <NEW_LINE> format")
    parser.add_argument("--max-seq-length", type=int, required=True)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        config = PrepareConfig(
            pairs=args.pairs,
            tokenizer=args.tokenizer,
            out=args.out,
            separation=args.separation,
            separate_tokens=args.separate_tokens,
            space_forms=args.space_forms,
            layout=args.layout,
            code_format=args.code_format,
            max_seq_length=args.max_seq_length,
            num_proc=args.num_proc,
        )
        meta = prepare(config)
    except (PairsError, ValueError, FileNotFoundError) as e:
        print(f"mmpt prepare: {e}", file=sys.stderr)
        return 2
    if meta["split_tokens"]:
        # reported, not used: these strings take several pieces in this tokenizer
        # (all of them for a list the user gave, e.g. the paper's; meta.json always has all)
        split = meta["split_tokens"] if args.separate_tokens else meta["split_tokens"][:10]
        shown = ", ".join(repr(t) for t in split) + ("" if len(split) == len(meta["split_tokens"]) else " ...")
        print(f"mmpt prepare: {len(meta['split_tokens'])} tokens not separated (not one token of this tokenizer): {shown}",
              file=sys.stderr)  # fmt: skip
    summary = {k: meta[k] for k in ("pairs", "instances", "dropped_too_long", "rows", "tokens", "fill_ratio")}
    print(json.dumps({"out": args.out, **summary, "separated_tokens": meta["separated_tokens"]}))
    return 0
