"""mmpt/export.py: a one-process ZeRO-2 run with an untied head, exported by `mmpt export`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmpt.export import main as export_main
from mmpt.model.folder import META_FILE

ROOT = Path(__file__).resolve().parents[1]


def test_bad_checkpoint_path_is_a_clear_error(tmp_path, capsys):
    assert export_main([str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "neither a complete checkpoint nor a run directory" in capsys.readouterr().err


def test_zero2_untied_export_round_trip(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.data.prepare import PrepareConfig, prepare
    from mmpt.data.tokenizer import load_tokenizer
    from test_train import ARCH, make_pairs  # the same tiny data and model shape as the training tests

    make_pairs(tmp_path / "pairs.jsonl", n=20)
    prepare(
        PrepareConfig(
            str(tmp_path / "pairs.jsonl"),
            str(ROOT / "tests/assets/tokenizer"),
            str(tmp_path / "data"),
            "partial",
            max_seq_length=96,
        )
    )
    config = AutoConfig.for_model(
        "llama", **ARCH, vocab_size=len(load_tokenizer(str(tmp_path / "data/tokenizer"))), tie_word_embeddings=False
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "untied")
    out = tmp_path / "run"
    args = [
        "--model",
        str(tmp_path / "untied"),
        "--data_dir",
        str(tmp_path / "data"),
        "--output_dir",
        str(out),
        "--objective",
        "code-clm",
        "--max_steps",
        "3",
        "--per_device_batch_size",
        "2",
        "--learning_rate",
        "1e-2",
        "--deepspeed",
        "ds_configs/zero2.json",
        "--precision",
        "fp32",
        "--gradient_checkpointing",
        "false",
    ]
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mmpt.train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert export_main([str(out), "--out", str(tmp_path / "again")]) == 0
    a, b = load_file(out / "final" / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    trained, start = model.get_output_embeddings().weight, load_file(tmp_path / "untied" / "model.safetensors")["lm_head.weight"]
    assert trained is not model.get_input_embeddings().weight  # untied stays untied
    assert not torch.equal(trained[: start.shape[0]], start)  # the trained weights, not the initial ones
    assert json.loads((tmp_path / "again" / "mmpt.json").read_text())["objective"] == "code-clm"
    assert (tmp_path / "again" / "separation.json").is_file() and (tmp_path / "again" / "tokenizer.json").is_file()


def _hf_dir_and_state(tmp_path: Path, arch: str, dtype: torch.dtype, tied: bool):
    """A checkpoint's hf/ folder (config of a `dtype` run) and its fp32 master weights, as ZeRO hands them over."""
    from mmpt.model.tiny import tiny_model

    model = tiny_model(arch, vocab=96, tied=tied).to(dtype)
    model.config.dtype = dtype
    model.config.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / META_FILE).write_text("{}")
    state = {k: v.float() for k, v in model.state_dict().items()}  # fp32 masters
    if tied:
        del state["lm_head.weight"]  # the consolidated dict may hold a shared tensor once
    return tmp_path / "hf", state, model


@pytest.mark.parametrize("arch,tied", [("llama", True), ("llama", False), ("gpt2", True), ("gpt_neo", True)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_export_writes_the_training_dtype_without_random_init(tmp_path, monkeypatch, arch, tied, dtype):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from mmpt.export import write_hf_model

    hf, state, reference = _hf_dir_and_state(tmp_path, arch, dtype, tied)
    masters = dict(state)
    # every random or constant init on a real (non-meta) tensor is counted: building on meta costs none
    inits = []
    for name in ("normal_", "uniform_", "fill_", "zero_"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            if self.device.type != "meta":
                inits.append(tuple(self.shape))
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    write_hf_model(hf, state, tmp_path / "out", where="ckpt")
    monkeypatch.undo()
    assert inits == []
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {dtype}  # not fp32 of twice the size for a bf16 run
    for name, master in masters.items():
        assert torch.equal(saved[name], master.to(dtype)), name
    assert ("lm_head.weight" in saved) == (not tied)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    assert model.dtype == dtype and (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, reference.eval()(input_ids=ids).logits, atol=0, rtol=0)
    assert (tmp_path / "out" / META_FILE).is_file()


def test_export_names_a_mismatched_tensor(tmp_path):
    from mmpt.export import write_hf_model

    hf, state, _ = _hf_dir_and_state(tmp_path, "llama", torch.float32, True)
    state["model.norm.weight"] = torch.ones(5)
    with pytest.raises(ValueError, match=r"ckpt: model.norm.weight has shape \(5,\), the model config says \(32,\)"):
        write_hf_model(hf, dict(state), tmp_path / "out", where="ckpt")
    del state["model.norm.weight"]
    with pytest.raises(ValueError, match=r"ckpt: weights do not match the model config \(missing \['model.norm.weight'\]"):
        write_hf_model(hf, state, tmp_path / "out", where="ckpt")


def test_export_generates_with_the_cache_in_stock_transformers(tmp_path):
    """Plain `AutoModelForCausalLM` + `generate` on an export of a training checkpoint (use_cache false
    in its hf/ config, bos on a sentinel) runs with the KV cache and stops at `<eot>`."""
    from transformers import AutoModelForCausalLM

    from mmpt.export import write_hf_model
    from mmpt.model.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    hf, state, _ = _hf_dir_and_state(tmp_path, "llama", torch.float32, True)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(
        json.dumps(config | {"use_cache": False, "bos_token_id": tok.convert_tokens_to_ids("<python>")})
    )
    tok.save_pretrained(hf)
    write_hf_model(hf, state, tmp_path / "out", where="ckpt")

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    eot, pad = tok.convert_tokens_to_ids("<eot>"), tok.pad_token_id
    assert model.config.use_cache is True
    gen = model.generation_config
    assert (gen.eos_token_id, gen.pad_token_id, gen.bos_token_id, gen.use_cache) == (eot, pad, None, True)
    assert json.loads((hf / "config.json").read_text())["use_cache"] is False  # the checkpoint itself is untouched

    seen = []  # tokens each forward call of generate gets
    model.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"].shape[1]), with_kwargs=True)
    prompt = torch.tensor([[1, 7, 8, 9, 2]])
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    assert out.past_key_values is not None and seen == [5, 1, 1, 1, 1, 1]  # the prompt once, then one token a step
    seen.clear()
    with torch.no_grad():  # the control: without the cache every step recomputes the whole prefix
        model.generate(prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=False)
    assert seen == [5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize("data_format, meta_format", [("keep-flat", "flat"), ("auto", "plain")])
def test_a_run_trained_flattened_exports_a_flat_checkpoint(tmp_path, data_format, meta_format):
    """`mmpt generate` prompts a checkpoint in the format it was trained on: keep-flat data says flat."""
    from types import SimpleNamespace

    from mmpt.data.separation import SeparationMap
    from mmpt.export import write_export_meta
    from mmpt.model.folder import CheckpointMeta
    from mmpt.model.tiny import tiny_model, tiny_tokenizer

    model = tiny_model("gpt2")
    train_config = SimpleNamespace(objective="code-clm", attn_implementation="sdpa")
    data_meta = {"layout": "docstring-first", "code_format": data_format}
    write_export_meta(tmp_path, model.config, tiny_tokenizer(), SeparationMap("none", 64), data_meta, train_config)
    assert CheckpointMeta.load(tmp_path).code_format == meta_format
