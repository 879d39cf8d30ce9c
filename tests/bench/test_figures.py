"""bench/figures.py: docs/figures.md's covered rows read as their templates, and the check fails on a
stale figure or a hand-edited cell (the commands themselves run in CI: `.ci/run`)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import figures  # noqa: E402

DOCTOR = next(r for r in figures.ROWS if r.command == "mmpt doctor")


def test_the_table_has_a_date_and_commit_per_row_and_every_covered_row_reads_as_its_template():
    lines = figures.FIGURES.read_text().splitlines()
    _, where = figures.table(lines)
    for what, i in where.items():
        cells = figures.split_cells(lines[i])
        assert len(cells) == len(figures.COLUMNS), (what, cells)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", cells[4]) and re.fullmatch(r"[0-9a-f]{7,}", cells[5]), (what, cells[4:])
    for row in figures.ROWS:
        cells = figures.split_cells(lines[where[row.what]])
        assert f"`{row.command}`" in cells[1], row.what
        fields = figures.read_cell(row, cells[3])
        assert set(row.tolerances) <= set(fields), row.what  # every compared figure is in the cell


def _doctor_output(diff: float, checks: int) -> str:
    """What `mmpt doctor` prints, in the lines that the reader takes."""
    lines = [f"ok    packed gpt2/eager/code-clm  max diff {diff:.1e} (tol 1e-05); eager + dense mask" for _ in range(checks)]
    return "\n".join(
        ["ok    sentinels  comments=1", *lines, "ok    mpi  mpi4py with MPICH", f"{checks + 2}/{checks + 2} checks passed"]
    )


@pytest.fixture
def figures_md(tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "figures.md"
    shutil.copy(figures.FIGURES, copy)
    monkeypatch.setattr(figures, "FIGURES", copy)
    return copy


def _doctor_cell(figures_md: Path) -> str:
    lines = figures_md.read_text().splitlines()
    return figures.split_cells(lines[figures.table(lines)[1][DOCTOR.what]])[3]


def test_check_passes_within_the_tolerance_and_fails_on_a_stale_figure(figures_md, monkeypatch, capsys):
    old = figures.read_cell(DOCTOR, _doctor_cell(figures_md))
    output = {"text": _doctor_output(old["max_diff"] * 3, int(old["checks"]))}  # within x4
    monkeypatch.setattr(figures, "run", lambda command: (output["text"], 1.0))
    assert figures.main(["--check", "packed vs alone"]) == 0
    output["text"] = _doctor_output(old["max_diff"] * 10, int(old["checks"]))
    assert figures.main(["--check", "packed vs alone"]) == 1
    assert f"STALE  {DOCTOR.what}: max_diff" in capsys.readouterr().err
    output["text"] = _doctor_output(old["max_diff"], int(old["checks"]) + 1)  # a check more: exact
    assert figures.main(["--check", "packed vs alone"]) == 1
    # --update writes the rerun's figures with today's date and the commit, and the check then passes
    output["text"] = _doctor_output(old["max_diff"] * 10, int(old["checks"]))
    assert figures.main(["--update", "packed vs alone"]) == 0
    assert figures.read_cell(DOCTOR, _doctor_cell(figures_md))["max_diff"] == pytest.approx(old["max_diff"] * 10, rel=0.05)
    assert figures.main(["--check", "packed vs alone"]) == 0


def test_a_hand_edited_cell_or_an_output_without_the_figure_fails_the_check(figures_md, monkeypatch, capsys):
    monkeypatch.setattr(figures, "run", lambda command: (_doctor_output(1e-7, 28), 1.0))
    figures_md.write_text(figures_md.read_text().replace(_doctor_cell(figures_md), "max abs logit diff ≤ 2e-7 (tolerance 1e-5)"))
    assert figures.main(["--check", "packed vs alone"]) == 1
    assert "does not read as the template" in capsys.readouterr().err
    monkeypatch.setattr(figures, "run", lambda command: ("no packed check in here", 1.0))
    assert figures.main(["--check", "packed vs alone"]) == 1
    assert "its output has no packed check" in capsys.readouterr().err
