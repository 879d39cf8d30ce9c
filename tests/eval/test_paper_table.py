"""Tests of mmpt/eval/paper_table.py: the whole table, end to end, on tiny stand-ins of the six
released checkpoints (tests/authors_layout.py); the numbers are meaningless, the plumbing is tested:
import → generate → execute → pass@k per checkpoint, the table's layout, the comparison with
published figures, and a clear error for a hub name without network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authors_layout import stand_in
from mmpt.eval import paper_table
from mmpt.eval.passk import pass_at_k_metrics, read_results

pytestmark = pytest.mark.usefixtures("one_thread")


def test_wilson_interval_is_the_textbook_one():
    lo, hi = paper_table.wilson(0.5, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    assert paper_table.wilson(0.0, 1)[0] == 0.0 and round(paper_table.wilson(0.0, 1)[1], 4) == 0.7935


# both architectures and all three separations, in three stand-ins (six cost twice the time, test nothing more)
STAND_INS = [("gpt_neo", "none"), ("gpt_neo", "partial"), ("pangu", "full")]


def test_the_table_end_to_end_on_stand_ins(tmp_path: Path, capsys):
    sources = [str(stand_in(tmp_path / "hub" / f"{kind}-{sep}", kind, sep)) for kind, sep in STAND_INS]
    reference = tmp_path / "published.csv"
    reference.write_text(
        "backbone,separation,benchmark,metric,value\n"
        "PyCodeGPT,partial,humaneval,pass@1,0.0\n"
        "PanGu-Coder,full,mbpp,incremental-micro pass@1,90.0\n"
    )
    out = tmp_path / "table"
    args = [*sources, "--out", str(out), "--greedy", "--limit", "1", "--max-new-tokens", "3", "--workers", "2",
            "--reference", str(reference)]  # fmt: skip
    assert paper_table.main(args) == 0
    printed = capsys.readouterr().out
    table, comparison = (out / "table.txt").read_text().rstrip("\n"), (out / "comparison.txt").read_text().rstrip("\n")
    assert printed.endswith(table + "\n\n" + comparison + "\n")
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["backbone", "separation", "HumanEval", "pass@1"] and "MBPP incr. micro pass@1" in lines[0]
    assert [line.split()[:2] for line in lines[1:]] == [["PanGu-Coder", "full"], ["PyCodeGPT", "none"], ["PyCodeGPT", "partial"]]
    # every figure is the pass@k of the results on disk, under the official programs
    names = {"PyCodeGPT": "gpt_neo", "PanGu-Coder": "pangu"}
    for row in lines[1:]:
        folder = out / f"{names[row.split()[0]]}-{row.split()[1]}"
        results = read_results(folder / "humaneval-incremental" / "results.jsonl")
        assert {r["settings"]["prompt_style"] for r in results} == {"paper"} and len(results) > 1
        macro = pass_at_k_metrics(results, [1])["incremental_macro"]["pass@1"]
        plain = pass_at_k_metrics(read_results(folder / "humaneval" / "results.jsonl"), [1])["pass@1"]
        cells = row.split()
        assert float(cells[2]) == pytest.approx(100 * plain, abs=0.005)
        assert float(cells[4]) == pytest.approx(100 * macro, abs=0.005)  # HumanEval incr. macro
    samples = [json.loads(line) for line in (out / "gpt_neo-partial" / "mbpp" / "samples.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["MBPP/11"] and samples[0]["settings"]["greedy"] is True
    rows = comparison.splitlines()[1:]
    assert rows[0].split()[:4] == ["PyCodeGPT", "partial", "humaneval", "pass@1"] and rows[0].endswith("yes")
    assert rows[1].split()[:5] == ["PanGu-Coder", "full", "mbpp", "incremental-micro", "pass@1"] and rows[1].endswith("no")
    # a rerun resumes: nothing is imported, generated or executed again
    stamp = (out / "pangu-full" / "model" / "mmpt.json").stat().st_mtime_ns
    assert paper_table.main(args) == 0 and capsys.readouterr().out.endswith(table + "\n\n" + comparison + "\n")
    assert (out / "pangu-full" / "model" / "mmpt.json").stat().st_mtime_ns == stamp


def test_a_hub_name_offline_is_a_one_line_error_saying_how_to_pass_a_folder(tmp_path: Path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached copy
    assert paper_table.main(["huawei-noah/pycodegpt-CodeCLM-100m", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("mmpt paper-table: source: 'huawei-noah/pycodegpt-CodeCLM-100m' is not a local folder")
    assert "hf download huawei-noah/pycodegpt-CodeCLM-100m --local-dir DIR" in err and "give DIR as source" in err


def test_a_bad_reference_file_names_the_line(tmp_path: Path, capsys):
    bad = tmp_path / "ref.csv"
    bad.write_text("backbone,separation,benchmark,metric,value\nPyCodeGPT,partial,humaneval,pass@3,1.0\n")
    assert paper_table.main([str(tmp_path), "--out", str(tmp_path / "o"), "--reference", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: benchmark must be one of" in err and "'pass@3'" in err
