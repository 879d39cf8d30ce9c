"""The four training objectives: a collator turning packed rows into inputs, labels and prefix flags.

    text-code-clm     input unchanged; loss on every token; causal
    code-clm          input unchanged; loss on code tokens; causal
    corrupt-code-clm  docstring tokens corrupted MLM-style; loss on code tokens; causal
    prefix-code-clm   input unchanged; loss on code tokens after the prefix; the prefix (every token
                      up to and including `<python>`) attends bidirectionally, the code causally

Labels follow the Hugging Face convention (label[t] is token t's own id, -100 = no loss; the loss
shifts). The first token of every instance gets -100 since nothing in its instance predicts it.
Under prefix-code-clm the tokens inside the prefix get -100 as well: their predictor sees them
through the bidirectional prefix.

In the signature-first layout the signature is code (code modality, code embedding rows) that comes
before the NL. `signature_loss` says whether the code-only objectives train on it; the official code
does not (the signature is context, like the docstring), so the default is false. Under
prefix-code-clm it sits in the bidirectional prefix and cannot be a target; text-code-clm trains on
every token either way.

Corruption is a pure function of (seed, epoch, row index): one row is corrupted the same way by one
process or by any rank of many, and again after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmpt.data.instances import SentinelIds
from mmpt.data.separation import SeparationMap
from mmpt.modality import CODE, NL, OBJECTIVES

IGNORE = -100  # label of a token that carries no loss (the HF / torch cross-entropy convention)


def loss_index(labels: torch.Tensor) -> torch.Tensor:
    """(M,) long: the flat positions b·N + t whose next token (b, t + 1) is trained (label != -100).

    These are the positions the fused loss gathers (`mmpt.model.fused_loss`); the collator computes
    them on the host, so that the device never runs a `nonzero` (which makes the host wait for it).
    """
    b, t = torch.nonzero(labels[:, 1:] != IGNORE, as_tuple=True)
    return b * labels.shape[1] + t


@dataclass
class Collator:
    """Collate packed rows (dicts of `input_ids`, `position_ids`, `modality`, `row`) into a batch.

    Returns (B, N) tensors `input_ids`, `position_ids`, `labels`, `modality` (long) and `prefix`
    (bool), and `loss_index` (M,) long (`loss_index`: the positions the loss trains, found on the host). N is `pad_to`, or the longest row when `pad_to` is None. Each tail pad is an instance of
    its own (position 0, label -100) so that it attends only to itself.
    """

    objective: str
    sentinels: SentinelIds
    smap: SeparationMap
    seed: int = 0
    pad_to: int | None = None
    corrupt_rate: float = 0.15  # share of docstring tokens chosen for corruption
    mask_rate: float = 0.8  # share of the chosen ones replaced by `<mask>`; the rest by a random NL token
    epoch: int = 0  # set by the trainer at the start of each epoch
    signature_loss: bool = False  # code-clm/corrupt-code-clm: train on the signature (signature-first layout)
    nl_vocab: np.ndarray = field(init=False, repr=False)  # ids a random replacement is drawn from
    _sentinel_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in ("corrupt_rate", "mask_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.signature_loss and self.objective == "prefix-code-clm":
            raise ValueError(
                "signature_loss needs a causal objective: under prefix-code-clm the signature is in the bidirectional prefix"
            )
        if self.pad_to is not None and self.pad_to < 1:
            raise ValueError(f"pad_to must be positive or None, got {self.pad_to}")
        s = self.sentinels
        self._sentinel_ids = np.unique([s.comments, s.python, s.eot, s.mask, s.pad, s.bos])
        # Random replacements come from the NL vocabulary: originals only, never a sentinel.
        base = np.arange(self.smap.base_vocab_size)
        self.nl_vocab = base[~np.isin(base, self._sentinel_ids)]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty list of rows")
        parsed = [self._parse(i, r) for i, r in enumerate(rows)]
        longest = max(len(ids) for ids, _, _ in parsed)
        n = longest if self.pad_to is None else self.pad_to
        if longest > n:
            raise ValueError(f"a row has {longest} tokens, more than pad_to={n}")
        b = len(rows)
        input_ids = np.full((b, n), self.sentinels.pad, dtype=np.int64)
        position_ids = np.zeros((b, n), dtype=np.int64)  # pads: position 0 = an instance of one token
        labels = np.full((b, n), IGNORE, dtype=np.int64)
        modality = np.full((b, n), NL, dtype=np.int64)
        prefix = np.zeros((b, n), dtype=bool)
        for i, (ids, pos, mod) in enumerate(parsed):
            m = len(ids)
            row_prefix = self._prefix(ids, pos, i) if self.objective == "prefix-code-clm" else np.zeros(m, bool)
            labels[i, :m] = self._labels(ids, pos, mod, row_prefix)
            if self.objective == "corrupt-code-clm":
                ids = self._corrupt(ids, mod, self._row_index(rows[i], i))
            input_ids[i, :m], position_ids[i, :m], modality[i, :m], prefix[i, :m] = ids, pos, mod, row_prefix
        return {
            "input_ids": torch.from_numpy(input_ids),
            "position_ids": torch.from_numpy(position_ids),
            "labels": torch.from_numpy(labels),
            "modality": torch.from_numpy(modality),
            "prefix": torch.from_numpy(prefix),
            "loss_index": loss_index(torch.from_numpy(labels)),
        }

    def _parse(self, i: int, row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            ids, pos, mod = (np.asarray(row[k], dtype=np.int64) for k in ("input_ids", "position_ids", "modality"))
        except KeyError as e:
            raise ValueError(f"row {i} of the batch lacks the field {e.args[0]!r}") from None
        if not (ids.ndim == 1 and ids.shape == pos.shape == mod.shape and len(ids) > 0):
            raise ValueError(
                f"row {i}: input_ids, position_ids and modality must be non-empty and equally long, "
                f"got {ids.shape}, {pos.shape}, {mod.shape}"
            )
        # Instances are found by their position 0, so positions must restart at 0 and count up by 1.
        if pos[0] != 0 or not np.all((pos[1:] == 0) | (pos[1:] == pos[:-1] + 1)):
            bad = 0 if pos[0] != 0 else int(np.flatnonzero((pos[1:] != 0) & (pos[1:] != pos[:-1] + 1))[0]) + 1
            raise ValueError(f"row {i}: position_ids must restart at 0 per instance and count up by 1 (token {bad})")
        if not np.all((mod == NL) | (mod == CODE)):
            raise ValueError(f"row {i}: modality must hold only NL={NL} or CODE={CODE}")
        if ids.min() < 0 or ids.max() >= self.smap.vocab_size:
            raise ValueError(f"row {i}: input_ids must lie in [0, {self.smap.vocab_size}) (the separated vocabulary)")
        return ids, pos, mod

    def _labels(self, ids: np.ndarray, pos: np.ndarray, mod: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        labels = ids.copy()
        labels[pos == 0] = IGNORE  # nothing in its instance predicts an instance's first token
        if self.objective != "text-code-clm":
            labels[mod != CODE] = IGNORE
            if not self.signature_loss:
                labels[self._before_python(ids, pos)] = IGNORE  # the signature (code before the NL) is context
        labels[prefix] = IGNORE  # all False unless prefix-code-clm
        return labels

    def _before_python(self, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """(m,) bool: tokens before the first `<python>` of their instance (none where it has no `<python>`)."""
        is_python = ids == self.sentinels.python
        seg = np.cumsum(pos == 0) - 1  # instance index of each token
        seen = np.cumsum(is_python)  # `<python>` tokens up to and including t in the row
        start = np.flatnonzero(pos == 0)
        seen_before = seen - seen[start][seg] + is_python[start][seg]  # ... within t's instance
        has_python = np.add.reduceat(is_python.astype(np.int64), start) > 0
        return (seen_before == 0) & has_python[seg]

    def _prefix(self, ids: np.ndarray, pos: np.ndarray, i: int) -> np.ndarray:
        """(m,) bool: tokens up to and including the first `<python>` of their instance."""
        is_python = ids == self.sentinels.python
        before = np.cumsum(is_python) - is_python  # `<python>` tokens strictly before t in the row
        start = np.flatnonzero(pos == 0)
        seg = np.cumsum(pos == 0) - 1  # instance index of each token
        before -= before[start][seg]  # ... within t's instance
        prefix = before == 0
        has_python = np.add.reduceat(is_python.astype(np.int64), start) > 0
        if not has_python.all():
            k = int(np.flatnonzero(~has_python)[0])
            raise ValueError(f"row {i}: instance {k} (token {start[k]}) has no <python> to end its NL prefix")
        return prefix

    def _row_index(self, row: dict, i: int) -> int:
        if "row" not in row:
            raise ValueError(
                f"row {i} of the batch lacks 'row' (its dataset index, added by the trainer's loader); "
                "corrupt-code-clm needs it to corrupt as a pure function of (seed, epoch, row)"
            )
        return int(row["row"])

    def _corrupt(self, ids: np.ndarray, mod: np.ndarray, row: int) -> np.ndarray:
        """MLM-style corruption of the docstring tokens (NL, not sentinels) of one row."""
        rng = np.random.default_rng([self.seed, self.epoch, row])
        m = len(ids)
        # Draw for every token so the draws of token t do not depend on the others' modality.
        chosen = (rng.random(m) < self.corrupt_rate) & (mod == NL) & ~np.isin(ids, self._sentinel_ids)
        to_mask = chosen & (rng.random(m) < self.mask_rate)
        to_random = chosen & ~to_mask
        out = ids.copy()
        out[to_mask] = self.sentinels.mask
        out[to_random] = self.nl_vocab[rng.integers(0, len(self.nl_vocab), m)][to_random]
        return out
