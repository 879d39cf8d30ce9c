"""mmpt/optim.py: the two learning-rate schedules and AdamW's parameter groups."""

from __future__ import annotations

import pytest

from mmpt.model.tiny import tiny_model
from mmpt.optim import lr_factor, param_groups


# Values worked out by hand from the official rule (source/optimization.py: warm-up step / warmup,
# then max(min_lr / lr, (1 + cos(pi * progress)) / 2)), lr 1e-5, min_lr 1e-6, 1000 steps.
@pytest.mark.parametrize(
    "step, warmup_ratio, lr",
    [
        (0, 0.01, 0.0),  # warm-up starts at 0 (ours at 1/warmup)
        (4, 0.01, 4e-6),  # 4 / 10 of the peak
        (10, 0.01, 1e-5),  # the peak, at the end of warm-up
        (250, 0.0, 8.535533905932737e-06),  # (1 + cos(pi/4)) / 2
        (500, 0.0, 5e-06),
        (700, 0.0, 2.0610737385376343e-06),  # (1 + cos(0.7 pi)) / 2
        (800, 0.0, 1e-6),  # the cosine (9.55e-7) is below the floor: min_lr
        (999, 0.0, 1e-6),
    ],
)
def test_official_lr_schedule_values(step, warmup_ratio, lr):
    assert 1e-5 * lr_factor(step, 1000, warmup_ratio, 0.1, "official") == pytest.approx(lr, rel=1e-12, abs=1e-18)


def test_the_two_schedules_differ_where_the_issue_says():
    # at 80% of the run: official 1.0e-6 (floored), ours 1.86e-6 (rescaled to end at min_lr)
    assert 1e-5 * lr_factor(800, 1000, 0.0, 0.1, "official") == pytest.approx(1e-6)
    assert 1e-5 * lr_factor(800, 1000, 0.0, 0.1, "mmpt") == pytest.approx(1.8594235253127368e-06)


def test_weight_decay_all_decays_biases_and_norms():

    model = tiny_model("gpt2")
    matrices, vectors = param_groups(model, 0.1)
    assert vectors["weight_decay"] == 0.0 and any(p.dim() == 1 for p in vectors["params"])
    (everything,) = param_groups(model, 0.1, decay_all=True)
    assert everything["weight_decay"] == 0.1 and len(everything["params"]) == len(list(model.parameters()))
