"""`mmpt watch` on a real 2-rank DeepSpeed run: one scalar per checkpoint at its step, resume,
rotation, half-written checkpoints, and the end of the run.

One module fixture trains once (2 ranks, ZeRO-3, a checkpoint every 2 of 6 steps) with a watcher
started before it, as a user would run them side by side; the other tests reuse copies of that
run. Execution runs in the sandbox (bubblewrap), as always.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmpt import run_dir, train_checkpoints
from mmpt.distributed import free_port
from mmpt.eval import watch
from mmpt.eval.benchmarks.registry import load_problems
from mmpt.jsonl import write_json, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "tests" / "assets"
STEPS, SAVE_STEPS = 6, 2
WATCH_ARGS = ["--benchmark", "humaneval", "--greedy", "--limit", "2", "--max-new-tokens", "8", "--workers", "1"]
TAG = "eval/humaneval/pass@1"

pytestmark = pytest.mark.heavy


@pytest.fixture(autouse=True)
def bounded_pauses(monkeypatch):
    """A watcher that does not end fails its test instead of hanging it (tests that move a run on
    at each pause replace this)."""
    pauses = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        assert len(pauses) < 50, "the watcher never ended"
        time.sleep(min(seconds, 0.05))

    monkeypatch.setattr(watch, "sleep", pause)


def _needs_bwrap() -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap not installed (the sandbox of mmpt execute)")


def scalars(run: Path, tag: str = TAG) -> list[tuple[int, float]]:
    """(step, value) of `tag` as TensorBoard reads the watcher's folder back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard" / "watch-humaneval"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def records(run: Path) -> list[dict]:
    path = run / "watch" / "humaneval" / "passk.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None, f"exited {proc.returncode} before saying {text!r}: {path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never said {text!r}: {path.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A watcher started first, then a 2-rank run beside it that saves steps 2, 4 and 6 (all kept)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.data.prepare import PrepareConfig, prepare
    from mmpt.data.tokenizer import load_tokenizer
    from test_train import ARCH, make_pairs, run_args  # the training tests' tiny data, model and settings

    _needs_bwrap()
    root = tmp_path_factory.mktemp("watch")
    ds = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    (root / "zero3.json").write_text(json.dumps(ds))
    make_pairs(root / "pairs.jsonl", n=40)
    prepare(PrepareConfig(str(root / "pairs.jsonl"), str(ASSETS / "tokenizer"), str(root / "data"), "partial", max_seq_length=96))
    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", **ARCH, vocab_size=len(load_tokenizer(str(root / "data" / "tokenizer"))))
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "tied")
    run = root / "run"
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    watch_log = root / "watch.log"
    watcher = subprocess.Popen([sys.executable, "-m", "mmpt", "watch", str(run), *WATCH_ARGS, "--poll-s", "0.5"],
                               stdout=watch_log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=root)  # fmt: skip
    try:
        _wait_for(watch_log, "waiting for the run to start", watcher)
        args = run_args(root, "code-clm", run, max_steps=STEPS, save_steps=SAVE_STEPS, keep_checkpoints=10)
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
               "--module", "mmpt.train", *args]  # fmt: skip
        train_log = root / "train.log"
        trainer = subprocess.run(cmd, stdout=train_log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=600)
        assert trainer.returncode == 0, train_log.read_text()[-5000:]
        assert watcher.wait(timeout=600) == 0, watch_log.read_text()[-5000:]
    finally:
        if watcher.poll() is None:
            watcher.kill()
    return {"run": run, "log": watch_log.read_text(), "root": root}


def _copy(trained: dict, tmp_path: Path, keep_watch: bool = True) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    if not keep_watch:
        shutil.rmtree(run / "watch")
        shutil.rmtree(run / "tensorboard" / "watch-humaneval")
    return run


