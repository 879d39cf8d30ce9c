"""The model a run trains: the backbone (pre-trained, or an architecture from random init) with its code-copy rows."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations import HfDeepSpeedConfig

from mmpt.config import ConfigError, TrainConfig
from mmpt.data.separation import SeparationMap
from mmpt.hub import from_hub
from mmpt.model.attention import check_supported, check_window
from mmpt.model.split_embeddings import extend_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_model(
    config: TrainConfig,
    smap: SeparationMap,
    ds_config: dict,
    precision: str,
    trained_rows: int | None = None,
    max_seq_length: int | None = None,
):
    """The backbone with its code-copy rows; under ZeRO-3 it is built already partitioned.

    `HfDeepSpeedConfig` must stay alive while transformers builds and resizes the model: it is what
    makes `from_pretrained`/`from_config` construct every layer inside `deepspeed.zero.Init`, so no
    rank ever holds the whole model. It dies on return, so that the export at the end builds a
    plain model. `extend_model` builds the larger embeddings partitioned too (inside
    `deepspeed.zero.Init` with this config), and fills them and the code-copy rows in gathers,
    since writing `.data` of a ZeRO-3 parameter would change nothing. A model type or attention
    path not verified for packed rows, or rows (`max_seq_length`, the data's) longer than the
    model's sliding window, is a ConfigError before anything is built.
    """
    if isinstance(config.model, dict):
        arch = dict(config.model)
        model_type = arch.pop("model_type", None)
        if model_type is None:
            raise ConfigError("config field 'model': an architecture mapping needs 'model_type'")
        hf_config = AutoConfig.for_model(model_type, **arch, vocab_size=smap.base_vocab_size)
    else:
        with from_hub(config.model, "config field 'model'"):  # a hub miss: one line (a ConfigError), no traceback
            hf_config = AutoConfig.from_pretrained(config.model)
    try:
        check_supported(hf_config.model_type, config.attn_implementation)
        check_window(hf_config, max_seq_length)
    except ValueError as e:
        raise ConfigError(
            f"config field 'model' ({config.model if isinstance(config.model, str) else model_type}): {e}"
        ) from None
    zero3 = ds_config["zero_optimization"]["stage"] == 3
    keep_alive = HfDeepSpeedConfig(ds_config) if zero3 else None
    kwargs = {"attn_implementation": config.attn_implementation, "dtype": DTYPES[precision]}
    if isinstance(config.model, dict):
        model = AutoModelForCausalLM.from_config(hf_config, **kwargs)
    else:
        with from_hub(config.model, "config field 'model'"):  # a hub miss: one line (a ConfigError), no traceback
            model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    extend_model(model, smap, ds_config=ds_config if zero3 else None, trained_rows=trained_rows)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    del keep_alive
    return model
