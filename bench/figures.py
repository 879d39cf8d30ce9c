"""The measured figures (docs/figures.md), rerun: the rows this script covers, their commands, results and tolerances.

    python bench/figures.py --check --quick     # the rows that take seconds, against docs/figures.md (CI runs this)
    python bench/figures.py --check             # every row it covers (minutes: BlockMask at N=8192, loss memory)
    python bench/figures.py --update [--quick] [WHAT...]   # rerun, rewrite result, date and commit of those rows
    python bench/figures.py --list              # the rows, their commands and each figure's tolerance

A covered row's result cell is its template with the figures of one run filled in. `--check` runs
each command once, reads its figures from the output, reads the table's figures back through the
same template, and fails on a figure that differs by more than its tolerance, on a cell that no
longer reads as its template (edited by hand), and on a command that fails. `--update` writes the
new cells, the date and the commit (`+` when tracked files differed from it). WHAT selects rows by
a piece of their first cell. Rows the script does not cover (execution, generation and training
throughput, the demo, the test suite: slow, or timings of a loaded machine) keep their cells.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures.md"
SECTION = "# Measured figures"
COLUMNS = ["what", "command", "machine", "result", "date", "commit"]
NUMBER = r"[-+]?(?:\d[\d,]*)?\.?\d+(?:e[-+]?\d+)?"


@dataclass(frozen=True)
class Tol:
    """How far a rerun may lie from the table's figure: |new - old| <= abs + rel * |old|, or, with
    `factor`, new / old within [1 / factor, factor] (for figures that only keep their magnitude)."""

    abs: float = 0.0
    rel: float = 0.0
    factor: float = 0.0

    def ok(self, new, old) -> bool:
        if isinstance(new, str) or isinstance(old, str):
            return new == old
        if self.factor:
            return old > 0 and new > 0 and 1 / self.factor <= new / old <= self.factor
        return abs(new - old) <= self.abs + self.rel * abs(old)

    def __str__(self) -> str:
        if self.factor:
            return f"within x{self.factor:g}"
        parts = [f"±{self.abs:g}"] * bool(self.abs) + [f"±{self.rel:.0%}"] * bool(self.rel)
        return " + ".join(parts) or "exact"


EXACT = Tol()


@dataclass(frozen=True)
class Row:
    """One covered row: found by its first cell, `command` is what its command cell shows and what runs."""

    what: str
    command: str
    template: str  # the result cell; {name:format} fields come from `read(output)` (plus `load`)
    read: Callable[[str], dict]
    tolerances: dict  # field -> Tol; a field without one is shown, never compared (times, load)
    quick: bool  # seconds: CI checks it


def _find(pattern: str, text: str, what: str) -> re.Match:
    match = re.search(pattern, text, re.M)
    if match is None:
        raise ValueError(f"its output has no {what} (pattern {pattern!r})")
    return match


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def read_packing(out: str) -> dict:
    """bench/packing.py: fill of both packings, the per-chunk fills, and the mask data per batch."""
    fields = {
        "next_fit": _num(_find(r"^next-fit, corpus order\s+\d+\s+([\d.]+)%", out, "next-fit fill")[1]),
        "fill": _num(_find(r"^best-fit decreasing\s+\d+\s+([\d.]+)%", out, "best-fit fill")[1]),
    }
    whole = _find(r"corpus ×16 \(([\d,]+) tokens\): whole corpus ([\d.]+)% \((\d+) rows\)", out, "whole-corpus fill")
    fields |= {"tokens_m": _num(whole[1]) / 1e6, "whole": _num(whole[2]), "whole_rows": int(whole[3])}
    for budget, fill, rows in re.findall(r"chunks of\s+([\d,]+) tokens \(\s*\d+ chunks\): ([\d.]+)% \(([-+]\d+) rows\)", out):
        power = int(_num(budget)).bit_length() - 1
        fields |= {f"c{power}": _num(fill), f"d{power}": int(rows)}
    fields["ours_mb"] = _num(_find(r"^ours: position ids \+ modality\s+[\d,]+\s+([\d.]+)", out, "mask data of ours")[1])
    fields["bool_ratio"] = _num(_find(r"^dense bool\s+[\d,]+\s+[\d.]+\s+(\d+)x", out, "dense bool ratio")[1])
    paper = _find(r"^paper reference \(measured\)\s+[\d,]+\s+([\d.]+)\s+(\d+)x", out, "paper reference")
    fields |= {"paper_mb": _num(paper[1]), "paper_ratio": _num(paper[2])}
    return fields


def read_block_mask(out: str) -> dict:
    """bench/block_mask.py: extra peak and seconds of both builds, the ratio, whether the blocks agree."""
    ours = _find(r"^ours \(instance boundaries\)\s+extra peak\s+([\d.]+) MB\s+([\d.]+) s", out, "line of ours")
    eager = _find(r"^eager create_block_mask\s+extra peak\s+([\d.]+) MB\s+([\d.]+) s", out, "line of the eager build")
    ratio = _find(r"^ratio eager / ours: (\d+)x less; same blocks: (\w+)", out, "ratio")
    skipped = _find(r"\(([\d.]+)% of blocks skipped\)", out, "sparsity")
    return {
        "ours_mb": _num(ours[1]),
        "ours_s": _num(ours[2]),
        "eager_mb": _num(eager[1]),
        "eager_s": _num(eager[2]),
        "ratio": _num(ratio[1]),
        "same": "the same blocks" if ratio[2] == "True" else "DIFFERENT blocks",
        "skipped": _num(skipped[1]),
    }


def read_loss_memory(out: str) -> dict:
    """bench/loss_memory.py: extra peak of both paths, the weight gradient, the (equal) losses."""
    stock = _find(r"^stock head \+ modality_loss\s+extra peak\s+([\d.]+) GB.*loss ([\d.]+)", out, "line of the stock path")
    fused = _find(r"^fused head \+ loss\s+extra peak\s+([\d.]+) GB.*loss ([\d.]+)", out, "line of the fused path")
    if abs(_num(stock[2]) - _num(fused[2])) > 1e-5:
        raise ValueError(f"the two paths' losses differ: {stock[2]} vs {fused[2]}")
    return {
        "stock_gb": _num(stock[1]),
        "fused_gb": _num(fused[1]),
        "ratio": _num(_find(r"^ratio stock / fused: ([\d.]+)x less", out, "ratio")[1]),
        "wgrad_gb": _num(_find(r"the weight gradient \(both paths\) is ([\d.]+) GB", out, "weight gradient")[1]),
        "loss": _num(fused[2]),
    }


def read_doctor(out: str) -> dict:
    """`mmpt doctor`: the largest packed-vs-alone logit difference over its packed checks."""
    diffs = [float(d) for d in re.findall(r"^(?:ok|FAIL)\s+packed \S+\s+max diff (\S+) ", out, re.M)]
    if not diffs:
        raise ValueError("its output has no packed check")
    return {"max_diff": max(diffs), "checks": len(diffs)}


ROWS = [
    Row(
        "packing fill, stdlib pairs, 2048 tokens",
        "python bench/packing.py",
        "{fill:.2f}% (best-fit decreasing) vs {next_fit:.2f}% next-fit in order; goal ≥ 97%",
        read_packing,
        {"fill": Tol(abs=0.05), "next_fit": Tol(abs=0.05)},
        quick=True,
    ),
    Row(
        "mask/boundary data per 8×2048 batch",
        "python bench/packing.py",
        "{ours_mb:.3f} MB (position ids + modality) vs {paper_mb:.1f} MB dense as in the paper's code: "
        "{paper_ratio:.0f}× less ({bool_ratio:.0f}× vs a dense bool mask); goal ≥ 100×",
        read_packing,
        {"ours_mb": EXACT, "paper_mb": EXACT, "paper_ratio": EXACT, "bool_ratio": EXACT},
        quick=True,
    ),
    Row(
        "fill of per-chunk packing (how `mmpt prepare` streams), stdlib pairs ×16, 2048 tokens",
        "python bench/packing.py",
        "{tokens_m:.1f}M tokens; whole corpus {whole:.2f}% ({whole_rows:,d} rows); chunks of 2^24 tokens (the default) "
        "{c24:.2f}% ({d24:+d} rows), 2^22 {c22:.2f}% ({d22:+d}), 2^20 {c20:.2f}% ({d20:+d}), 2^18 {c18:.2f}% ({d18:+d})",
        read_packing,
        {"tokens_m": Tol(rel=0.01), "whole": Tol(abs=0.05), "whole_rows": Tol(rel=0.01)}
        | {f"c{p}": Tol(abs=0.05) for p in (18, 20, 22, 24)}
        | {f"d{p}": Tol(abs=10) for p in (18, 20, 22, 24)},
        quick=True,
    ),
    Row(
        "flex BlockMask build, extra peak memory, B=8 N=8192, prefix-code-clm rows",
        "python bench/block_mask.py --batch 8 --seq 8192",
        "{ours_mb:.1f} MB (ours, from instance boundaries, {ours_s:.2f} s) vs {eager_mb:.1f} MB for eager "
        "`create_block_mask` ({eager_s:.1f} s): **{ratio:,.0f}× less** (goal ≤ 64 MB); {same}; "
        "{skipped:.1f}% of blocks skipped (load {load:.1f}; memory, not time, is the figure)",
        read_block_mask,
        # ours is a few MB of resident pages: allocator noise moves it by about 1 MB between runs
        {"ours_mb": Tol(abs=2.0), "eager_mb": Tol(rel=0.05), "ratio": Tol(rel=0.4), "same": EXACT, "skipped": Tol(abs=0.1)},
        quick=False,
    ),
    Row(
        "flex BlockMask build, extra peak memory, B=8 N=2048, prefix-code-clm rows",
        "python bench/block_mask.py --batch 8 --seq 2048",
        "{ours_mb:.1f} MB (ours, {ours_s:.2f} s) vs {eager_mb:.1f} MB for eager `create_block_mask` ({eager_s:.1f} s): "
        "{ratio:,.0f}× less; {same}; {skipped:.1f}% of blocks skipped (load {load:.1f})",
        read_block_mask,
        {"ours_mb": Tol(abs=1.0), "eager_mb": Tol(rel=0.05), "same": EXACT, "skipped": Tol(abs=0.1)},  # ratio: of ~1 MB
        quick=True,
    ),
    Row(
        "loss memory, forward + backward, B=2 N=2048 V=151,936 H=896 bf16",
        "python bench/loss_memory.py",
        "extra peak {fused_gb:.2f} GB fused vs {stock_gb:.2f} GB stock head + `modality_loss`: **{ratio:.1f}× less** "
        "(goal ≤ 0.6 GB and ≥ 10×); both include the {wgrad_gb:.2f} GB weight gradient; same loss {loss:.6f}",
        read_loss_memory,
        {"fused_gb": Tol(abs=0.05), "stock_gb": Tol(rel=0.05), "ratio": Tol(rel=0.15), "wgrad_gb": EXACT, "loss": Tol(abs=1e-5)},
        quick=False,
    ),
    Row(
        "packed vs alone, every objective and verified attention path",
        "mmpt doctor",
        "max abs logit diff {max_diff:.1e} over its {checks:d} packed checks (tolerance 1e-5)",
        read_doctor,
        # float rounding: its size moves with the thread count and the CPU's kernels, not its magnitude
        {"max_diff": Tol(factor=4), "checks": EXACT},
        quick=True,
    ),
]


# ---------------------------------------------------------------------------- the table in docs/figures.md


def split_cells(line: str) -> list[str]:
    """The cells of a table line `| a | b |`; a `|` inside backticks belongs to its cell."""
    cells, current, code = [], "", False
    for char in line.strip()[1:-1]:
        if char == "`":
            code = not code
        if char == "|" and not code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    return [*cells, current.strip()]


def table(lines: list[str]) -> tuple[int, dict[str, int]]:
    """(index of the header line, {first cell: line index}) of the figures table."""
    start = lines.index(SECTION)
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("| what |"))
    if split_cells(lines[header]) != COLUMNS:
        raise SystemExit(f"docs/figures.md:{header + 1}: the table's columns are {split_cells(lines[header])}, not {COLUMNS}")
    rows, i = {}, header + 2
    while i < len(lines) and lines[i].startswith("|"):
        rows[split_cells(lines[i])[0]] = i
        i += 1
    return header, rows


def field_pattern(template: str) -> re.Pattern:
    """The template as a regex: literal text as is, each {name:format} field a group (numbers, or any text)."""
    out, pos = "", 0
    for match in re.finditer(r"\{(\w+)(?::([^}]*))?\}", template):
        out += re.escape(template[pos : match.start()])
        numeric = (match[2] or "")[-1:] in ("f", "d", "e", "g", ",")
        out += f"(?P<{match[1]}>{NUMBER if numeric else '.+?'})"
        pos = match.end()
    return re.compile(out + re.escape(template[pos:]))


def read_cell(row: Row, cell: str) -> dict:
    match = field_pattern(row.template).fullmatch(cell)
    if match is None:
        raise ValueError(f"its result cell does not read as the template {row.template!r}: {cell!r}")
    return {k: v if not re.fullmatch(NUMBER, v) else _num(v) for k, v in match.groupdict().items()}


# ---------------------------------------------------------------------------- running


def run(command: str) -> tuple[str, float]:
    """(output, load average before) of a row's command, run from the repository's root with this interpreter."""
    words = shlex.split(command)
    env = dict(os.environ)
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    program = {"python": [sys.executable], "mmpt": [sys.executable, "-m", "mmpt"]}[words[0]]
    load = os.getloadavg()[0]
    print(f"$ {command}", flush=True)
    proc = subprocess.run([*program, *words[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"`{command}` failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout, load


def commit() -> str:
    """HEAD's short hash, `+` when tracked files other than docs/figures.md differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
    dirty = [line for line in changed.stdout.splitlines() if not line.endswith(" docs/figures.md")]
    return head + "+" * bool(dirty) if head else "?"


