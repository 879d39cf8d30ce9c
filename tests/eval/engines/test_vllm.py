"""mmpt.eval.engines.vllm against our engine: greedy token for token, sampling against the exact law.

vLLM pins its own torch and transformers, so it lives in its own virtual environment (CI: .venv-vllm,
made by .ci/run); this test runs tests/eval/engines/vllm_agreement.py there, or here when this
interpreter has vLLM, and compares what it wrote. Without one it is skipped, which CI counts as
a failure. MMPT_VLLM_PYTHON names another interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "eval" / "engines" / "vllm_agreement.py"


def vllm_python() -> str | None:
    """An interpreter with vLLM: MMPT_VLLM_PYTHON, this one, or the repository's .venv-vllm."""
    if os.environ.get("MMPT_VLLM_PYTHON"):
        return os.environ["MMPT_VLLM_PYTHON"]
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    venv = REPO / ".venv-vllm" / "bin" / "python"
    return str(venv) if venv.exists() else None


@pytest.fixture(scope="module")
def agreement(tmp_path_factory) -> dict:
    python = vllm_python()
    if python is None:
        pytest.skip("no Python with vLLM: set MMPT_VLLM_PYTHON or create .venv-vllm (see .ci/run)")
    out = tmp_path_factory.mktemp("vllm") / "agreement.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(
        [python, str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-10000:]
    return json.loads(out.read_text())


CASES = ["gpt2-none", "gpt2-full", "llama-partial", "llama-none"]


@pytest.mark.heavy
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["plain", "incremental"])
def test_greedy_equals_our_engine(agreement: dict, case: str, kind: str) -> None:
    got = agreement[case][kind]
    assert got["vllm"] == got["ours"]
    assert any(got["ours"])  # something was generated
    if case.endswith(("full", "partial")) and kind == "plain":
        # separated: the samples use code copies, which only a restricted, mapped-back engine gets right
        assert any(t >= got["base_vocab_size"] for row in got["ours"] for t in row)


@pytest.mark.heavy
def test_mmpt_generate_with_the_vllm_engine(agreement: dict) -> None:
    records = agreement["gpt2-none"]["run"]
    texts = agreement["gpt2-none"]["plain"]["texts"]  # our engine's greedy completions of the same problems
    assert [(r["task_id"], r["completion_id"]) for r in records] == [(f"T/{i}", c) for i in range(3) for c in range(2)]
    assert [r["generated"] for r in records] == [t.removeprefix("\n") for t in texts for _ in range(2)]
    assert all(r["settings"]["engine"] == "vllm" for r in records)


@pytest.mark.heavy
def test_both_engines_stop_at_the_end_of_the_function(agreement: dict) -> None:
    # some greedy samples ended part-way (a column-0 line), identically in both engines (above)
    lengths = [len(row) for case in CASES for kind in ("plain", "incremental") for row in agreement[case][kind]["vllm"]]
    assert any(1 < n < 40 for n in lengths) and any(n == 40 for n in lengths)


def chi_square(draws: list[int], law: np.ndarray) -> float:
    """Pearson's statistic over bins expecting >= 5 draws (the rest pooled), as a multiple of a
    far-tail bound (df + 6 sqrt(2 df)): above 1 means the draws do not follow `law`."""
    observed = np.bincount(draws, minlength=len(law)).astype(float)
    expected = law * len(draws)
    big = expected >= 5
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    stat = (((obs - exp) ** 2)[keep] / exp[keep]).sum()
    df = keep.sum() - 1
    return stat / (df + 6 * np.sqrt(2 * df))


@pytest.mark.heavy
def test_sampling_statistics_agree(agreement: dict) -> None:
    s = agreement["gpt2-full"]["sampling"]
    exact = np.asarray(s["exact"])
    for engine in ("vllm", "ours"):
        freq = np.bincount(s[engine], minlength=len(exact)) / len(s[engine])
        assert freq[exact == 0].sum() == 0, engine  # nothing outside the nucleus or the code vocabulary
        # 3000 draws: a frequency's standard error is at most 0.009
        assert np.abs(freq - exact).max() < 0.03, engine
        assert chi_square(s[engine], exact) < 1, engine
    assert s["vllm_again"] == s["vllm"][:50]  # a sample's seed, not its batch, decides what it draws


@pytest.mark.heavy
def test_vllm_samples_do_not_depend_on_batching(agreement: dict) -> None:
    rows = []
    for case in CASES:
        got = agreement[case]["sampled"]
        assert got["batch"][-3:] == got["alone"], case
        rows += got["batch"]
    assert len({tuple(row) for row in rows}) > 10 and max(map(len, rows)) > 5  # whole samples, and they differ


@pytest.mark.heavy
def test_doctor_finds_the_engine_in_its_venv() -> None:
    """`mmpt doctor --vllm-python PY`: docs/evaluation.md's separate venv (vLLM, then mmpt with --no-deps) serves the engine."""
    from mmpt.doctor import DoctorConfig, check_vllm

    python = vllm_python()
    if python is None:
        pytest.skip("no Python with vLLM: set MMPT_VLLM_PYTHON or create .venv-vllm (see .ci/run)")
    [result] = check_vllm(DoctorConfig(vllm_python=python))
    assert result.ok and result.detail.startswith("vllm 0.32.0 "), result
