"""The modality-relative cross-entropy: NL targets over the NL vocabulary, code over the code one.

Position t predicts label t+1 (labels are unshifted, HF convention) and normalises only over the
vocabulary of token t+1's modality; the other modality's rows are masked out of the softmax. Sums
and counts are returned rather than means so that the trainer can normalise by the global token
count across ranks and micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmpt.modality import CODE, NL

IGNORE = -100
CHUNK = 4096  # predicted positions per softmax chunk: bounds the temporary (chunk, V) float copy


@dataclass
class LossSums:
    """Summed token losses and token counts per target modality (0-dim tensors)."""

    code_sum: torch.Tensor
    code_count: torch.Tensor
    nl_sum: torch.Tensor
    nl_count: torch.Tensor

    @property
    def total_sum(self) -> torch.Tensor:
        return self.code_sum + self.nl_sum

    @property
    def total_count(self) -> torch.Tensor:
        return self.code_count + self.nl_count


def _masked_nll_sum(
    logits: torch.Tensor, b: torch.Tensor, t: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """Sum over the positions (b, t) of -log softmax(logits[b, t] restricted to `allowed`)[target]."""
    total = logits.new_zeros((), dtype=torch.float32)
    for s in range(0, len(b), CHUNK):
        rows = logits[b[s : s + CHUNK], t[s : s + CHUNK]]  # (c, V) gathered copy, in the logits' dtype
        # The only float32 copy (kept for backward by logsumexp); masked rows drop out of the softmax.
        rows = rows.float().masked_fill_(~allowed, float("-inf"))
        target = rows.gather(1, targets[s : s + CHUNK, None]).squeeze(1)  # (c,)
        total = total + (torch.logsumexp(rows, dim=-1) - target).sum()
    return total


def check_shapes(
    v: int, rows: tuple[int, int], source: str, labels: torch.Tensor, modality: torch.Tensor, nl_mask, code_mask
) -> None:
    """ValueError unless the masks are (v,) and labels and modality are `source`'s (B, N) `rows`."""
    if nl_mask.shape != (v,) or code_mask.shape != (v,):
        raise ValueError(f"vocabulary masks must be ({v},), got {tuple(nl_mask.shape)} and {tuple(code_mask.shape)}")
    if labels.shape != rows or modality.shape != labels.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and modality {tuple(modality.shape)} must be {source} (B, N) {rows}")


def modality_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    modality: torch.Tensor,
    nl_mask: torch.Tensor,
    code_mask: torch.Tensor,
) -> LossSums:
    """Modality-relative cross-entropy sums of logits (B, N, V) against labels (B, N).

    `modality` (B, N) holds NL/CODE per token; `nl_mask`, `code_mask` (V,) bool are the two output
    vocabularies (`SeparationMap.vocab_masks(V)`). A target outside its modality's vocabulary gives
    an infinite loss (it means the data and the separation map disagree).
    """
    check_shapes(logits.shape[-1], tuple(logits.shape[:2]), "logits'", labels, modality, nl_mask, code_mask)
    target = labels[:, 1:]  # (B, N-1): what position t predicts
    target_modality = modality[:, 1:]
    nl_mask, code_mask = nl_mask.to(logits.device), code_mask.to(logits.device)
    sums = {}
    for name, mod, allowed in (("code", CODE, code_mask), ("nl", NL, nl_mask)):
        b, t = torch.nonzero((target != IGNORE) & (target_modality == mod), as_tuple=True)  # predictor positions
        sums[f"{name}_sum"] = _masked_nll_sum(logits, b, t, target[b, t], allowed)
        sums[f"{name}_count"] = torch.tensor(len(b), device=logits.device)
    return LossSums(**sums)