def test_one_scalar_per_saved_checkpoint_at_its_step(trained):
    run = trained["run"]
    saved = [train_checkpoints.step_dir_name(s) for s in range(SAVE_STEPS, STEPS + 1, SAVE_STEPS)]
    assert sorted(p.name for p in train_checkpoints.list_complete(run)) == saved  # what the run saved, all kept
    points = scalars(run)
    assert [step for step, _ in points] == list(range(SAVE_STEPS, STEPS + 1, SAVE_STEPS)), trained["log"][-3000:]
    for (step, value), record in zip(points, records(run)):
        results = run / "watch" / "humaneval" / train_checkpoints.step_dir_name(step) / "plain.results.jsonl"
        passed = [json.loads(line)["passed"] for line in results.read_text().splitlines()]
        assert len(passed) == 2 and record["step"] == step and record["n_tasks"] == 2
        assert value == pytest.approx(sum(passed) / len(passed)) == pytest.approx(record["pass@1"])  # greedy: n = 1
    # the training's own writer is untouched: its folder holds its one event file, without our tags
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and not any(t.startswith("eval/") for t in acc.Tags()["scalars"])
    assert "the run finished at step 6; 3 checkpoint(s) scored" in trained["log"]


def test_resume_skips_scored_checkpoints(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    before = (records(run), scalars(run))
    assert watch.main([str(run), *WATCH_ARGS, "--poll-s", "0.1"]) == 0
    assert (records(run), scalars(run)) == before
    assert "scoring" not in capsys.readouterr().err


def test_other_settings_in_the_same_folder_are_refused(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    assert watch.main([str(run), *WATCH_ARGS, "--max-new-tokens", "16"]) == 2
    assert "watched with other settings" in capsys.readouterr().err
    assert watch.main([str(run), *WATCH_ARGS, "--max-new-tokens", "16", "--name", "longer", "--poll-s", "0.1"]) == 0


def test_a_rotated_away_checkpoint_is_skipped_not_an_error(trained, tmp_path, monkeypatch, capsys):
    run = _copy(trained, tmp_path, keep_watch=False)
    real = watch.export_checkpoint

    def rotated_mid_export(ckpt, out):
        if ckpt.name == train_checkpoints.step_dir_name(4):
            shutil.rmtree(ckpt)  # what the run's rotation does while the export reads it
        return real(ckpt, out)

    monkeypatch.setattr(watch, "export_checkpoint", rotated_mid_export)
    assert watch.main([str(run), *WATCH_ARGS, "--poll-s", "0.1"]) == 0
    err = capsys.readouterr().err
    assert "step_00000004 was rotated away by the run while it was exported" in err
    assert [step for step, _ in scalars(run)] == [2, 6] and [r["step"] for r in records(run)] == [2, 6]
    assert not (run / "watch" / "humaneval" / "step_00000004" / "model").exists()  # its half export is gone


def test_an_export_error_of_a_complete_checkpoint_is_an_error(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path, keep_watch=False)
    for shard in (run / "checkpoints" / "step_00000002").glob("*optim_states.pt"):
        shard.write_bytes(b"not a checkpoint")  # broken, but nothing deleted it: not a rotation
    assert watch.main([str(run), *WATCH_ARGS, "--poll-s", "0.1"]) == 2
    assert "step_00000002: export failed" in capsys.readouterr().err
    assert records(run) == []


def test_a_checkpoint_being_written_is_not_read_and_the_watch_ends_with_the_run(trained, tmp_path, monkeypatch, capsys):
    """The run goes on after step 6: a save in progress (no marker yet: its files are not
    readable), then complete, then the run finishes. Each of the watcher's pauses moves the run on."""
    run = _copy(trained, tmp_path)
    write_json(run / run_dir.RUN_STATE, {"state": "running", "step": 6})
    step8 = run / "checkpoints" / train_checkpoints.step_dir_name(8)

    def half_written():
        step8.mkdir()
        for f in (run / "checkpoints" / train_checkpoints.step_dir_name(6)).iterdir():
            if f.is_file() and f.name != train_checkpoints.MARKER:
                (step8 / f.name).write_bytes(b"half written")  # unreadable: reading it would fail

    def completed():
        shutil.rmtree(step8)
        shutil.copytree(run / "checkpoints" / train_checkpoints.step_dir_name(6), step8)
        write_json(step8 / train_checkpoints.MARKER, {"step": 8, "world_size": 2})

    moves = [half_written, completed, lambda: write_json(run / run_dir.RUN_STATE, {"state": "finished", "step": 8})]
    pauses = []

    def pause(seconds):
        pauses.append(seconds)
        moves[len(pauses) - 1]()

    monkeypatch.setattr(watch, "sleep", pause)
    assert watch.main([str(run), *WATCH_ARGS, "--poll-s", "7"]) == 0
    err = capsys.readouterr().err
    assert pauses == [7, 7, 7]  # it waited while running, and only then
    assert [step for step, _ in scalars(run)] == [2, 4, 6, 8] and [r["step"] for r in records(run)] == [2, 4, 6, 8]
    assert "waiting for its next checkpoint (running, step 6)" in err
    assert err.count("scoring step 8") == 1 and "the run finished at step 8; 4 checkpoint(s) scored" in err


def _fake_run(tmp_path: Path, state: dict | None) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    if state is not None:
        write_json(run / run_dir.RUN_STATE, state)
    return run


def test_a_stopped_or_failed_run_ends_the_watch_unless_a_stopped_one_is_followed(tmp_path, monkeypatch, capsys):
    run = _fake_run(tmp_path, {"state": "failed", "step": 3})
    assert watch.main([str(run), *WATCH_ARGS, "--follow"]) == 0
    assert "the run failed at step 3; 0 checkpoint(s) scored" in capsys.readouterr().err
    write_json(run / run_dir.RUN_STATE, {"state": "stopped", "step": 40})
    assert watch.main([str(run), *WATCH_ARGS]) == 0
    assert "the run stopped (a save request) at step 40; 0 checkpoint(s) scored" in capsys.readouterr().err
    resumed = iter([{"state": "running", "step": 40}, {"state": "finished", "step": 80}])
    pauses = []

    def pause(seconds):
        pauses.append(seconds)
        write_json(run / run_dir.RUN_STATE, next(resumed))

    monkeypatch.setattr(watch, "sleep", pause)
    assert watch.main([str(run), *WATCH_ARGS, "--follow", "--poll-s", "3"]) == 0
    err = capsys.readouterr().err
    assert pauses == [3, 3] and "waiting for the stopped run to resume (--follow)" in err
    assert "the run finished at step 80" in err


def test_a_run_that_died_unannounced_ends_the_watch_after_the_idle_timeout(tmp_path, monkeypatch, capsys):
    run = _fake_run(tmp_path, {"state": "running", "step": 12})
    past = time.time() - 100
    os.utime(run / run_dir.RUN_STATE, (past, past))
    os.utime(run / "checkpoints", (past, past))
    clock = iter(itertools.count(time.time(), 30.0))
    monkeypatch.setattr(watch, "time", lambda: next(clock))  # 30 s pass between looks
    monkeypatch.setattr(watch, "sleep", lambda s: None)
    assert watch.main([str(run), *WATCH_ARGS, "--idle-timeout-s", "50"]) == 0
    assert "but the run wrote nothing for" in capsys.readouterr().err


def test_a_second_watcher_of_the_same_run_is_refused(tmp_path, capsys):
    run = _fake_run(tmp_path, {"state": "finished", "step": 0})
    config = watch.config_from_args(watch._parser().parse_args([str(run), *WATCH_ARGS]))
    first = watch.RunWatch(run, config)
    try:
        assert watch.main([str(run), *WATCH_ARGS]) == 2
        assert "another `mmpt watch` is scoring this run" in capsys.readouterr().err
    finally:
        first.close()
    assert watch.main([str(run), *WATCH_ARGS]) == 0


def _pass_at_k(passed: list[bool], k: int) -> float:
    """Brute force: the share of k-subsets of the samples that hold a passing one."""
    subsets = list(itertools.combinations(passed, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_of_sampled_and_incremental_tasks_from_their_sandboxed_results(tmp_path):
    """A checkpoint whose samples are on disk (a watcher killed after generating): its samples are
    executed in the sandbox without the checkpoint, and every k that n allows is logged, exactly."""
    _needs_bwrap()
    run = _fake_run(tmp_path, {"state": "finished", "step": 10})
    ckpt = run / "checkpoints" / train_checkpoints.step_dir_name(10)
    ckpt.mkdir()
    write_json(ckpt / train_checkpoints.MARKER, {"step": 10})  # no weights: it must not be read
    work = run / "watch" / "humaneval" / ckpt.name
    work.mkdir(parents=True)
    plain = load_problems("humaneval", limit=2)
    passing = {("HumanEval/0", 0), ("HumanEval/0", 2)}  # 2 of 4 on task 0, none on task 1
    samples = [{"task_id": p.task_id, "completion_id": c,
                "completion": p.reference if (p.task_id, c) in passing else "    return None\n"}
               for p in plain for c in range(4)]  # fmt: skip
    write_jsonl(work / "plain.samples.jsonl", samples)
    incremental = load_problems("humaneval", incremental=True, limit=1)[:3]
    write_jsonl(work / "incremental.samples.jsonl", [
        {"task_id": p.task_id, "completion_id": c, "completion": p.reference if c < i else "    return None\n",
         "given_lines": p.given_lines, "total_lines": p.total_lines} for i, p in enumerate(incremental) for c in range(4)
    ])  # fmt: skip
    args = [str(run), "--benchmark", "humaneval", "--n", "4", "--temperature", "0.8", "--limit", "2", "--incremental",
            "--workers", "1"]  # fmt: skip
    assert watch.main(args) == 0
    [record] = records(run)
    by_task = {p.task_id: [(p.task_id, c) in passing for c in range(4)] for p in plain}
    for k in (1, 4):  # default ks for n = 4: 1, and n itself
        expected = sum(_pass_at_k(v, k) for v in by_task.values()) / 2
        assert record[f"pass@{k}"] == pytest.approx(expected)
        assert scalars(run, f"eval/humaneval/pass@{k}") == [(10, pytest.approx(expected))]
    inc = [[c < i for c in range(4)] for i in range(3)]  # task i: i of 4 samples pass
    macro = sum(_pass_at_k(v, 1) for v in inc) / 3
    assert record["incremental"]["pass@1"] == pytest.approx(macro)
    assert scalars(run, "eval/humaneval/incremental_macro/pass@1") == [(10, pytest.approx(macro))]
    assert scalars(run, "eval/humaneval/incremental_micro/pass@1") == [(10, pytest.approx(3 / 12))]  # pooled: one problem


def test_generate_options_pass_through_unchanged(tmp_path):
    argv = [str(tmp_path), "--benchmark", "mbpp", "-n", "5", "--temperature", "0.8", "--top-p", "0.9", "--max-new-tokens",
            "64", "--seed", "3", "--prompt-style", "paper", "--incremental", "--engine", "ours", "--limit", "7"]  # fmt: skip
    config = watch.config_from_args(watch._parser().parse_args(argv))
    assert config.incremental and config.ks == (1, 5) and config.benchmark == "mbpp"
    from mmpt.eval.generate import _parser as generate_parser

    forwarded = generate_parser().parse_args(["--model", "m", "--out", "o", *config.generate_argv])
    direct = generate_parser().parse_args(["--model", "m", "--out", "o", *argv[1:]])
    assert vars(forwarded) == {**vars(direct), "incremental": False}  # added per kind of task
    assert watch.default_ks(1) == (1,) and watch.default_ks(20) == (1, 10, 20) and watch.default_ks(100) == (1, 10, 100)


def test_bad_options_fail_before_watching(tmp_path, capsys):
    bad_options = [(["--greedy", "--k", "1,5"], "needs k <= --n"), (["--top-p", "0.9"], "--top-p needs --temperature")]
    if not torch.cuda.is_available():
        bad_options.append((["--device", "cuda"], "--device cuda: no GPU is visible"))
    for bad, message in bad_options:
        assert watch.main([str(tmp_path / "run"), "--benchmark", "humaneval", *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
