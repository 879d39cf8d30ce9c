"""Loading NL→code pairs for training: local JSONL/JSON/parquet or a hub dataset, through `datasets`.

Every source must give `docstring` and `code` strings per record (the format of the paper's
`huawei-noah/python_text2code`, and of `mmpt extract`). Local files are checked line by line first,
so that a malformed record is reported by file and line instead of by a pyarrow traceback; the
load itself goes through `datasets`, which caches the Arrow conversion.

Code in the paper's flattened format (`<NEW_LINE>`/`<INDENT>`/`<DEDENT>`, see `codeformat`) is
turned back into Python as it is loaded; the `converted` column says which records were, and
whether the result parses (`drop_unparsable` removes those that do not, and counts them).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

from mmpt.data.codeformat import CODE_FORMATS, parses, to_python
from mmpt.data.extract import header_end
from mmpt.hub import from_hub
from mmpt.jsonl import JsonlError, read_json, read_jsonl, require

if TYPE_CHECKING:  # datasets is imported where it is used: `mmpt tokenizer --help` does not load it
    import datasets

REQUIRED = ("docstring", "code")  # string fields every record must have
COLUMNS = ("docstring", "code", "signature", "body", "converted")
# values of the `converted` column
PLAIN, CONVERTED, CONVERTED_UNPARSABLE = 0, 1, 2


class PairsError(ValueError):
    """A pairs source that cannot be used; the message names the file and line or column."""


def _is_json_array(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"[")


def check_pairs_file(path: str | Path) -> int:
    """Validate a local pairs file; the number of records (at least one). Raises PairsError naming file and line."""
    count = _count_valid_pairs(Path(path))
    if count == 0:  # the datasets loaders end in a bare StopIteration on an empty file
        raise PairsError(f"{path}: no pairs (the file holds no records)")
    return count


def _count_valid_pairs(path: Path) -> int:
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


def _convert_code(batch: dict, code_format: str) -> dict:
    """Flattened code → Python; `converted` = PLAIN | CONVERTED | CONVERTED_UNPARSABLE per record."""
    codes, converted = [], []
    for code in batch["code"]:
        code, changed = to_python(code, code_format)
        codes.append(code)
        converted.append(PLAIN if not changed else CONVERTED if parses(code) else CONVERTED_UNPARSABLE)
    out = {"code": codes, "converted": converted}
    if "signature" in batch and any(converted):  # a source's own signature/body follow its code
        split = _add_signature({"code": codes})
        out["signature"] = [s if c else old for s, c, old in zip(split["signature"], converted, batch["signature"])]
        out["body"] = [b if c else old for b, c, old in zip(split["body"], converted, batch["body"])]
    return out


def drop_unparsable(pairs: datasets.Dataset) -> tuple[datasets.Dataset, dict[str, int]]:
    """(pairs without converted code that does not parse, {"converted": n, "dropped_unparsable": n})."""
    flags = pairs.with_format("arrow")[:].column("converted").to_numpy()
    counts = {
        "converted": int((flags != PLAIN).sum()),
        "dropped_unparsable": int((flags == CONVERTED_UNPARSABLE).sum()),
    }
    if counts["dropped_unparsable"]:
        pairs = pairs.filter(lambda b: [c != CONVERTED_UNPARSABLE for c in b], input_columns="converted", batched=True)
    return pairs, counts


def load_pairs(
    source: str | Path,
    *,
    split: str = "train",
    cache_dir: str | None = None,
    num_proc: int | None = None,
    code_format: str = "auto",
) -> datasets.Dataset:
    """The pairs of `source` as a Dataset with the columns `docstring`, `code`, `signature`, `body`,
    `converted`.

    `source`: a .jsonl/.json/.parquet file, a folder written by `Dataset.save_to_disk`, a folder of
    a dataset's data files (a hub dataset downloaded), or a hub dataset name. `code_format`: `flat` converts every record from the paper's flattened format,
    `auto` each record that looks flattened (`codeformat.is_flat`), `plain` none. Missing
    `signature`/`body` columns are derived from `code` (empty when the code has no parsable function).
    """
    import datasets

    if code_format not in CODE_FORMATS:
        raise PairsError(f"code format must be one of {CODE_FORMATS}, got {code_format!r}")
    path = Path(source)
    if path.is_file():
        check_pairs_file(path)
        builder = "parquet" if path.suffix.lower() == ".parquet" else "json"
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
        where = str(path)
    elif (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():  # Dataset.save_to_disk
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
        where = str(path)
    elif path.is_dir():  # a hub dataset's files downloaded (`hf download NAME --repo-type dataset --local-dir DIR`)
        where = f"{path} ({split})"
        try:
            dataset = datasets.load_dataset(str(path), split=split, cache_dir=cache_dir)
        except (OSError, ValueError, datasets.exceptions.DatasetGenerationError) as e:
            raise PairsError(f"{path}: a folder, but neither a saved dataset nor data files of one ({e})") from None
    else:
        where = f"hub dataset {source!r} ({split})"
        with from_hub(str(source), "--pairs", dataset=True):
            dataset = datasets.load_dataset(str(source), split=split, cache_dir=cache_dir)
    missing = [name for name in REQUIRED if name not in dataset.column_names]
    if missing:
        raise PairsError(f"{where}: missing columns {missing} (has {dataset.column_names})")
    if "converted" in dataset.column_names:  # a saved dataset of ours: decide afresh
        dataset = dataset.remove_columns("converted")
    if code_format == "plain":
        dataset = dataset.add_column("converted", [PLAIN] * len(dataset))
    else:
        dataset = dataset.map(
            _convert_code, batched=True, num_proc=num_proc, fn_kwargs={"code_format": code_format}, desc="code format"
        )
    if "signature" not in dataset.column_names or "body" not in dataset.column_names:
        dataset = dataset.remove_columns([c for c in ("signature", "body") if c in dataset.column_names])
        dataset = dataset.map(_add_signature, batched=True, num_proc=num_proc, desc="split signatures")
    return dataset.select_columns(list(COLUMNS))
