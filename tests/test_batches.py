"""mmpt/batches.py: each step's rows on each rank, the epoch's tail, and stand-in rows that train nothing."""

from __future__ import annotations

import pytest
import torch

from mmpt.batches import collate_rows
from mmpt.objectives import Collator, loss_index
from test_objectives import ROW, SMAP, S


@pytest.mark.parametrize("indices", [[2, 0], [], [1, 2, 0, 1]])
def test_tail_and_stand_in_batches_keep_the_full_shape_and_train_nothing_extra(indices):
    """Under flex_attention every micro-batch is (per_device_batch_size, max_seq_length), so that flex
    compiles once: a short or empty one at the epoch's tail is filled with stand-ins that train nothing."""
    rows = [dict(ROW), {k: v[:7] for k, v in ROW.items() if k != "row"}, {k: v[7:] for k, v in ROW.items() if k != "row"}]
    rows[2]["position_ids"] = [0, 1, 2, 3, 4]

    class Rows:  # what a `datasets` dataset returns for a list of indices: column -> list over them
        def __getitem__(self, picked):
            return {k: [rows[i][k] for i in picked] for k in ("input_ids", "position_ids", "modality")}

    full = Collator("code-clm", S, SMAP, pad_to=16)
    batch, tokens = collate_rows(Rows(), full, indices, width=4)
    assert {k: tuple(v.shape) for k, v in batch.items() if k != "loss_index"} == {
        k: (4, 16) for k in ("input_ids", "position_ids", "labels", "modality", "prefix")
    }
    assert tokens == sum(len(rows[i]["input_ids"]) for i in indices)  # stand-ins count no tokens
    assert (batch["labels"][len(indices) :] == -100).all()
    alone = Collator("code-clm", S, SMAP, pad_to=16)([rows[i] | {"row": i} for i in indices]) if indices else None
    if alone is not None:  # the real rows are collated exactly as on their own
        assert torch.equal(batch["labels"][: len(indices)], alone["labels"])
    assert torch.equal(batch["loss_index"], loss_index(batch["labels"]))
    assert (batch["loss_index"] < 16 * len(indices)).all()  # no trained position in a stand-in row
