"""mmpt/demo/report.py on a hand-made run folder whose pass@k, similarities and losses are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmpt.demo import report

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SETTINGS = {
    "sources": ["stdlib"], "vocab_size": 4096, "max_seq_length": 512, "ranks": 2, "per_device_batch_size": 4,
    "backbone_steps": 30, "further_steps": 20, "n_samples": 5, "temperature": 0.8, "top_p": 0.95,
    "max_new_tokens": 128, "ks": [1, 5],
}  # fmt: skip
SIMS = {10: [1.0, 0.5, 0.0], 20: [0.9, 0.2, -0.5]}  # step -> cosine of each separated token, logged


def pass_at_k(n: int, c: int, k: int) -> float:
    """The textbook binomial form, independent of mmpt.eval.passk's product form."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def samples(task: str, n: int, c: int, **extra) -> list[dict]:
    return [{"task_id": task, "completion_id": i, "passed": i < c, "generated": "    return x\n", **extra} for i in range(n)]


def save_model(directory: Path, separated: list[int], flip: int | None) -> None:
    """A tiny Llama with the test tokenizer; for a separated model, code copy i = NL row of
    separated[i], negated for copy `flip` (cosine -1) and exact for the rest (cosine 1)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.data.separation import SeparationMap
    from mmpt.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(ASSETS / "tokenizer"))
    smap = SeparationMap("partial" if separated else "none", len(tokenizer), separated,
                         tokenizer.convert_ids_to_tokens(separated))  # fmt: skip
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=2, vocab_size=smap.vocab_size)  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        w = model.get_input_embeddings().weight
        for i, original in enumerate(separated):
            w[smap.base_vocab_size + i] = -w[original] if i == flip else w[original]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    smap.save(directory)


def write_train_config(run: Path, objective: str, deepspeed: str = "ds_configs/zero3.json") -> None:
    """What `mmpt train` saves beside its checkpoints (the fields the report reads)."""
    (run / "train_config.yaml").write_text(f"objective: {objective}\ndeepspeed: {deepspeed}\nseed: 42\n")


LABELS = {"separated": "separated (partial, Code CLM)", "baseline": "baseline (none, Code CLM)"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path_factory.mktemp("demo")
    (out / "demo_config.json").write_text(json.dumps(SETTINGS))
    for separation, n_sep in (("none", 0), ("partial", 3)):
        meta = {"pairs": 100, "instances": 90, "tokens": 5000, "rows": 12, "separated_tokens": n_sep}
        (out / "data" / separation).mkdir(parents=True)
        (out / "data" / separation / "meta.json").write_text(json.dumps(meta))
    write_jsonl(out / "backbone" / "metrics.jsonl",
                [{"step": s, "loss_nl": 8.0 - s / 10, "loss_code": 7.0 - s / 10, "tokens_seen": 100 * s} for s in (5, 10, 30)])  # fmt: skip
    for model, last in (("separated", 4.0), ("baseline", 4.5)):
        write_jsonl(
            out / model / "metrics.jsonl", [{"step": 10, "loss_code": 6.0}, {"step": 20, "loss_code": last, "tokens_seen": 999}]
        )
    writer = SummaryWriter(str(out / "separated" / "tensorboard"))
    for step, values in SIMS.items():
        writer.add_histogram(report.SIMILARITY_TAG, torch.tensor(values), step)
    writer.close()
    # three separated token ids of the test tokenizer; the second copy is flipped
    save_model(out / "separated" / "final", [10, 20, 30], flip=1)
    save_model(out / "baseline" / "final", [], flip=None)
    save_model(out / "backbone" / "final", [], flip=None)
    for run, objective in (("backbone", "text-code-clm"), ("separated", "code-clm"), ("baseline", "code-clm")):
        write_train_config(out / run, objective)

    # plain: separated passes 2/5 on A and 0/5 on B; baseline nothing. greedy: separated passes A
    eval_ = out / "eval"
    write_jsonl(eval_ / "separated" / "sampled.results.jsonl", samples("A", 5, 2) + samples("B", 5, 0))
    write_jsonl(eval_ / "baseline" / "sampled.results.jsonl", samples("A", 5, 0) + samples("B", 5, 0))
    write_jsonl(eval_ / "separated" / "greedy.results.jsonl", samples("A", 1, 1) + samples("B", 1, 0))
    write_jsonl(eval_ / "baseline" / "greedy.results.jsonl", samples("A", 1, 0) + samples("B", 1, 0))
    # incremental, 4 lines per problem: fractions 0, .25, .5, .75 -> one task per bin and problem
    for model, passing in (("separated", {"A#3", "B#3", "A#2"}), ("baseline", {"A#3"})):
        rows = [
            {"task_id": f"{p}#{i}", "completion_id": 0, "passed": f"{p}#{i}" in passing, "given_lines": i,
             "total_lines": 4, "generated": f"    return {p}{i}\n"}
            for p in "AB" for i in range(4)
        ]  # fmt: skip
        write_jsonl(eval_ / model / "incremental.results.jsonl", rows)
    (out / "stages").mkdir()
    # finished in this order: a launch stage (its commands per rank), then an old marker without CPU seconds
    (out / "stages" / "train.json").write_text(json.dumps({"seconds": 300.0, "cpu_seconds": 500.0, "finished": 0}))
    (out / "stages" / "pairs.json").write_text(json.dumps({"seconds": 60.0, "finished": 1}))
    for rank, (seconds, cpu) in enumerate(((200.0, 190.0), (199.0, 180.0))):
        (out / "stages" / f"train.parts.rank{rank}.jsonl").write_text(
            json.dumps({"name": "train-backbone", "rank": rank, "seconds": seconds, "cpu_seconds": cpu}) + "\n"
        )
    report.write_report(out)
    return out


def test_passk_tables_match_the_binomial_formula(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    sep_p1 = (pass_at_k(5, 2, 1) + pass_at_k(5, 0, 1)) / 2  # 20%
    sep_p5 = (pass_at_k(5, 2, 5) + pass_at_k(5, 0, 5)) / 2  # 50%
    row = f"| {LABELS['separated']} | 50.0% | {100 * sep_p1:.1f}% | {100 * sep_p5:.1f}% |"
    assert row in md
    assert f"| {LABELS['baseline']} | 0.0% | 0.0% | 0.0% |" in md
    assert "2 of 164 problems plain" in md and "2 of the 164 problems (A, B) made into 8 incremental tasks" in md


def test_incremental_breakdown_by_fraction(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    # separated: bin 0.75-1 holds A#3, B#3 (both pass), bin 0.5-0.75 holds A#2 (pass), B#2
    assert "| 75–100% | 100.0% | 50.0% | 2 |" in md
    assert "| 50–75% | 50.0% | 0.0% | 2 |" in md
    assert "| 0–25% | 0.0% | 0.0% | 2 |" in md
    assert f"| all | {100 * 3 / 8:.1f}% | {100 * 1 / 8:.1f}% | 8 |" in md
    # 2 tasks pass only with the separated model, none only with the baseline: p = 2 * (1/2)^2
    assert "2 tasks pass only with the separated model and 0 only with the baseline" in md
    assert "p = 0.50" in md
    assert "A#2, 2 of 4 lines" in md  # the example: the passing task given the least
    assert "The tasks are those of 2 of the 164 problems (A, B)." in md
    first = report.incremental_subset_words({f"HumanEval/{i}" for i in range(64)}, 164)
    assert first.startswith("the first 64 of the 164 problems (HumanEval/0 to HumanEval/63: a fixed subset")
    assert report.incremental_subset_words({f"HumanEval/{i}" for i in range(164)}, 164) == "all 164 problems"


def test_loss_table_and_honest_prose(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    assert "| backbone | NL | 7.500 | 5.000 | 30 | 3,000 |" in md
    assert "| separated | code | 6.000 | 4.000 | 20 | 999 |" in md
    assert "| baseline | code | 6.000 | 4.500 | 20 | 999 |" in md
    assert "near zero" not in md  # the best pass@5 is 50%: the near-zero sentence must not appear
    stages = md[md.index("## Where the time went") :]
    assert stages.index("| train |") < stages.index("train-backbone") < stages.index("pairs")  # run order


def test_timing_table_lists_a_launch_its_commands_and_the_total(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    assert "| train | 300 | 500 |" in md
    assert "| · train-backbone | 200 | 370 |" in md  # the slowest rank's wall, both ranks' CPU
    assert "| pairs | 60 | – |" in md  # a marker written before CPU seconds were
    assert "| **total** | **360** (6 min 00 s) | 500 |" in md  # the stages, not their commands again


def test_similarity_from_tensorboard_and_checkpoint(run_dir: Path) -> None:
    curve = report.read_similarity(run_dir / "separated" / "tensorboard")
    assert curve.steps == sorted(SIMS)
    for i, values in enumerate(SIMS.values()):
        assert curve.mean[i] == pytest.approx(sum(values) / len(values), abs=1e-6)
        assert (curve.low[i], curve.high[i]) == pytest.approx((min(values), max(values)), abs=1e-6)
    final = report.final_similarity(run_dir / "separated" / "final")
    assert [c for _, c in final] == pytest.approx([-1.0, 1.0, 1.0], abs=1e-5)
    from mmpt.data.tokenizer import load_tokenizer

    assert final[0][0] == load_tokenizer(str(ASSETS / "tokenizer")).decode([20])  # the flipped copy's token


def test_plots_are_pngs(run_dir: Path) -> None:
    import matplotlib.image

    for name in ("passk", "incremental", "loss", "similarity"):
        path = run_dir / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(path).shape
        assert width >= 600 and height >= 300
        assert f"(plots/{name}.png)" in (run_dir / "report.md").read_text()


def test_sign_test() -> None:
    assert report.sign_test_p(0, 0) == 1.0
    assert report.sign_test_p(3, 3) == 1.0
    assert report.sign_test_p(5, 0) == pytest.approx(2 / 32)
    assert report.sign_test_p(1, 9) == pytest.approx(2 * (1 + 10) / 1024)


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="demo_config.json"):
        report.write_report(tmp_path)
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1, "loss": 2}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        report.read_metrics(bad)
    assert report.main([str(tmp_path)]) == 2


def test_outcome_table(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    # separated sampled: 2 of 10 pass; the fixture's failures have no detail -> runtime error
    assert "| separated | sampled | 20.0% | 0.0% | 80.0% | 0.0% | 0.0% | 10 |" in md


def test_score_section_compares_separated_and_baseline(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    from mmpt.eval.score import compare, read_scores

    assert "mmpt score" not in (run_dir / "report.md").read_text()  # no score files: no section
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    for model, shift in (("separated", -0.5), ("baseline", 0.0)):  # separated lower on every problem
        write_jsonl(out / "eval" / model / "score.jsonl",
                    [{"task_id": f"T/{i}", "completion_id": 0, "nll": 3.0 + i / 10 + shift} for i in range(20)])  # fmt: skip
    report.write_report(out)
    md = (out / "report.md").read_text()
    result = compare(
        read_scores(out / "eval" / "separated" / "score.jsonl"), read_scores(out / "eval" / "baseline" / "score.jsonl")
    )
    assert "## Likelihood of the reference solutions (`mmpt score`)" in md
    assert f"{result['difference']:+.3g}" in md and "difference separated − baseline -0.5 nats" in md
    assert "The interval excludes 0: separated" in md


def test_prose_comes_from_the_runs_config(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    assert "`llama` model" in md and "Llama-style" not in md  # the exported config's model_type
    assert "(Text-Code CLM, no separation)" in md and "DeepSpeed ZeRO-3 ranks" in md
    assert "75% or more of the body" in md  # the last of passk.FRACTION_BINS


def test_other_objective_and_zero_stage_change_the_words(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    for model in ("separated", "baseline"):
        write_train_config(other / model, "prefix-code-clm", deepspeed="ds_configs/zero2.json")
    md = report.write_report(other).read_text()
    assert "| separated (partial, Prefix-Code CLM) |" in md and "Code CLM)" not in md.replace("Prefix-Code CLM", "")
    assert "DeepSpeed ZeRO-2/ZeRO-3 ranks" in md  # backbone ZeRO-3, further runs ZeRO-2
    assert "Prefix-Code CLM trains only on code tokens" in md


def test_objective_names() -> None:
    assert report.objective_name("text-code-clm") == "Text-Code CLM"
    assert report.objective_name("corrupt-code-clm") == "Corrupt-Code CLM"


def test_parse_rate_uses_the_passk_bins() -> None:
    rows = [{"task_id": "A#3", "passed": False, "status": "failed", "detail": "SyntaxError", "given_lines": 3, "total_lines": 4},
            {"task_id": "A#0", "passed": False, "status": "failed", "detail": "AssertionError", "given_lines": 0, "total_lines": 4}]  # fmt: skip
    assert report.parse_rate_by_fraction(rows) == {"0.75-1.00": 0.0, "0.00-0.25": 1.0, "all": 0.5}


def test_watch_section_shows_pass_at_1_and_parses_by_checkpoint_and_its_cost(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    assert "mmpt watch" not in (run_dir / "report.md").read_text()  # no watch records: no section
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    # per model and checkpoint: (passed, detail) of 2 greedy completions
    runs = {
        "separated": {10: [(False, "SyntaxError: x"), (False, "AssertionError")], 20: [(True, ""), (False, "AssertionError")]},
        "baseline": {10: [(False, "SyntaxError: x"), (False, "IndentationError: y")], 20: [(False, "NameError: z"), (False, "TabError")]},
    }  # fmt: skip
    for model, checkpoints in runs.items():
        folder = out / model / "watch" / "humaneval"
        records = []
        for step, results in checkpoints.items():
            name = f"step_{step:08d}"
            rows = [{"task_id": f"T/{i}", "completion_id": 0, "passed": p, "status": "passed" if p else "failed", "detail": d}
                    for i, (p, d) in enumerate(results)]  # fmt: skip
            write_jsonl(folder / name / "plain.results.jsonl", rows)
            records.append({"step": step, "checkpoint": name, "pass@1": sum(p for p, _ in results) / 2, "n_tasks": 2,
                            "seconds": {"total": 3.0 if step == 10 else 5.0}})  # fmt: skip
        write_jsonl(folder / "passk.jsonl", records[::-1])  # read back by step
    (out / "stages" / "watch.json").write_text(json.dumps({"seconds": 40.0, "cpu_seconds": 30.0, "finished": 0.5}))
    report.write_report(out)
    md = (out / "report.md").read_text()
    assert "## pass@1 as the models train (`mmpt watch`)" in md and "(plots/watch.png)" in md
    assert "| step | separated pass@1 | baseline pass@1 | separated parses | baseline parses |" in md
    assert "| 10 | 0.0% | 0.0% | 50.0% | 0.0% |" in md
    assert "| 20 | 50.0% | 0.0% | 100.0% | 50.0% |" in md
    # 40 s of the 400 s the stages took; 4 s per checkpoint on average
    assert "The stage took 40 s (10% of the demo's wall time, 30 CPU-seconds), 4.0 s per checkpoint" in md
    assert "pass@1 from the first checkpoint to the last: 0.0% → 50.0% (separated), 0.0% → 0.0% (baseline)" in md
    assert (out / "plots" / "watch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
