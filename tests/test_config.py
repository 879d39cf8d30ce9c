"""mmpt/config.py: YAML + overrides, typed coercion, clear errors, and the DeepSpeed "auto" filling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmpt import shipped
from mmpt.config import ConfigError, deepspeed_config, load_config, parse_overrides, resolve_precision


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_then_overrides_with_types(tmp_path):
    path = write(tmp_path, "data_dir: d\nlearning_rate: 1e-4\nmax_steps: 5\nmodel: {model_type: llama, hidden_size: 8}\n")
    c = load_config(path, parse_overrides(["--max_steps", "7", "--gradient_checkpointing=false", "--seed", "3"]))
    assert (c.learning_rate, c.max_steps, c.gradient_checkpointing, c.seed) == (1e-4, 7, False, 3)
    assert c.model == {"model_type": "llama", "hidden_size": 8}
    assert load_config(path, {"model": "org/name"}).model == "org/name"


def test_defaults_are_the_papers():
    c = load_config(None, {"data_dir": "d"})
    assert (c.learning_rate, c.min_learning_rate, c.warmup_ratio, c.weight_decay, c.max_grad_norm) == (
        1e-5,
        1e-6,
        0.01,
        0.01,
        1.0,
    )
    assert c.per_device_batch_size == 32 and c.gradient_checkpointing


def test_the_default_model_is_the_one_the_paper_config_and_docs_name():
    from mmpt.config import help_text

    default = load_config(None, {"data_dir": "d"}).model
    assert default == load_config("pycodegpt-110m", {"data_dir": "d"}).model == "Daoguang/PyCodeGPT"
    assert json.dumps(default) in help_text()  # what `mmpt train --help` shows
    root = Path(__file__).resolve().parents[1]
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    assert f"--tokenizer {default}" in (root / "docs" / "training.md").read_text()
    assert not [p.name for p in docs if "microsoft/PyCodeGPT" in p.read_text()]


def test_unknown_field_in_yaml_names_file_and_suggests(tmp_path):
    path = write(tmp_path, "data_dir: d\nlearning_rte: 1e-4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown field 'learning_rte' \(did you mean 'learning_rate'\?\)"):
        load_config(path)


def test_unknown_field_on_command_line():
    with pytest.raises(ConfigError, match="command line: unknown field 'max_step'"):
        parse_overrides(["--max_step", "3"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--max_steps"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"objective": "mlm"}, "unknown objective"),
        ({"max_steps": "three"}, "'max_steps' must be"),
        ({"precision": "fp8"}, "'precision'"),
        ({"save_signal": "SIGNOPE"}, "'save_signal'"),
        ({"lr_schedule": "linear"}, "'lr_schedule': expected one of"),
        ({"min_learning_rate": "1"}, "'min_learning_rate'"),
        ({"objective": "prefix-code-clm", "signature_loss": "true"}, "'signature_loss': prefix-code-clm keeps"),
    ],
)
def test_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"data_dir": "d", **overrides})


def test_missing_data_dir_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="'data_dir'"):
        load_config(None)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="field 'max_steps' must be"):
        load_config(write(tmp_path, "data_dir: d\nmax_steps: [1]\n"))


@pytest.mark.parametrize("name", ["zero3.json", "zero3_offload.json", "zero2.json"])
def test_deepspeed_auto_values_come_from_the_config(name):
    c = load_config(
        None,
        {
            "data_dir": "d",
            "deepspeed": f"ds_configs/{name}",
            "per_device_batch_size": "4",
            "gradient_accumulation_steps": "3",
            "learning_rate": "2e-5",
            "max_grad_norm": "0.5",
        },
    )
    ds = deepspeed_config(c, world_size=2, precision="bf16", device_type="cuda")
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 3, 24)
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    # torch's fused AdamW on CUDA: nothing for DeepSpeed to JIT-compile (its FusedAdam / CPU Adam ops)
    assert ds["optimizer"]["params"] == {
        "lr": 2e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "torch_adam": True, "fused": True,
    }  # fmt: skip
    assert "scheduler" not in ds


def test_deepspeed_disagreement_is_an_error(tmp_path):
    ds = json.loads((shipped.PACKAGE / "ds_configs" / "zero3.json").read_text())
    ds["gradient_clipping"] = 2.0
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    c = load_config(None, {"data_dir": "d", "deepspeed": str(tmp_path / "ds.json")})
    with pytest.raises(ConfigError, match="gradient_clipping = 2.0 disagrees"):
        deepspeed_config(c, 1, "fp32", "cpu")
    ds["gradient_clipping"] = "auto"
    ds["scheduler"] = {"type": "WarmupLR"}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    with pytest.raises(ConfigError, match="remove 'scheduler'"):
        deepspeed_config(c, 1, "fp32", "cpu")


def test_precision_auto():
    assert resolve_precision("auto", "cpu", False) == "fp32"
    assert resolve_precision("auto", "cuda", True) == "bf16"
    assert resolve_precision("auto", "cuda", False) == "fp16"
    assert resolve_precision("fp16", "cpu", False) == "fp16"


@pytest.mark.parametrize("path", sorted((shipped.PACKAGE / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    c = load_config(path, {"data_dir": "d"})
    deepspeed_config(c, 2, resolve_precision(c.precision, "cuda", True), "cuda")


@pytest.mark.parametrize(
    "params,device,want",
    [
        ({}, "cpu", {"torch_adam": True}),  # torch's AdamW (for-each) on CPU, as before
        ({"torch_adam": False}, "cuda", {"torch_adam": False}),  # the user asks for DeepSpeed's FusedAdam
        ({"fused": False}, "cuda", {"torch_adam": True, "fused": False}),
        ({"foreach": True}, "cuda", {"torch_adam": True, "foreach": True}),  # torch refuses fused with foreach
    ],
)
def test_the_users_optimizer_settings_win(tmp_path, params, device, want):
    ds = json.loads((shipped.PACKAGE / "ds_configs" / "zero3.json").read_text())
    ds["optimizer"]["params"].update(params)
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    c = load_config(None, {"data_dir": "d", "deepspeed": str(tmp_path / "ds.json")})
    got = deepspeed_config(c, 1, "bf16", device)["optimizer"]["params"]
    assert {k: v for k, v in got.items() if k not in ("lr", "betas", "eps", "weight_decay")} == want


def test_another_optimizer_type_is_left_alone(tmp_path):
    ds = json.loads((shipped.PACKAGE / "ds_configs" / "zero3.json").read_text())
    ds["optimizer"]["type"] = "Lamb"
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    c = load_config(None, {"data_dir": "d", "deepspeed": str(tmp_path / "ds.json")})
    assert set(deepspeed_config(c, 1, "bf16", "cuda")["optimizer"]["params"]) == {"lr", "betas", "eps", "weight_decay"}


@pytest.mark.parametrize("timers, want", [(None, False), ({"throughput": {"enabled": True}}, True)])
def test_deepspeeds_throughput_timer_is_off_unless_the_json_turns_it_on(tmp_path, timers, want):
    """DeepSpeed's default timer waits for the device twice per micro-batch (mmpt gives it no dataloader)."""
    ds = json.loads((shipped.PACKAGE / "ds_configs" / "zero3.json").read_text())
    ds.pop("timers", None)
    if timers is not None:
        ds["timers"] = timers
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    c = load_config(None, {"data_dir": "d", "deepspeed": str(tmp_path / "ds.json")})
    assert deepspeed_config(c, 1, "bf16", "cuda")["timers"]["throughput"]["enabled"] is want
    for name in ("zero2", "zero3", "zero3_offload"):  # the shipped JSONs say it themselves
        assert (
            json.loads((shipped.PACKAGE / "ds_configs" / f"{name}.json").read_text())["timers"]["throughput"]["enabled"] is False
        )
