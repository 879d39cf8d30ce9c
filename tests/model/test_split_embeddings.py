"""Split embeddings: extended rows start as copies, generation stays in code, the map travels."""

from __future__ import annotations

import pytest
import torch

from mmpt.data.separation import SeparationMap
from mmpt.model.split_embeddings import (
    decode_code,
    extend_model,
    restrict_to_code,
)
from mmpt.model.tiny import tiny_model, tiny_tokenizer

BASE = 64  # tiny_tokenizer's length
SEPARATED = [6, 7, 20, 63]


def _weights(model):
    return model.get_input_embeddings().weight.detach().clone(), model.get_output_embeddings().weight.detach().clone()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mmpt_pangu"])
@pytest.mark.parametrize("tied", [True, False])
def test_extend_copies_rows_and_keeps_ties(arch, tied):
    model = tiny_model(arch, vocab=BASE, tied=tied)
    w_in, w_out = _weights(model)
    smap = SeparationMap("partial", BASE, SEPARATED)
    rows = extend_model(model, smap)
    e_in, e_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert rows == 128 and e_in.shape[0] == e_out.shape[0] == model.config.vocab_size == 128  # 68 -> multiple of 64
    assert (e_out is e_in) == tied
    copies = slice(BASE, BASE + len(SEPARATED))
    assert torch.equal(e_in[:BASE], w_in) and torch.equal(e_in[copies], w_in[SEPARATED])
    assert torch.equal(e_out[:BASE], w_out) and torch.equal(e_out[copies], w_out[SEPARATED])
    if tied:  # still one parameter: a step on the input row moves the output row
        with torch.no_grad():
            e_in[BASE] += 1
        assert torch.equal(model.get_output_embeddings().weight[BASE], e_in[BASE])


