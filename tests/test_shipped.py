"""mmpt/shipped.py: a user's path wins; otherwise `configs/X.yaml`, `X.yaml` or `X` name the shipped file."""

from __future__ import annotations

import pytest

from mmpt import shipped
from mmpt.config import ConfigError, TrainConfig, find_deepspeed_file, load_config


def test_shipped_names_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: as after `pip install .`, away from the checkout
    tiny = shipped.PACKAGE / "configs" / "tiny-cpu.yaml"
    for name in ("configs/tiny-cpu.yaml", "tiny-cpu.yaml", "tiny-cpu"):
        assert shipped.find_file(name, "configs") == tiny
    assert shipped.find_file("ds_configs/zero3.json", "ds_configs") == shipped.PACKAGE / "ds_configs" / "zero3.json"
    assert "tiny-cpu.yaml" in shipped.names("configs") and "zero3.json" in shipped.names("ds_configs")


def test_the_deepspeed_jsons_have_one_copy_at_the_root():
    root = shipped.PACKAGE.parent  # a checkout: what a DeepSpeed user edits is ds_configs/ beside mmpt/
    assert (shipped.PACKAGE / "ds_configs").resolve() == (root / "ds_configs").resolve()
    assert sorted(p.name for p in (root / "ds_configs").glob("*.json")) == shipped.names("ds_configs")


def test_a_users_file_shadows_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-cpu.yaml").write_text("data_dir: mine\nmax_steps: 3\n")
    assert shipped.find_file("configs/tiny-cpu.yaml", "configs").resolve() == tmp_path / "configs" / "tiny-cpu.yaml"
    assert load_config("configs/tiny-cpu.yaml").data_dir == "mine"
    assert load_config("tiny-cpu", {"data_dir": "d"}).model != TrainConfig().model  # the shipped tiny architecture


def test_unknown_name_lists_what_is_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml: not found .*tiny-cpu\.yaml"):
        shipped.find_file("configs/nope.yaml", "configs")
    with pytest.raises(ConfigError, match=r"'deepspeed'.*zero9\.json: not found .*zero3\.json"):
        find_deepspeed_file("ds_configs/zero9.json")
    with pytest.raises(ConfigError, match=r"config file not found: nope\.yaml"):
        load_config("nope.yaml")
