"""mmpt/validate.py: the evaluation beats the hang watchdog after every forward pass."""

from __future__ import annotations

import types

import torch

from mmpt import validate


class _Engine:
    device = torch.device("cpu")
    training = True

    def eval(self) -> None:
        self.training = False

    def train(self, mode: bool = True) -> None:
        self.training = mode


def test_every_validation_batch_beats_the_watchdog(monkeypatch):
    events = []

    def packed_loss(engine, batch, nl_mask, code_mask):
        events.append("forward")
        one = torch.tensor(1.0)
        return types.SimpleNamespace(code_sum=one, code_count=one, nl_sum=one, nl_count=one)

    monkeypatch.setattr(validate, "packed_loss", packed_loss)
    fetch = lambda indices: ({"input_ids": torch.zeros(1, 4, dtype=torch.long)}, 0)
    out = validate.evaluate(_Engine(), fetch, 7, 2, 0, 1, None, None, beat=lambda: events.append("beat"))
    assert events == ["forward", "beat"] * 4  # 7 rows in batches of 2: 4 forward passes, a beat after each
    assert out["loss"] == 1.0
