"""The modality-relative loss fused with the output head: chunked, so (B, N, V) logits never exist.

`modality_loss` (mmpt/model/loss.py) takes the model's logits; for B=2, N=2048 and Qwen's 151,936
rows those are 1.24 GB in bf16, and autograd keeps fp32 copies of every chunk for backward. Here
the head and the loss are one autograd function over the final hidden states and the output
embedding:

- forward walks the predicted positions in row chunks of about `BLOCK_BYTES` of fp32 logits and
  keeps only each position's masked log-sum-exp (M floats);
- backward recomputes the logits in vocabulary blocks from that log-sum-exp, so that each block of
  d logits = softmax - onehot (masked to the target's modality, scaled by the incoming gradient of
  that modality's sum) gives its rows of the weight gradient in one matmul (written once, with
  no rounding from accumulating across chunks) and adds its share of the hidden-state gradient.

The extra memory is O(M·H + BLOCK_BYTES) plus the weight gradient every backward produces anyway.

Under ZeRO-3 a parameter is only whole inside its module's forward and backward, so `packed_loss`
runs the function *as* the output head: it swaps the head module's `forward` for the fused loss for
one call of the stock model. DeepSpeed's hooks on the head then gather the weight (tied or not,
split embeddings included: they are the same head module) before the forward, re-gather it before
the backward, and reduce its gradient as for any other parameter; the model returns the two loss
sums where it would return logits. That needs a head that is a plain linear layer (no logit scaling
or soft-capping after it), true of every model type in `mmpt.model.attention.SUPPORTED`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch

from mmpt.modality import CODE
from mmpt.model.attention import _hf_model, packed_forward
from mmpt.model.loss import LossSums, check_shapes
from mmpt.objectives import loss_index

BLOCK_BYTES = 64 * 2**20  # fp32 logits per forward chunk / backward vocabulary block (64 MiB)
MIN_BLOCK = 128  # rows or vocabulary ids per block, however large the other side is


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(rows, V') fp32 logits of hidden rows (rows, H) against weight rows (V', H), computed in the
    model's dtype like the stock head, then upcast (as `modality_loss` upcasts the model's logits)."""
    out = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)
    return out.float()


