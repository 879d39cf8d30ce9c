"""`mmpt extract`: mine (docstring, code) pairs from Python sources with `ast`.

    mmpt extract stdlib src/ one_file.py --out pairs.jsonl --workers 4

One JSON record per function or method that has a non-empty docstring. Every record keeps

    code == signature + "\\n" + body

`signature` is the decorators and the def line(s) up to the header's colon, dedented to column 0
(methods too), without a trailing newline. `body` is the lines after the header with the docstring
statement removed, keeping their indentation relative to `signature`, each line ending in "\\n".
`docstring` is cleaned the way `inspect.cleandoc` cleans it (`ast.get_docstring(clean=True)`).

Files are parsed in parallel; undecodable, unparsable and huge files are skipped and counted;
exact duplicate (docstring, code) pairs are dropped, keeping the first in file order.
"""

from __future__ import annotations

import ast
import hashlib
import io
import multiprocessing
import os
import sys
import sysconfig
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mmpt.cli import command_parser
from mmpt.jsonl import JsonlAppender

STDLIB = "stdlib"  # the word that names the running interpreter's standard library
MAX_FILE_BYTES = 1_000_000
# folders never walked: caches, installed third-party packages (not stdlib), hidden folders
_SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages"}


@dataclass
class ExtractSummary:
    """What one extraction did; `skipped` counts files by reason."""

    files: int = 0
    pairs: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)

    def render(self) -> str:
        skips = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items())) or "none"
        return (
            f"files {self.files}, pairs {self.pairs}, duplicates removed {self.duplicates}, "
            f"files skipped {sum(self.skipped.values())} ({skips})"
        )


def find_sources(sources: list[str]) -> list[tuple[str, str]]:
    """(filesystem path, record path) of every Python file under `sources`, in a stable order.

    The record path is the file's path under the source as the user named it (`stdlib/` for the
    standard library), so that ids do not depend on where the interpreter is installed.
    """
    found: list[tuple[str, str]] = []
    for source in sources:
        if source == STDLIB:
            root, label = Path(sysconfig.get_paths()["stdlib"]), STDLIB
        else:
            root, label = Path(source), source
        if root.is_file():
            found.append((str(root), label))
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"extract: source {source!r} is neither a file, a folder nor {STDLIB!r}")
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if name.endswith(".py"):
                    path = Path(folder) / name
                    found.append((str(path), str(Path(label) / path.relative_to(root))))
    return found


def _decode(data: bytes) -> str:
    """Source text with the PEP 263 encoding, newlines normalised so that ast's line numbers index it."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def header_end(lines: list[str], def_line: int, stop_line: int) -> int:
    """1-based line of the colon that ends the `def` header starting on `def_line`.

    Tokenizes only the lines up to `stop_line` (the first body statement), tracking brackets so
    that colons in annotations, defaults, lambdas and type parameters are not taken for the end.
    """
    chunk = "\n".join(lines[def_line - 1 : stop_line]) + "\n"
    depth = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(chunk).readline):
            if tok.type != tokenize.OP:
                continue
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif tok.string == ":" and depth == 0:
                return def_line + tok.start[0] - 1
    except (tokenize.TokenError, SyntaxError):
        pass  # the chunk may end inside the body; the colon comes before that
    raise ValueError(f"no header colon found after line {def_line}")


def _dedent(line: str, indent: str) -> str:
    """Strip the function's own indentation; lines inside multi-line strings may lack it."""
    if line.startswith(indent):
        return line[len(indent) :]
    return "" if not line.strip() else line


def _pair(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef, docstring: str) -> dict | None:
    """signature / body / code of `node`, or None for a function that has no code to learn from."""
    doc_node = node.body[0]
    if len(node.body) < 2 or node.body[1].lineno == doc_node.end_lineno:
        return None  # docstring-only function, or code sharing the docstring's line
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    colon = header_end(lines, node.lineno, doc_node.lineno)
    if colon >= doc_node.lineno:
        return None  # `def f(): """doc"""` on one line
    first_text = lines[first - 1]
    indent = first_text[: len(first_text) - len(first_text.lstrip())]
    signature = "\n".join(_dedent(line, indent) for line in lines[first - 1 : colon])
    body_lines = [_dedent(line, indent) for line in lines[doc_node.end_lineno : node.end_lineno]]
    while body_lines and not body_lines[0].strip():
        body_lines.pop(0)
    body = "".join(line + "\n" for line in body_lines)
    return {"signature": signature, "body": body, "code": signature + "\n" + body, "line": first}


