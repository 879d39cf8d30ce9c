"""The modality-relative loss against a per-position reference and against stock cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mmpt.model.loss as loss_module
from mmpt.data.separation import SeparationMap
from mmpt.modality import CODE, NL
from mmpt.model.loss import modality_loss
from mmpt.model.tiny import tiny_model

B, N, BASE = 2, 12, 40
SMAP = SeparationMap("partial", BASE, [3, 7, 11, 20])


def _case(seed: int = 0, v: int = 64, dtype=torch.float32):
    """Random logits (B, N, v) and labels/modality consistent with SMAP (code labels remapped)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, N, v, generator=g).to(dtype).requires_grad_()
    modality = torch.randint(0, 2, (B, N), generator=g)
    labels = torch.randint(0, BASE, (B, N), generator=g)
    labels = torch.where(modality == CODE, SMAP.to_code(labels), labels)
    labels[torch.rand(B, N, generator=g) < 0.2] = -100
    return logits, labels, modality


def _reference(logits, labels, modality, nl_mask, code_mask):
    """Position by position: log-softmax over the target modality's rows only."""
    sums = {"code": torch.zeros(()), "nl": torch.zeros(())}
    counts = {"code": 0, "nl": 0}
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            name, allowed = ("code", code_mask) if modality[b, t + 1] == CODE else ("nl", nl_mask)
            ids = torch.nonzero(allowed).squeeze(1)
            logp = logits[b, t, ids].float().log_softmax(-1)
            sums[name] = sums[name] - logp[(ids == y).nonzero().item()]
            counts[name] += 1
    return sums, counts


def test_matches_per_position_reference_and_its_gradient():
    logits, labels, modality = _case()
    nl, code = SMAP.vocab_masks(64)
    got = modality_loss(logits, labels, modality, nl, code)
    ref, counts = _reference(logits, labels, modality, nl, code)
    assert got.code_count.item() == counts["code"] and got.nl_count.item() == counts["nl"]
    torch.testing.assert_close(got.code_sum, ref["code"], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(got.nl_sum, ref["nl"], atol=1e-5, rtol=1e-6)
    (g_got,) = torch.autograd.grad(got.total_sum, logits)
    (g_ref,) = torch.autograd.grad(ref["code"] + ref["nl"], logits)
    torch.testing.assert_close(g_got, g_ref, atol=1e-6, rtol=1e-5)


def test_other_modality_rows_get_no_probability_mass():
    logits, labels, modality = _case(1)
    nl, code = SMAP.vocab_masks(64)
    (grad,) = torch.autograd.grad(modality_loss(logits, labels, modality, nl, code).total_sum, logits)
    predicts_code = torch.zeros(B, N, dtype=torch.bool)
    predicts_code[:, :-1] = (labels[:, 1:] != -100) & (modality[:, 1:] == CODE)
    predicts_nl = torch.zeros(B, N, dtype=torch.bool)
    predicts_nl[:, :-1] = (labels[:, 1:] != -100) & (modality[:, 1:] == NL)
    assert grad[predicts_code][:, ~code].abs().max() == 0  # e.g. original rows of separated tokens
    assert grad[predicts_nl][:, ~nl].abs().max() == 0  # code copies and padding rows
    assert grad[predicts_code][:, code].abs().max() > 0


def test_chunking_does_not_change_the_result(monkeypatch):
    logits, labels, modality = _case(2)
    nl, code = SMAP.vocab_masks(64)
    whole = modality_loss(logits, labels, modality, nl, code)
    monkeypatch.setattr(loss_module, "CHUNK", 3)
    chunked = modality_loss(logits, labels, modality, nl, code)
    torch.testing.assert_close(chunked.total_sum, whole.total_sum)


def test_equals_stock_cross_entropy_without_separation():
    """With one vocabulary the sum equals the model's own (mean) loss times the token count."""
    model = tiny_model("gpt2", vocab=64)
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    labels[0, 0] = -100
    modality = torch.tensor([[NL] * 4 + [CODE] * 6])
    out = model(input_ids=ids, labels=labels)
    nl, code = SeparationMap("none", 64).vocab_masks()
    got = modality_loss(out.logits, labels, modality, nl, code)
    assert got.total_count.item() == 9 and got.nl_count.item() == 3
    torch.testing.assert_close(got.total_sum / got.total_count, out.loss)
    flat = F.cross_entropy(out.logits[0, :-1], labels[0, 1:], reduction="sum")
    torch.testing.assert_close(got.total_sum, flat)


def test_half_precision_logits_are_upcast():
    logits, labels, modality = _case(4)
    nl, code = SMAP.vocab_masks(64)
    full = modality_loss(logits, labels, modality, nl, code).total_sum
    half = modality_loss(logits.detach().bfloat16(), labels, modality, nl, code)
    assert half.total_sum.dtype == torch.float32
    torch.testing.assert_close(half.total_sum, full.detach(), rtol=2e-2, atol=0)


def test_shape_errors_name_the_shapes():
    logits, labels, modality = _case()
    nl, code = SMAP.vocab_masks(64)
    with pytest.raises(ValueError, match=r"\(64,\)"):
        modality_loss(logits, labels, modality, nl[:10], code)
    with pytest.raises(ValueError, match="labels"):
        modality_loss(logits, labels[:, :5], modality, nl, code)