@pytest.mark.parametrize("tied", [True, False])
def test_a_fresh_copy_behaves_exactly_like_its_original(tied):
    """Right after extension, remapping code ids changes nothing: same hidden states, and each copy's
    logit equals its original's."""
    model = tiny_model("llama", vocab=BASE, tied=tied)
    smap = SeparationMap("full", BASE, list(range(BASE)))
    extend_model(model, smap)
    ids = torch.randint(0, BASE, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        remapped = model(input_ids=smap.to_code(ids)).logits
    torch.testing.assert_close(remapped, plain, atol=0, rtol=0)
    torch.testing.assert_close(plain[..., BASE : 2 * BASE], plain[..., :BASE], atol=0, rtol=0)


def _biased_head_model(tied: bool):
    """A tiny CodeGen: its head has a bias, which must be resized and copied too (tied or not)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "codegen", vocab_size=BASE, n_embd=32, n_layer=1, n_head=4, rotary_dim=4, n_positions=64, tie_word_embeddings=tied
    )
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_extend_resizes_and_copies_a_biased_head(tied):
    model = _biased_head_model(tied)
    head = model.get_output_embeddings()
    b = head.bias.detach().clone()
    smap = SeparationMap("partial", BASE, SEPARATED)
    assert extend_model(model, smap) == 128
    assert model.get_output_embeddings() is head and head.bias.shape == (128,) and head.out_features == 128
    assert (head.weight is model.get_input_embeddings().weight) == tied
    assert torch.equal(head.bias[:BASE], b) and torch.equal(head.bias[BASE : BASE + 4], b[SEPARATED])
    torch.testing.assert_close(head.bias[BASE + 4 :], b.mean().expand(128 - BASE - 4), atol=0, rtol=0)
    ids = smap.to_code(torch.tensor([[1, 6, 7, 63]]))
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, 4, 128)


@pytest.mark.parametrize("mean_resizing", [True, False])
def test_new_rows_start_at_the_mean_or_small_normal(mean_resizing):
    model = tiny_model("llama", vocab=BASE, tied=False)
    w_in, w_out = _weights(model)
    extend_model(model, SeparationMap("partial", BASE, SEPARATED), mean_resizing=mean_resizing)
    new = slice(BASE + len(SEPARATED), 128)  # rows that are neither originals nor code copies
    for got, old in zip(_weights(model), (w_in, w_out)):
        if mean_resizing:  # (60, H): every new row is the mean of the old ones
            torch.testing.assert_close(got[new], old.mean(0).expand(128 - BASE - 4, -1), atol=1e-7, rtol=0)
        else:  # normal(0, initializer_range=0.02): sample std within 10% for 60*32 draws
            assert abs(got[new].std().item() - 0.02) < 0.002 and abs(got[new].mean().item()) < 0.002


def test_extend_leaves_a_large_enough_model_unresized():
    model = tiny_model("gpt2", vocab=128)
    smap = SeparationMap("partial", BASE, SEPARATED)
    w_in, _ = _weights(model)
    assert extend_model(model, smap) == 128
    assert torch.equal(model.get_input_embeddings().weight[BASE : BASE + 4], w_in[SEPARATED])


def test_restrict_to_code_masks_nl_only_and_padding_rows():
    smap = SeparationMap("partial", BASE, SEPARATED)
    _, code = smap.vocab_masks(128)
    logits = torch.randn(2, 3, 128)
    logits[..., SEPARATED] = 100.0  # the originals of separated tokens would win without the restriction
    out = restrict_to_code(logits, code)
    assert torch.isinf(out[..., ~code]).all() and torch.equal(out[..., code], logits[..., code])
    assert code[out.argmax(-1)].all()
    with pytest.raises(ValueError, match="code_mask"):
        restrict_to_code(logits, code[:10])


def test_decode_maps_copies_back_to_text():
    tok = tiny_tokenizer()
    smap = SeparationMap("partial", len(tok), SEPARATED)
    ids = tok("w0 w1 w14 w57", add_special_tokens=False)["input_ids"]
    assert decode_code(tok, smap, smap.to_code(ids)) == tok.decode(ids) == "w0 w1 w14 w57"
    with pytest.raises(ValueError, match="restricted"):
        decode_code(tok, smap, [smap.vocab_size])


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("mean_resizing", [True, False])
def test_new_sentinels_in_spare_rows_start_as_new_rows(tied, mean_resizing):
    """A Qwen-style checkpoint: 128 rows, but its tokenizer has 60 ids; prepare appended 4 sentinels (ids
    60..63), whose rows the checkpoint already has, holding untrained values."""
    trained = 60
    model = tiny_model("llama", vocab=128, tied=tied)
    with torch.no_grad():
        model.get_input_embeddings().weight[trained:] = 1e3  # garbage in the spare rows
        model.get_output_embeddings().weight[trained:] = -1e3
    w_in, w_out = _weights(model)
    smap = SeparationMap("partial", BASE, [6, 61])  # a separated sentinel's copy follows its new row
    assert extend_model(model, smap, trained_rows=trained, mean_resizing=mean_resizing) == 128
    for got, old in zip(_weights(model), (w_in, w_out)):
        assert torch.equal(got[:trained], old[:trained])
        new = got[trained:BASE]  # (4, H)
        if mean_resizing:  # like the rows a resize adds: the mean of the trained rows
            torch.testing.assert_close(new, old[:trained].mean(0).expand(BASE - trained, -1), atol=1e-7, rtol=0)
        else:  # normal(0, 0.02): nowhere near the garbage
            assert new.abs().max() < 0.15 and new.std() > 0.005
        assert torch.equal(got[BASE], got[6]) and torch.equal(got[BASE + 1], got[61])  # copies of the new rows
        assert torch.equal(got[BASE + 2 :], old[BASE + 2 :])  # padding rows past the map are not touched
    # the rows a resize adds use the same mean: of the trained rows only, not of the spare garbage
    model = tiny_model("llama", vocab=BASE, tied=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[trained:] = 1e3
    w_in, _ = _weights(model)
    extend_model(model, SeparationMap("partial", BASE, SEPARATED), trained_rows=trained)
    torch.testing.assert_close(model.get_input_embeddings().weight[100], w_in[:trained].mean(0), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match=r"trained_rows must lie in 1..64"):
        extend_model(model, SeparationMap("partial", BASE, SEPARATED), trained_rows=65)
