"""mmpt/model/build.py: the model a run trains, refused before it is built when its rows do not fit it."""

from __future__ import annotations

import pytest

from mmpt.config import ConfigError, load_config
from mmpt.data.separation import SeparationMap
from mmpt.model.build import build_model

ARCH = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def test_starcoder2_rows_longer_than_its_window_are_a_config_error():
    arch = {"model_type": "starcoder2", **ARCH, "sliding_window": 64, "bos_token_id": 0, "eos_token_id": 0}
    config = load_config(None, {"data_dir": "unused", "gradient_checkpointing": "false"})
    config.model = arch
    smap = SeparationMap("partial", 300, [5, 7], ["a", "b"])
    ds = {"zero_optimization": {"stage": 2}}
    with pytest.raises(ConfigError, match="max_seq_length 96 is longer than the sliding window of 'starcoder2'"):
        build_model(config, smap, ds, "fp32", max_seq_length=96)
    model = build_model(config, smap, ds, "fp32", max_seq_length=64)
    assert model.config.model_type == "starcoder2"
    assert model.get_input_embeddings().weight.shape[0] >= 302  # the code copies of the two separated tokens
