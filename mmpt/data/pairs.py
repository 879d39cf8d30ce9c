"""Loading NL→code pairs for training: local JSONL/JSON/parquet or a hub dataset, through `datasets`.

Every source must give `docstring` and `code` strings per record (the format of the paper's
`huawei-noah/python_text2code`, and of `mmpt extract`). Local files are checked line by line first,
so that a malformed record is reported by file and line instead of by a pyarrow traceback; the
load itself goes through `datasets`, which caches the Arrow conversion.
"""

from __future__ import annotations

import ast
from pathlib import Path

import datasets

from mmpt.data.extract import header_end
from mmpt.jsonl import JsonlError, read_json, read_jsonl, require

REQUIRED = ("docstring", "code")  # string fields every record must have
COLUMNS = ("docstring", "code", "signature", "body")


class PairsError(ValueError):
    """A pairs source that cannot be used; the message names the file and line or column."""


def _is_json_array(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"[")


def check_pairs_file(path: str | Path) -> int:
    """Validate a local pairs file; the number of records. Raises PairsError naming file and line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _check_parquet(path)
    if suffix not in (".jsonl", ".json"):
        raise PairsError(f"{path}: unsupported pairs file (use .jsonl, .json or .parquet)")
    try:
        if suffix == ".json" and _is_json_array(path):
            records = read_json(path, list)
            for i, record in enumerate(records):
                require(record, dict.fromkeys(REQUIRED, str), f"{path}: record {i}")
            return len(records)
        count = 0
        for lineno, record in read_jsonl(path):
            require(record, dict.fromkeys(REQUIRED, str), f"{path}:{lineno}")
            count += 1
    except JsonlError as e:
        raise PairsError(str(e)) from None
    return count


def _check_parquet(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=None)
    except (pa.ArrowInvalid, OSError) as e:
        raise PairsError(f"{path}: not a readable parquet file ({e})") from None
    for name in REQUIRED:
        if name not in table.column_names:
            raise PairsError(f"{path}: missing column {name!r} (has {table.column_names})")
        column = table.column(name)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            raise PairsError(f"{path}: column {name!r} must hold strings, has {column.type}")
        if column.null_count:
            row = column.is_null().to_pylist().index(True)
            raise PairsError(f"{path}: row {row}: field {name!r} is null")
    return table.num_rows


def split_pair_code(code: str) -> tuple[str, str]:
    """(signature, body) of a function's source, as `mmpt extract` would cut it.

    For pairs that only carry `code` (hub datasets). The signature is everything up to the colon of
    the first top-level def (imports and decorators included); a leading docstring statement is
    removed from the body. Raises ValueError when `code` has no parsable function.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"code does not parse: {e}") from None
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if node is None:
        raise ValueError("code has no top-level function")
    lines = code.split("\n")
    colon = header_end(lines, node.lineno, node.body[0].lineno)
    if colon >= node.body[0].lineno:
        raise ValueError("the function's body shares its header line")
    start = colon
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        start = first.end_lineno
    body_lines = lines[start : node.end_lineno]
    while body_lines and not body_lines[0].strip():
        body_lines.pop(0)
    return "\n".join(lines[:colon]), "".join(line + "\n" for line in body_lines)


def _add_signature(batch: dict) -> dict:
    signatures, bodies = [], []
    for code in batch["code"]:
        try:
            signature, body = split_pair_code(code)
        except ValueError:
            signature, body = "", ""  # prepare drops these for the signature-first layout
        signatures.append(signature)
        bodies.append(body)
    return {"signature": signatures, "body": bodies}


def load_pairs(
    source: str | Path, *, split: str = "train", cache_dir: str | None = None, num_proc: int | None = None
) -> datasets.Dataset:
    """The pairs of `source` as a Dataset with the columns `docstring`, `code`, `signature`, `body`.

    `source`: a .jsonl/.json/.parquet file, a folder written by `Dataset.save_to_disk`, or a hub
    dataset name. Missing `signature`/`body` columns are derived from `code` (empty when the code
    has no parsable function).
    """
    path = Path(source)
    if path.is_file():
        check_pairs_file(path)
        builder = "parquet" if path.suffix.lower() == ".parquet" else "json"
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
        where = str(path)
    elif path.is_dir():
        try:
            dataset = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise PairsError(f"{path}: a folder but not a dataset saved with save_to_disk") from None
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
        where = str(path)
    else:
        where = f"hub dataset {source!r} ({split})"
        try:
            dataset = datasets.load_dataset(str(source), split=split, cache_dir=cache_dir)
        except (OSError, ValueError) as e:  # ConnectionError, DatasetNotFoundError, unknown split
            raise PairsError(f"{source}: not a local file or folder, and {where} cannot be loaded ({e})") from None
    missing = [name for name in REQUIRED if name not in dataset.column_names]
    if missing:
        raise PairsError(f"{where}: missing columns {missing} (has {dataset.column_names})")
    if "signature" not in dataset.column_names or "body" not in dataset.column_names:
        dataset = dataset.remove_columns([c for c in ("signature", "body") if c in dataset.column_names])
        dataset = dataset.map(_add_signature, batched=True, num_proc=num_proc, desc="split signatures")
    return dataset.select_columns(list(COLUMNS))