def select(args: argparse.Namespace) -> list[Row]:
    rows = [r for r in ROWS if (r.quick or not args.quick) and (not args.what or any(w in r.what for w in args.what))]
    if not rows:
        raise SystemExit(f"no covered row matches {args.what}; --list names them")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="rerun and compare with docs/figures.md")
    mode.add_argument("--update", action="store_true", help="rerun and rewrite the rows in docs/figures.md")
    mode.add_argument("--list", action="store_true", help="the covered rows and their tolerances")
    p.add_argument("--quick", action="store_true", help="only the rows that take seconds (what CI checks)")
    p.add_argument("what", nargs="*", help="rows whose first cell contains one of these")
    args = p.parse_args(argv)
    if args.list:
        for row in ROWS:
            tolerances = ", ".join(f"{k} {t}" for k, t in row.tolerances.items())
            print(f"{'quick' if row.quick else 'slow '}  {row.what}\n       `{row.command}`; {tolerances}")
        return 0
    lines = FIGURES.read_text().splitlines()
    _, where = table(lines)
    outputs: dict[str, tuple[str, float]] = {}
    problems, today, measured = [], datetime.date.today().isoformat(), commit()
    for row in select(args):
        if row.what not in where:
            problems.append(f"{row.what}: no such row in docs/figures.md's table")
            continue
        cells = split_cells(lines[where[row.what]])
        if f"`{row.command}`" not in cells[1]:
            problems.append(f"{row.what}: its command cell does not show `{row.command}`")
        if row.command not in outputs:
            outputs[row.command] = run(row.command)
        out, load = outputs[row.command]
        try:
            new = row.read(out) | {"load": load}
            cell = row.template.format(**new)
            old = None if args.update else read_cell(row, cells[3])
        except (ValueError, KeyError) as e:
            problems.append(f"{row.what}: {e}")
            continue
        if args.update:
            cells[3:] = [cell, today, measured]
            lines[where[row.what]] = "| " + " | ".join(cells) + " |"
            print(f"  {row.what}: {cell}")
            continue
        off = [f"{k} {new[k]} vs the table {old[k]} ({t})" for k, t in row.tolerances.items() if not t.ok(new[k], old[k])]
        status = "off: " + "; ".join(off) if off else "ok"
        print(f"  {row.what}: {status} (table of {cells[4]}, {cells[5]})")
        problems += [f"{row.what}: {o}" for o in off]
    if args.update:
        FIGURES.write_text("\n".join(lines) + "\n")
    for problem in problems:
        print(f"STALE  {problem}", file=sys.stderr)
    if problems:
        print("rerun with --update to rewrite the rows from their commands (and commit docs/figures.md)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
