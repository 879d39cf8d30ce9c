"""`mmpt prepare`: pairs → encoded instances (modality per token, code ids separated) → packed rows.

    mmpt prepare --pairs pairs.jsonl --tokenizer runs/tokenizer --separation partial \\
        --max-seq-length 1024 --out runs/data

Writes DIR/rows (datasets.save_to_disk; columns input_ids int32, position_ids int16/int32 restarting
at 0 per instance, modality int8, each a large_list: 64-bit offsets, so a column holds more than
2^31 tokens; rows unpadded, ≤ max_seq_length), DIR/validation (the same columns, from the instances
held out by `--validation-fraction`), DIR/tokenizer (with the sentinels), DIR/separation.json and
DIR/meta.json. `load_prepared(DIR)` reads it back.

Memory stays flat in the corpus size: the encoded instances stay on disk (the `datasets` cache) and
are packed in chunks of about `chunk_tokens` tokens, each chunk's rows written before the next
chunk is read. Best-fit decreasing per chunk loses fill only in each chunk's last few rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import mmpt
from mmpt.cli import command_parser
from mmpt.data.codeformat import CODE_FORMATS, MARKERS, as_flat, quoted_docstring, split_flat_signature
from mmpt.data.instances import SentinelIds, assemble_instance, encode_instance, sentinel_ids
from mmpt.data.packing import pack, row_layout
from mmpt.data.pairs import PairsError, drop_unparsable, load_pairs
from mmpt.data.separation import SeparationMap, add_entry_tokens, build_separation_map, with_space_forms
from mmpt.data.tokenizer import add_sentinels, load_tokenizer
from mmpt.jsonl import read_json, write_json
from mmpt.modality import LAYOUTS, OFFICIAL_BOS, SEPARATIONS

if TYPE_CHECKING:  # datasets and pyarrow are imported where they are used: `mmpt prepare --help` does not load them
    import datasets
    import pyarrow as pa

META_FILE = "meta.json"
ROWS_DIR = "rows"
TOKENIZER_DIR = "tokenizer"
VALIDATION_DIR = "validation"
KEEP_FLAT = "keep-flat"  # train on the flattened text, the markers special tokens (the official scripts)
SPLIT_TOKENS = ("add", "report")  # list entries that are not one token: added as tokens (the official way), or reported
PREPARE_CODE_FORMATS = (*CODE_FORMATS, KEEP_FLAT)
ROWS_PER_CHUNK = 4096  # rows laid out per Arrow write; bounds the gather arrays' memory
LENGTHS_BLOCK = 1 << 16  # instances whose lengths are read at once while cutting chunks


def encoded_features() -> datasets.Features:
    """Columns of the encoded instances (the `datasets` cache between encoding and packing)."""
    import datasets

    return datasets.Features(
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
    code_format: str = "auto"  # auto | plain | flat: the paper's flattened code is converted to Python;
    # keep-flat: every instance's code is trained flattened, <NEW_LINE>/<INDENT>/<DEDENT> added as special tokens
    separate_special_tokens: bool = True  # full: special tokens get code copies too (the official never copies them)
    split_tokens: str | None = None  # add | report: separate_tokens entries that are not one token; None: add under keep-flat
    validation_fraction: float = 0.0  # share of instances held out as DIR/validation
    seed: int = 0  # which instances are held out
    chunk_tokens: int = 1 << 24  # tokens packed at once: memory ∝ this, not the corpus; fill loss ∝ 1/this

    def __post_init__(self) -> None:
        if self.separation not in SEPARATIONS:
            raise ValueError(f"separation must be one of {SEPARATIONS}, got {self.separation!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.code_format not in PREPARE_CODE_FORMATS:
            raise ValueError(f"code_format must be one of {PREPARE_CODE_FORMATS}, got {self.code_format!r}")
        if not self.separate_special_tokens and self.separation != "full":
            raise ValueError("separate_special_tokens=False only applies to separation 'full'")
        if self.separate_tokens and self.separation != "partial":
            raise ValueError("separate_tokens only applies to separation 'partial'")
        if self.split_tokens not in (None, *SPLIT_TOKENS):
            raise ValueError(f"split_tokens must be one of {SPLIT_TOKENS}, got {self.split_tokens!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction}")
        if not self.max_seq_length <= self.chunk_tokens < 1 << 30:  # a chunk of list<int32> stays < 2^31 tokens
            raise ValueError(f"chunk_tokens must lie in [max_seq_length, 2^30), got {self.chunk_tokens}")


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


def encode_flat_batch(batch: dict, tokenizer, smap: SeparationMap, layout: str) -> dict:
    """Encode a batch of pairs with their code flattened, as the official scripts do
    (`--code-format keep-flat`): docstring-first `<comments> doc <python> code <eot>` with the
    flattened code verbatim; signature-first with the official cut of the signature
    (`split_flat_signature`) and the docstring quoted (`quoted_docstring`)."""
    input_ids, modality = [], []
    for doc, code in zip(batch["docstring"], batch["code"]):
        flat = as_flat(code)
        if layout == "docstring-first":
            instance, kinds = encode_instance(tokenizer, smap, layout, doc, flat)
        else:
            signature, body = split_flat_signature(flat)  # records without one were dropped before
            instance, kinds = encode_instance(tokenizer, smap, layout, quoted_docstring(doc), flat, signature, body)
        input_ids.append(instance)
        modality.append(kinds)
    return {"input_ids": input_ids, "modality": modality}


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
    import pyarrow.compute as pc

    array = column.combine_chunks()
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(array).to_numpy(zero_copy_only=False)
    return values, np.concatenate([[0], np.cumsum(lengths)])


def _lengths(column: pa.ChunkedArray) -> np.ndarray:
    """Tokens per instance (instances,) of a list column, without combining its chunks."""
    import pyarrow.compute as pc

    if column.num_chunks == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([pc.list_value_length(c).to_numpy(zero_copy_only=False) for c in column.chunks]).astype(np.int64)


def held_out(index: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each instance (by its corpus index) is held out for validation: (instances,) bool.

    A hash of (seed, index) against `fraction`, so the choice does not depend on how the corpus is
    chunked or on how many instances there are, and costs no memory per instance.
    """
    # splitmix64 of index + seed * golden ratio: uniform 64-bit values, then the top 53 bits as [0, 1)
    with np.errstate(over="ignore"):
        x = np.asarray(index, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def corpus_chunks(encoded: datasets.Dataset, chunk_tokens: int):
    """(start, stop) instance ranges of about `chunk_tokens` tokens each, in corpus order.

    Only lengths are read, a block at a time; a chunk ends at the first instance that reaches the
    budget (so one longer than it is a chunk of its own).
    """
    table = encoded.with_format("arrow")
    start, tokens = 0, 0  # the open chunk: its first instance, its tokens before this block
    for block in range(0, len(encoded), LENGTHS_BLOCK):
        ends = np.cumsum(_lengths(table[block : block + LENGTHS_BLOCK].column("input_ids")))  # (block,)
        consumed = 0  # tokens of this block already in yielded chunks
        while True:
            # first instance whose end brings the open chunk to the budget
            cut = int(np.searchsorted(ends, chunk_tokens - tokens + consumed, side="left"))
            if cut >= len(ends):
                tokens += int(ends[-1]) - consumed if len(ends) else 0
                break
            yield start, block + cut + 1
            start, tokens, consumed = block + cut + 1, 0, int(ends[cut])
    if start < len(encoded):
        yield start, len(encoded)


def row_features(max_seq_length: int) -> datasets.Features:
    """Columns of DIR/rows and DIR/validation; large lists (64-bit offsets) hold > 2^31 tokens."""
    import datasets

    position_type = "int16" if max_seq_length <= np.iinfo(np.int16).max + 1 else "int32"
    return datasets.Features(
        {
            "input_ids": datasets.LargeList(datasets.Value("int32")),
            "position_ids": datasets.LargeList(datasets.Value(position_type)),
            "modality": datasets.LargeList(datasets.Value("int8")),
        }
    )


class _RowWriter:
    """Packed rows appended as Arrow large lists to one file, saved with `save_to_disk` at the end."""

    def __init__(self, features: datasets.Features, tmp: Path):
        from datasets.arrow_writer import ArrowWriter

        self.features = features
        self.path = str(tmp)
        self.writer = ArrowWriter(features=features, path=self.path)
        self.rows = 0
        self.tokens = 0

    def write(self, ids: np.ndarray, modality: np.ndarray, offsets: np.ndarray, rows: list[np.ndarray]) -> None:
        """Rows of instances (indices into `offsets`, (instances + 1,), over the flat `ids`/`modality`)."""
        import pyarrow as pa

        position_type = self.features["position_ids"].feature.dtype
        for start in range(0, len(rows), ROWS_PER_CHUNK):
            gather, positions, row_offsets = row_layout(offsets, rows[start : start + ROWS_PER_CHUNK])
            bounds = pa.array(row_offsets, pa.int64())
            columns = {
                "input_ids": ids[gather].astype("int32"),
                "position_ids": positions.astype(position_type),
                "modality": modality[gather].astype("int8"),
            }
            self.writer.write_table(
                pa.table({name: pa.LargeListArray.from_arrays(bounds, pa.array(v)) for name, v in columns.items()})
            )
            self.rows += len(row_offsets) - 1
            self.tokens += int(row_offsets[-1])

    def save(self, out: Path) -> None:
        import datasets

        self.writer.finalize()
        self.writer.close()
        if out.exists():
            shutil.rmtree(out)
        datasets.Dataset.from_file(self.path).save_to_disk(str(out))


def _encoded_instances(arrow: datasets.Dataset, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, modality, offsets) of instances start..stop of the encoded dataset (Arrow-formatted)."""
    table = arrow[start:stop]
    ids, offsets = _flat(table.column("input_ids"))
    modality, _ = _flat(table.column("modality"))
    return ids, modality, offsets


def _write_validation(
    encoded: datasets.Dataset, index: np.ndarray, lengths: np.ndarray, max_seq_length: int, writer: _RowWriter
) -> None:
    """Pack the held-out instances (corpus `index`, `lengths`) as a whole and write their rows.

    They are few, so their lengths are packed in one go; their tokens are read a group of rows at
    a time.
    """
    rows = [index[r] for r in pack(lengths, max_seq_length)]  # corpus indices per row
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        group = rows[start : start + ROWS_PER_CHUNK]
        members = np.sort(np.concatenate(group))
        ids, modality, offsets = _encoded_instances(encoded.select(members).with_format("arrow"), 0, len(members))
        writer.write(ids, modality, offsets, [np.searchsorted(members, r) for r in group])


def _pack_and_write(encoded: datasets.Dataset, config: PrepareConfig, out: Path) -> dict:
    """Pack the encoded instances chunk by chunk into DIR/rows (and DIR/validation); their counts for meta."""
    features = row_features(config.max_seq_length)
    max_len = config.max_seq_length
    arrow = encoded.with_format("arrow")
    val_index, val_lengths = [], []  # held-out instances: corpus index and length (few)
    counts = {"instances": 0, "dropped_too_long": 0}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        train = _RowWriter(features, Path(tmp) / "rows.arrow")
        for start, stop in corpus_chunks(encoded, config.chunk_tokens):
            ids, modality, offsets = _encoded_instances(arrow, start, stop)
            lengths = np.diff(offsets)  # (chunk instances,)
            fits = lengths <= max_len
            counts["dropped_too_long"] += int((~fits).sum())
            held = held_out(np.arange(start, stop), config.validation_fraction, config.seed)
            kept = np.flatnonzero(fits & ~held)
            counts["instances"] += int(kept.size)
            train.write(ids, modality, offsets, [kept[r] for r in pack(lengths[kept], max_len)])
            val = np.flatnonzero(fits & held)
            val_index.append(start + val)
            val_lengths.append(lengths[val])
        train.save(out / ROWS_DIR)
        val_index = np.concatenate(val_index) if val_index else np.zeros(0, dtype=np.int64)
        validation = None
        if config.validation_fraction > 0:
            validation = _RowWriter(features, Path(tmp) / "validation.arrow")
            _write_validation(encoded, val_index, np.concatenate(val_lengths), max_len, validation)
            validation.save(out / VALIDATION_DIR)
        elif (out / VALIDATION_DIR).exists():
            shutil.rmtree(out / VALIDATION_DIR)  # a stale split from an earlier run into this folder
    return {
        **counts,
        "rows": train.rows,
        "tokens": train.tokens,
        "fill_ratio": train.tokens / (train.rows * max_len) if train.rows else 0.0,
        "validation_fraction": config.validation_fraction,
        "validation_seed": config.seed,
        "validation_instances": int(val_index.size),
        "validation_rows": validation.rows if validation else 0,
        "validation_tokens": validation.tokens if validation else 0,
    }


def _tokenizer_record(tokenizer, name_or_path: str, saved: Path, backbone_vocab_size: int) -> dict:
    content = (saved / "tokenizer.json").read_bytes()
    return {
        "name_or_path": name_or_path,
        "vocab_size": len(tokenizer),
        "backbone_vocab_size": backbone_vocab_size,  # before the sentinels: extend_model's trained_rows
        "sha256": hashlib.sha256(content).hexdigest(),
    }


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
    tokenizer = load_tokenizer(config.tokenizer, sentinels=False)
    backbone_vocab_size = len(tokenizer)  # ids from here on are sentinels the backbone never trained
    add_sentinels(tokenizer)
    keep_flat = config.code_format == KEEP_FLAT
    if keep_flat:  # the official scripts add the markers as special tokens: never split, never copied
        missing = [m for m in MARKERS if m not in tokenizer.get_vocab()]
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        if config.layout == "signature-first":  # the official opens these instances with it, not the backbone's bos
            tokenizer.add_special_tokens({"bos_token": OFFICIAL_BOS})
    tokens = read_separate_tokens(config.separate_tokens) if config.separate_tokens else None
    added: list[str] = []
    if tokens is not None and (config.split_tokens or ("add" if keep_flat else "report")) == "add":
        # as the official scripts: an entry that is not one token becomes one (an added token, which also
        # splits off the space before each of its occurrences, in NL and code alike)
        added = add_entry_tokens(tokenizer, tokens)
    if tokens is not None and config.space_forms:
        tokens = with_space_forms(tokens)
    smap, split = build_separation_map(tokenizer, config.separation, tokens, config.separate_special_tokens)
    ids = sentinel_ids(tokenizer)

    # keep-flat keeps the records' text as it is: flattened code is trained verbatim (plain code is flattened)
    code_format = "plain" if keep_flat else config.code_format
    pairs = load_pairs(config.pairs, cache_dir=config.cache_dir, num_proc=config.num_proc, code_format=code_format)
    total = len(pairs)
    pairs, formats = drop_unparsable(pairs)
    dropped_no_signature = 0
    if config.layout == "signature-first":
        # pairs whose code has no parsable def (keep-flat: no official signature cut) have no signature to put first
        if keep_flat:
            has = lambda codes: [split_flat_signature(as_flat(c)) is not None for c in codes]  # noqa: E731
            kept = pairs.filter(has, input_columns="code", batched=True)
        else:
            kept = pairs.filter(lambda b: [s != "" for s in b], input_columns="signature", batched=True)
        dropped_no_signature = len(pairs) - len(kept)
        pairs = kept
    if len(pairs) == 0:
        raise ValueError(_nothing_left(config, total, formats, dropped_no_signature, 0))
    encoded = pairs.map(
        encode_flat_batch if keep_flat else encode_batch,
        batched=True,
        batch_size=config.batch_size,
        num_proc=config.num_proc,
        remove_columns=pairs.column_names,
        features=encoded_features(),
        fn_kwargs={"tokenizer": tokenizer, "smap": smap, "layout": config.layout} | ({} if keep_flat else {"ids": ids}),
        desc="encode",
    )
    split_counts = _pack_and_write(encoded, config, out)
    if split_counts["instances"] + split_counts["validation_instances"] == 0:
        raise ValueError(_nothing_left(config, total, formats, dropped_no_signature, split_counts["dropped_too_long"]))

    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    smap.save(out)
    meta = {
        "pairs": total,
        "code_format": config.code_format,
        "converted_from_flat": formats["converted"],
        "dropped_unparsable": formats["dropped_unparsable"],
        "dropped_no_signature": dropped_no_signature,
        **split_counts,
        "separation": config.separation,
        "separate_special_tokens": config.separate_special_tokens,
        "separated_tokens": len(smap.separated),
        "added_tokens": added,
        "split_tokens": split,
        "tokenizer": _tokenizer_record(tokenizer, config.tokenizer, out / TOKENIZER_DIR, backbone_vocab_size),
        "id_map": smap.to_dict(),
        "layout": config.layout,
        "max_seq_length": config.max_seq_length,
        "sentinel_ids": dataclasses.asdict(ids),
        "packing": "best-fit-decreasing",
        "chunk_tokens": config.chunk_tokens,
        "created_by": f"mmpt {mmpt.__version__}",
    }
    write_json(out / META_FILE, meta)
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
    return _load_rows(directory / ROWS_DIR), meta


def load_validation(directory: str | Path) -> datasets.Dataset | None:
    """The held-out rows of a folder written by `prepare` (same columns as its rows); None without any."""
    path = Path(directory) / VALIDATION_DIR
    return _load_rows(path) if path.exists() else None


def _load_rows(path: Path) -> datasets.Dataset:
    import datasets

    try:
        rows = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing or not a saved dataset") from None
    missing = {"input_ids", "position_ids", "modality"} - set(rows.column_names)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("mmpt prepare", __doc__.split("\n")[0])
    parser.add_argument("--pairs", required=True, help="pairs file, saved dataset folder, or hub dataset name")
    parser.add_argument("--tokenizer", required=True, help="tokenizer name or folder")
    parser.add_argument("--separation", choices=SEPARATIONS, default="none", help="which tokens get a code row of their own")
    parser.add_argument("--separate-tokens", default=None, help="partial: file of strings to separate")
    parser.add_argument(
        "--space-forms", action="store_true",
        help="--separate-tokens: each entry bare and space-prefixed, as the paper's code reads its list",
    )  # fmt: skip
    parser.add_argument("--layout", choices=LAYOUTS, default="docstring-first", help="order of NL and signature")
    parser.add_argument(
        "--code-format", choices=PREPARE_CODE_FORMATS, default="auto",
        help="flat: the paper's <NEW_LINE> format, converted to Python; keep-flat: trained flattened, as the official scripts",
    )  # fmt: skip
    parser.add_argument(
        "--no-separate-special-tokens", dest="separate_special_tokens", action="store_false",
        help="--separation full: special tokens keep one shared row (the official full separation)",
    )  # fmt: skip
    parser.add_argument(
        "--split-tokens", choices=SPLIT_TOKENS, default=None,
        help="--separate-tokens entries that are not one token: add them as tokens (the official way; keep-flat's default) or report them",
    )  # fmt: skip
    parser.add_argument("--max-seq-length", type=int, required=True, help="tokens per packed row")
    parser.add_argument("--num-proc", type=int, default=None, help="tokenizer processes (default: in-process)")
    parser.add_argument("--out", required=True, help="folder for rows, tokenizer, separation.json, meta.json")
    parser.add_argument("--validation-fraction", type=float, default=0.0, help="share of instances held out")
    parser.add_argument("--seed", type=int, default=0, help="which instances are held out")
    parser.add_argument("--chunk-tokens", type=int, default=PrepareConfig.chunk_tokens, help="tokens packed at once")
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
            separate_special_tokens=args.separate_special_tokens,
            split_tokens=args.split_tokens,
            max_seq_length=args.max_seq_length,
            num_proc=args.num_proc,
            validation_fraction=args.validation_fraction,
            seed=args.seed,
            chunk_tokens=args.chunk_tokens,
        )
        meta = prepare(config)
    except (PairsError, ValueError, FileNotFoundError) as e:
        print(f"mmpt prepare: {e}", file=sys.stderr)
        return 2
    if meta["added_tokens"]:
        shown = ", ".join(repr(t) for t in meta["added_tokens"])
        print(
            f"mmpt prepare: {len(meta['added_tokens'])} list entries added as tokens (the official way): {shown}", file=sys.stderr
        )
    if meta["split_tokens"]:
        # reported, not used: these strings take several pieces in this tokenizer
        # (all of them for a list the user gave, e.g. the paper's; meta.json always has all)
        split = meta["split_tokens"] if args.separate_tokens else meta["split_tokens"][:10]
        shown = ", ".join(repr(t) for t in split) + ("" if len(split) == len(meta["split_tokens"]) else " ...")
        print(f"mmpt prepare: {len(meta['split_tokens'])} tokens not separated (not one token of this tokenizer): {shown}",
              file=sys.stderr)  # fmt: skip
    summary = {k: meta[k] for k in ("pairs", "instances", "dropped_too_long", "rows", "tokens", "fill_ratio", "validation_rows")}
    print(json.dumps({"out": args.out, **summary, "separated_tokens": meta["separated_tokens"]}))
    return 0