class FusedModalityLoss(torch.autograd.Function):
    """(code_sum, nl_sum) of the modality-relative cross-entropy of `weight @ hidden[index]`.

    Inputs: hidden (B, N, H); weight (V, H); bias (V,) or None; index (M,) flat positions into
    hidden.view(-1, H) of the predictors; target (M,) ids; is_code (M,) bool target modality;
    nl_mask, code_mask (V,) bool output vocabularies. Gradients flow to hidden, weight and bias.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, index, target, is_code, nl_mask, code_mask):
        h = hidden.reshape(-1, hidden.shape[-1])[index]  # (M, H)
        m, v = len(index), weight.shape[0]
        lse = torch.empty(m, dtype=torch.float32, device=hidden.device)  # masked log-sum-exp per position
        target_logit = torch.empty_like(lse)
        rows = max(MIN_BLOCK, BLOCK_BYTES // (4 * v))
        for s in range(0, m, rows):
            logits = _logits(h[s : s + rows], weight, bias)  # (c, V) fp32
            allowed = torch.where(is_code[s : s + rows, None], code_mask, nl_mask)  # (c, V) bool
            logits.masked_fill_(~allowed, float("-inf"))
            lse[s : s + rows] = torch.logsumexp(logits, dim=-1)
            target_logit[s : s + rows] = logits.gather(1, target[s : s + rows, None]).squeeze(1)
            del logits, allowed
        loss = lse - target_logit  # (M,): -log p(target) within its modality's vocabulary
        code_sum = torch.where(is_code, loss, 0.0).sum()
        nl_sum = torch.where(is_code, 0.0, loss).sum()
        # The weight is saved as itself (not a copy): under ZeRO-3 DeepSpeed re-gathers it before backward.
        ctx.save_for_backward(hidden, weight, bias, index, target, is_code, nl_mask, code_mask, lse)
        return code_sum, nl_sum

    @staticmethod
    def backward(ctx, grad_code, grad_nl):
        hidden, weight, bias, index, target, is_code, nl_mask, code_mask, lse = ctx.saved_tensors
        h = hidden.reshape(-1, hidden.shape[-1])[index]  # (M, H)
        m, v = len(index), weight.shape[0]
        g = torch.where(is_code, grad_code.float(), grad_nl.float())  # (M,): d(total)/d(that position's loss)
        grad_h = torch.zeros(h.shape, dtype=torch.float32, device=h.device)  # (M, H) fp32 accumulator
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_b = torch.empty_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        cols = max(MIN_BLOCK, BLOCK_BYTES // (4 * max(m, 1)))
        for v0 in range(0, v, cols):
            v1 = min(v, v0 + cols)
            w = weight[v0:v1]  # (c, H)
            logits = _logits(h, w, None if bias is None else bias[v0:v1])  # (M, c) fp32
            allowed = torch.where(is_code[:, None], code_mask[v0:v1], nl_mask[v0:v1])  # (M, c)
            d = logits.sub_(lse[:, None]).exp_().masked_fill_(~allowed, 0.0)  # softmax within the modality
            # minus the one-hot of targets inside this block (a scatter, not nonzero(): no host sync)
            local = target - v0  # (M,)
            inside = ((local >= 0) & (local < v1 - v0)).float()
            d.scatter_add_(1, local.clamp(0, v1 - v0 - 1)[:, None], -inside[:, None])
            d.mul_(g[:, None])  # (M, c): d loss / d logits
            d_low = d.to(weight.dtype)
            grad_h += (d_low @ w).float()
            if grad_w is not None:
                grad_w[v0:v1] = d_low.T @ h  # (c, H): this block's rows, complete in one matmul
            if grad_b is not None:
                grad_b[v0:v1] = d.sum(0).to(bias.dtype)
            del logits, allowed, d, d_low
        grad_hidden = None
        if ctx.needs_input_grad[0]:
            grad_hidden = torch.zeros_like(hidden)
            grad_hidden.view(-1, hidden.shape[-1])[index] = grad_h.to(hidden.dtype)
        return grad_hidden, grad_w, grad_b, None, None, None, None, None


def fused_modality_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    modality: torch.Tensor,
    nl_mask: torch.Tensor,
    code_mask: torch.Tensor,
    index: torch.Tensor | None = None,
) -> LossSums:
    """`modality_loss(hidden @ weight.T + bias, labels, modality, nl_mask, code_mask)` without the logits.

    hidden (B, N, H) are the final hidden states, weight (V, H) (and bias (V,)) the output head,
    labels and modality (B, N) as for `modality_loss`. `index` (M,) are the flat positions b·N + t
    of the predictors of the trained targets (`mmpt.objectives.loss_index`, made by the collator on
    the host); without it they are found here with `nonzero`, which on a GPU waits for the device
    (a host sync). The function stays in the graph with no trained position too (zero gradients
    reach every parameter: ZeRO-3 reduces are collective).
    """
    check_shapes(weight.shape[0], tuple(hidden.shape[:2]), "hidden's", labels, modality, nl_mask, code_mask)
    if index is None:
        index = loss_index(labels)
    flat_labels, flat_modality = labels.reshape(-1), modality.reshape(-1)
    target = flat_labels[index + 1]  # (M,): position t predicts token t + 1 of its row
    is_code = flat_modality[index + 1] == CODE
    device = hidden.device
    code_sum, nl_sum = FusedModalityLoss.apply(
        hidden.contiguous(), weight, bias, index, target, is_code, nl_mask.to(device), code_mask.to(device)
    )
    n_code = is_code.sum()
    return LossSums(code_sum, n_code, nl_sum, len(index) - n_code)


@contextlib.contextmanager
def _head_returns_loss(head: torch.nn.Module, compute) -> Iterator[None]:
    """Within the block, calling `head(hidden)` returns `compute(hidden, head)` instead of logits."""
    head.forward = lambda hidden: compute(hidden, head)  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        del head.forward


def packed_loss(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], nl_mask: torch.Tensor, code_mask: torch.Tensor
) -> LossSums:
    """The modality-relative loss sums of packed rows, with the head fused into the loss.

    Same inputs and result as `modality_loss(packed_forward(model, batch), batch["labels"],
    batch["modality"], nl_mask, code_mask)`; `model` may be a DeepSpeed engine (any ZeRO stage).
    `batch["loss_index"]` (the collator's, optional) spares the device a `nonzero`.
    """
    hf = _hf_model(model)
    head = hf.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"the fused loss needs a linear output head, {type(hf).__name__} has {type(head).__name__}")
    counts = {}

    def compute(hidden: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
        s = fused_modality_loss(
            hidden, head.weight, head.bias, batch["labels"], batch["modality"], nl_mask, code_mask, batch.get("loss_index")
        )
        counts["code"], counts["nl"] = s.code_count, s.nl_count
        return torch.stack([s.code_sum, s.nl_sum])  # (2,): what the model hands back as its "logits"

    with _head_returns_loss(head, compute):
        sums = packed_forward(model, batch)
    return LossSums(sums[0], counts["code"], sums[1], counts["nl"])
