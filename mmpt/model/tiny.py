"""Tiny random models and a word-level tokenizer with the sentinels: for `mmpt doctor` and the tests."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from mmpt.modality import COMMENTS, EOT, MASK, PAD, PYTHON

# Tiny configs, small enough to run in a second on a laptop CPU; GPT-Neo's window (4) is shorter
# than the instances so that its local layers are exercised.
_LLAMA_SHAPE = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
TINY_CONFIGS: dict[str, dict] = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),
    "gpt_neo": dict(
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        window_size=4,
        max_position_embeddings=128,
    ),
    "llama": _LLAMA_SHAPE,
    "qwen2": _LLAMA_SHAPE,  # Qwen2 is Llama's shape (plus q/k/v biases, which its config adds itself)
    "codegen": dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=128, n_ctx=128),
    "mmpt_pangu": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),  # PanGu-α: GPT-2's shape + top query
    # StarCoder2 with a sliding window longer than the tiny rows (the instance alone runs the model's own window)
    "starcoder2": _LLAMA_SHAPE | dict(sliding_window=64),
}


def tiny_tokenizer():
    """An in-memory word-level tokenizer with the sentinels (64 tokens), for random models."""
    from transformers import PreTrainedTokenizerFast

    words = [PAD, COMMENTS, PYTHON, EOT, MASK, "<unk>"] + [f"w{i}" for i in range(58)]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token="<unk>", additional_special_tokens=[COMMENTS, PYTHON, EOT, MASK]
    )


def tiny_model(arch: str, impl: str = "eager", *, vocab: int = 96, tied: bool = True, seed: int = 0):
    """A random fp32 causal LM of model type `arch` (a key of TINY_CONFIGS), in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in TINY_CONFIGS:
        raise ValueError(f"no tiny config for model type {arch!r}; known: {', '.join(TINY_CONFIGS)}")
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        arch, vocab_size=vocab, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0, **TINY_CONFIGS[arch]
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=impl, dtype=torch.float32).eval()
