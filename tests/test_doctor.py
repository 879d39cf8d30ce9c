"""`mmpt doctor`: one line per check, exit status 1 on any failure, appendable checks."""

from __future__ import annotations

import importlib.util
import sys

import torch

from mmpt import doctor
from mmpt.cli import main as cli_main
from mmpt.data.separation import SeparationMap
from mmpt.doctor import CheckResult, DoctorConfig, run_checks
from mmpt.modality import OBJECTIVES
from mmpt.model.folder import save_model
from mmpt.model.split_embeddings import extend_model
from mmpt.model.tiny import tiny_model, tiny_tokenizer


def test_tiny_arch_passes_with_one_line_per_check(capsys):
    assert cli_main(["doctor", "--arch", "gpt_neo", "--attn", "eager"]) == 0
    lines = capsys.readouterr().out.splitlines()
    packed = [line for line in lines if "packed gpt_neo/eager/" in line]
    assert [line.split()[2].rsplit("/", 1)[1] for line in packed] == list(OBJECTIVES)
    for line in packed:
        assert line.startswith("ok") and float(line.split("max diff ")[1].split()[0]) <= 1e-5
    assert any(line.startswith("ok") and "sentinels" in line for line in lines)


def test_refused_combination_fails_the_run(capsys):
    assert cli_main(["doctor", "--arch", "gpt2", "--attn", "flex_attention"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  packed gpt2/flex_attention" in out and "refused" in out


def test_a_leaking_mask_is_caught(monkeypatch):
    """The check can fail: a mask that lets instances see each other is reported with its diff."""
    from mmpt.model import attention

    monkeypatch.setattr(attention, "instance_ids", lambda pos: torch.zeros_like(pos))  # one big instance
    results = doctor.check_packed(DoctorConfig(archs=("gpt2",), attn=("sdpa",)))
    assert [r.ok for r in results] == [False] * len(OBJECTIVES)
    assert all(float(r.detail.split()[2]) > 1e-3 for r in results)


def test_appended_and_crashing_checks_are_reported_not_raised():
    def check_custom(cfg):
        return CheckResult("custom", False, "disk full")

    def check_crash(cfg):
        raise RuntimeError("boom")

    results = run_checks(DoctorConfig(), [check_custom, check_crash])
    assert results == [CheckResult("custom", False, "disk full"), CheckResult("crash", False, "RuntimeError: boom")]


def test_checkpoint_with_separation_passes(tmp_path, capsys):
    tok = tiny_tokenizer()
    smap = SeparationMap("partial", len(tok), [6, 9, 30])
    model = tiny_model("llama", "sdpa", vocab=len(tok))
    extend_model(model, smap)
    save_model(model, smap, tmp_path, tokenizer=tok)
    assert doctor.main(["--model", str(tmp_path), "--attn", "sdpa"]) == 0
    out = capsys.readouterr().out
    assert "partial: 3 separated, 128 rows" in out and out.count("packed llama/sdpa/") == len(OBJECTIVES)
    SeparationMap("full", len(tok), list(range(len(tok)))).save(tmp_path)  # needs 128 rows: fits
    SeparationMap("partial", len(tok) + 1, [6]).save(tmp_path)  # disagrees with the tokenizer
    assert doctor.main(["--model", str(tmp_path), "--attn", "sdpa"]) == 1
    assert "base_vocab_size 65 != tokenizer length 64" in capsys.readouterr().out


def test_starcoder2_packed_rows_pass(capsys):
    assert cli_main(["doctor", "--arch", "starcoder2", "--attn", "eager,sdpa"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok    packed starcoder2/") == 2 * len(OBJECTIVES), out


def test_flex_attention_needs_a_c_compiler_and_the_python_headers(monkeypatch, tmp_path):
    import sysconfig

    flex = DoctorConfig(archs=("llama",), attn=("flex_attention",))
    [result] = doctor.check_compiler(flex)
    assert result.ok and "Python.h" in result.detail, result
    assert list(doctor.check_compiler(DoctorConfig(archs=("llama",), attn=("sdpa",)))) == []  # no flex: nothing to build
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    [result] = doctor.check_compiler(flex)
    assert not result.ok and "no C compiler" in result.detail, result
    monkeypatch.delenv("CC")
    paths = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: paths | {"include": str(tmp_path)})
    [result] = doctor.check_compiler(flex)
    assert not result.ok and "no Python headers" in result.detail, result


def test_no_mpi_library_is_optional_not_a_failure(monkeypatch):
    """After `pip install '.[demo]'` (no `mpi` extra) mpi4py finds no MPI library: reported, not failed."""
    monkeypatch.setenv("MPI4PY_LIBMPI", "/nonexistent/libmpi.so")  # mpi4py's own search finds nothing
    [result] = doctor.check_mpi(DoctorConfig())
    assert result.ok and "optional, not installed" in result.detail and "mmpt[mpi]" in result.detail, result


def test_vllm_absent_from_this_interpreter_is_optional():
    [result] = doctor.check_vllm(DoctorConfig())
    assert result.ok, result
    if importlib.util.find_spec("vllm") is None:
        assert result.detail.startswith("optional, not installed here") and "--vllm-python" in result.detail


def test_vllm_absent_from_a_named_interpreter_fails(tmp_path):
    python = tmp_path / "python"  # this interpreter without its site-packages: no vLLM there
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    [result] = doctor.check_vllm(DoctorConfig(vllm_python=str(python)))
    assert not result.ok and result.detail == f"{python}: the vLLM engine cannot load: no vLLM installed", result
    [result] = doctor.check_vllm(DoctorConfig(vllm_python=str(tmp_path / "missing")))
    assert not result.ok and "No such file" in result.detail
