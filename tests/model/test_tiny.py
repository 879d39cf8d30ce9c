"""mmpt/model/tiny.py: the tiny random models and tokenizer that doctor and the tests build on."""

from __future__ import annotations

import pytest
import torch

from mmpt.modality import COMMENTS, EOT, MASK, PAD, PYTHON
from mmpt.model.tiny import TINY_CONFIGS, tiny_model, tiny_tokenizer


def test_tokenizer_has_each_sentinel_as_one_token():
    tok = tiny_tokenizer()
    assert len(tok) == 64 and tok.pad_token == PAD
    for sentinel in (COMMENTS, PYTHON, EOT, MASK):
        assert len(tok(sentinel, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_tiny_models_are_seeded_and_sized(arch):
    a, b = tiny_model(arch, vocab=70, seed=3), tiny_model(arch, vocab=70, seed=3)
    assert a.config.model_type == arch and not a.training
    assert a.get_input_embeddings().weight.shape[0] == 70
    ids = torch.arange(8).unsqueeze(0)
    assert torch.equal(a(ids).logits, b(ids).logits)  # same seed, same weights
    assert not torch.equal(a(ids).logits, tiny_model(arch, vocab=70, seed=4)(ids).logits)


def test_unknown_arch_is_named():
    with pytest.raises(ValueError, match="no tiny config for model type 'mistral'"):
        tiny_model("mistral")