def _walk(tree: ast.AST):
    """(qualname, function node) of every function in `tree`, with Python's `<locals>` convention."""
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = prefix + child.name
                yield qualname, child
                stack.append((child, qualname + ".<locals>."))
            elif isinstance(child, ast.ClassDef):
                stack.append((child, prefix + child.name + "."))
            else:
                stack.append((child, prefix))


def extract_file(path: str, record_path: str, max_file_bytes: int = MAX_FILE_BYTES) -> tuple[list[dict], str | None]:
    """(pairs of one file in source order, skip reason or None)."""
    try:
        if os.path.getsize(path) > max_file_bytes:
            return [], "too_large"
        data = Path(path).read_bytes()
    except OSError:
        return [], "unreadable"
    try:
        text = _decode(data)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return [], "undecodable"
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return [], "syntax_error"
    except (RecursionError, MemoryError):
        return [], "too_complex"
    lines = text.split("\n")
    pairs = []
    for qualname, node in _walk(tree):
        docstring = ast.get_docstring(node, clean=True)
        if not docstring or not docstring.strip():
            continue
        try:
            pair = _pair(lines, node, docstring)
        except ValueError:
            continue
        if pair is None:
            continue
        pairs.append(
            {
                "id": f"{record_path}:{qualname}:{pair['line']}",
                "name": node.name,
                "qualname": qualname,
                "path": record_path,
                "line": pair["line"],
                "docstring": docstring,
                "signature": pair["signature"],
                "body": pair["body"],
                "code": pair["code"],
            }
        )
    pairs.sort(key=lambda p: p["line"])
    return pairs, None


def _extract_task(task: tuple[str, str, int]) -> tuple[list[dict], str | None]:
    return extract_file(*task)


def extract_pairs(
    sources: list[str], out: str | Path, workers: int | None = None, max_file_bytes: int = MAX_FILE_BYTES
) -> ExtractSummary:
    """Write the pairs of every Python file under `sources` to the JSONL file `out`."""
    files = find_sources(sources)
    tasks = [(path, label, max_file_bytes) for path, label in files]
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    summary = ExtractSummary(files=len(files))
    seen: set[bytes] = set()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    from tqdm import tqdm  # inside: `mmpt execute` reaches this module and needs no progress bar from it

    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        # imap keeps file order, so the output (and which duplicate survives) is deterministic
        results = pool.imap(_extract_task, tasks, chunksize=8) if pool else map(_extract_task, tasks)
        tmp.unlink(missing_ok=True)
        with JsonlAppender(tmp, durable=False) as f:  # renamed into place only when complete
            for pairs, skip in tqdm(results, total=len(tasks), desc="extract", unit="file", disable=None):
                if skip:
                    summary.skipped[skip] += 1
                for pair in pairs:
                    key = hashlib.sha1((pair["docstring"] + "\0" + pair["code"]).encode()).digest()
                    if key in seen:
                        summary.duplicates += 1
                        continue
                    seen.add(key)
                    f.write(pair)
                    summary.pairs += 1
    finally:
        if pool:
            pool.close()
            pool.join()
    tmp.replace(out)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("mmpt extract", __doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help=f"folders, .py files, or {STDLIB!r} for this interpreter's library")
    parser.add_argument("--out", required=True, help="output JSONL file of pairs")
    parser.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    parser.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES, help="skip larger source files (bytes)")
    args = parser.parse_args(argv)
    try:
        summary = extract_pairs(args.sources, args.out, args.workers, args.max_file_bytes)
    except FileNotFoundError as e:
        print(f"mmpt extract: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summary.render()}")
    return 0
