"""mmpt/demo/stages.py: stage running, resumption, loud failures, launches, and `mmpt demo --quick` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmpt.demo import stages as demo
from mmpt.demo.layout import MODELS
from mmpt.demo.timing import finished

ROOT = Path(__file__).resolve().parents[2]


def test_stages_run_once_and_a_rerun_skips_them(tmp_path: Path) -> None:
    calls: list[str] = []

    def stage(name: str) -> demo.Stage:
        return demo.Stage(name, f"stage {name}", lambda log: calls.append(name))

    said: list[str] = []
    times = demo.run_stages([stage("a"), stage("b")], tmp_path, echo=said.append)
    assert calls == ["a", "b"] and set(times) == {"a", "b"}
    assert json.loads((tmp_path / "stages" / "a.json").read_text())["seconds"] >= 0
    assert any("[2/2] stage b" in line and "demo time" in line for line in said)
    demo.run_stages([stage("a"), stage("b"), stage("c")], tmp_path, echo=said.append)
    assert calls == ["a", "b", "c"]  # a and b had markers
    assert any("stage a: done earlier, skipped" in line for line in said)


def test_a_failing_stage_names_itself_and_its_log(tmp_path: Path) -> None:
    def broken(log: Path) -> None:
        raise ValueError("no pairs in the input")

    after: list[str] = []
    stages = [demo.Stage("prepare-none", "pack", broken), demo.Stage("later", "later", lambda log: after.append("x"))]
    with pytest.raises(demo.DemoError, match=r"'prepare-none' failed: ValueError: no pairs.*prepare-none\.log"):
        demo.run_stages(stages, tmp_path, echo=lambda s: None)
    assert "Traceback" in (tmp_path / "logs" / "prepare-none.log").read_text()
    assert not after and not (tmp_path / "stages" / "prepare-none.json").exists()  # a rerun retries it


def test_run_logged_streams_and_names_the_log(tmp_path: Path, capfd) -> None:
    log = tmp_path / "one.log"
    demo.run_logged("one", [sys.executable, "-c", "print('hello from the stage')"], log)
    assert "hello from the stage" in log.read_text()
    assert "hello from the stage" in capfd.readouterr().out  # streamed to the console too
    with pytest.raises(demo.DemoError, match=r"'bad' failed: .* exited with 3; see .*bad\.log"):
        demo.run_logged("bad", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "bad.log")


def test_torchrun_starts_the_ranks_and_stops_the_survivors(tmp_path: Path) -> None:
    probe = tmp_path / "rank_probe.py"
    probe.write_text(
        "import os, sys, time\n"
        "print(f\"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}\", flush=True)\n"
        "if len(sys.argv) > 1 and os.environ['RANK'] == '1':\n    sys.exit(3)\n"
        "if len(sys.argv) > 1:\n    time.sleep(300)\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    demo.run_logged("two", demo.torchrun(2, ["rank_probe"]), tmp_path / "two.log", env)
    text = (tmp_path / "two.log").read_text()
    assert "rank 0 of 2" in text and "rank 1 of 2" in text

    # rank 1 dies; rank 0 would wait for its share forever: the launcher must stop it, and the stage fail
    t0 = time.monotonic()
    with pytest.raises(demo.DemoError, match=r"'gen' failed: .*exited with 1; see .*gen\.log"):
        demo.run_logged("gen", demo.torchrun(2, ["rank_probe", "die"]), tmp_path / "gen.log", env)
    assert time.monotonic() - t0 < 60


def test_config_from_args() -> None:
    args = demo._parser().parse_args(["--quick", "--out", "x", "--limit", "7", "--n-samples", "3"])
    c = demo.config_from_args(args)
    assert (c.limit, c.n_samples, c.ks, c.out) == (7, 3, (1, 3), Path("x"))
    assert c.backbone_steps == demo.quick_config(Path("x")).backbone_steps
    full = demo.config_from_args(demo._parser().parse_args([]))
    assert full == demo.DemoConfig() and full.out == Path("runs/demo") and full.limit is None
    with pytest.raises(ValueError, match="limit"):
        demo.DemoConfig(limit=0)


def test_a_folder_of_other_settings_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "demo_config.json").write_text(json.dumps({"vocab_size": 1}))
    assert demo.main(["--quick", "--out", str(tmp_path)]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.heavy
def test_quick_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "mmpt", "demo", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = demo.build_stages(demo.quick_config(out))
    for s in stages:
        assert (out / "stages" / f"{s.name}.json").exists(), s.name
        assert f"] {s.title}: done in" in proc.stdout  # a header and a time per stage

    # training: one deepspeed launch of 2 ranks ran the three runs in turn, building no DeepSpeed op;
    # one torchrun launch generated for both models and scored them
    log = (out / "logs" / "train.log").read_text()
    assert log.count("2 rank(s), cpu") == 3 and "built successfully" not in log
    assert list(finished(out / "stages" / "train.parts")) == ["train-backbone", "train-separated", "train-baseline"]
    evaluation = finished(out / "stages" / "generate.parts")
    assert len(evaluation) == 8 and {"generate-baseline-incremental", "score-separated"} <= set(evaluation)
    assert "| · score-baseline |" in proc.stdout and "| **total** |" in proc.stdout  # the timing table, printed
    backbone = [json.loads(line) for line in (out / "backbone" / "metrics.jsonl").read_text().splitlines()]
    assert backbone[-1]["loss"] < backbone[0]["loss"]
    for model in MODELS:
        assert str(out / "backbone" / "final") in (out / model / "train_config.yaml").read_text()
        assert (out / model / "final" / "model.safetensors").exists()
    # generation: plain limited to 3 problems x (1 greedy, 2 sampled); incremental over 2 problems
    rows = [json.loads(line) for line in (out / "eval" / "separated" / "sampled.results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 and {r["status"] for r in rows} <= {"passed", "failed", "timeout", "error"}
    inc = [json.loads(line) for line in (out / "eval" / "baseline" / "incremental.results.jsonl").read_text().splitlines()]
    scores = (out / "eval" / "separated" / "score.jsonl").read_text().splitlines()
    assert len(scores) == 164  # scoring takes every HumanEval problem: one forward pass each
    assert {r["task_id"].split("#")[0] for r in inc} == {"HumanEval/0", "HumanEval/1"}
    # the watch stage: a point per checkpoint of each further pre-training (4 steps, 2 checkpoints), in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mmpt.eval.watch_records import read_scores
    from mmpt.train_checkpoints import list_complete

    for model in MODELS:
        saved = [int(c.name.removeprefix("step_")) for c in list_complete(out / model)]
        assert saved == [2, 4] and [r["step"] for r in read_scores(out / model, "humaneval")] == saved
        events = EventAccumulator(str(out / model / "tensorboard" / "watch-humaneval"))
        events.Reload()
        assert [e.step for e in events.Scalars("eval/humaneval/pass@1")] == saved
    md = (out / "report.md").read_text()
    for section in ("## pass@k on HumanEval", "## Incremental pass@1", "## Training loss per modality", "## NL vs code",
                    "## Likelihood of the reference solutions", "## pass@1 as the models train"):  # fmt: skip
        assert section in md
    plots = ("passk", "incremental", "loss", "similarity", "watch")
    assert all((out / "plots" / f"{n}.png").stat().st_size > 10_000 for n in plots)

    # a rerun skips every finished stage
    t0 = time.monotonic()
    again = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done earlier, skipped") == len(stages)
    assert time.monotonic() - t0 < 30
