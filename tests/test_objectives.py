"""The objectives' collator: labels, prefix flags, padding and the statistics of the corruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmpt.data.instances import SentinelIds
from mmpt.data.separation import SeparationMap
from mmpt.modality import CODE, NL
from mmpt.objectives import Collator

S = SentinelIds(comments=1, python=2, eot=3, mask=4, pad=0, bos=5)
SMAP = SeparationMap("partial", 1000, [10, 11, 12])
C, P, E = S.comments, S.python, S.eot

# Two docstring-first instances: <comments> d d <python> c c <eot>, then <comments> d <python> c <eot>
ROW = {
    "input_ids": [C, 20, 21, P, 1000, 30, E, C, 22, P, 1001, E],
    "position_ids": [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4],
    "modality": [NL, NL, NL, NL, CODE, CODE, CODE, NL, NL, NL, CODE, CODE],
    "row": 7,
}
X = -100
EXPECTED_LABELS = {
    "text-code-clm": [X, 20, 21, P, 1000, 30, E, X, 22, P, 1001, E],
    "code-clm": [X, X, X, X, 1000, 30, E, X, X, X, 1001, E],
    "corrupt-code-clm": [X, X, X, X, 1000, 30, E, X, X, X, 1001, E],
    "prefix-code-clm": [X, X, X, X, 1000, 30, E, X, X, X, 1001, E],
}


@pytest.mark.parametrize("objective", list(EXPECTED_LABELS))
def test_labels_and_prefix_by_hand(objective):
    out = Collator(objective, S, SMAP, seed=0)([ROW])
    assert out["labels"][0].tolist() == EXPECTED_LABELS[objective]
    assert out["position_ids"][0].tolist() == ROW["position_ids"]
    assert out["modality"][0].tolist() == ROW["modality"]
    prefix = [1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0] if objective == "prefix-code-clm" else [0] * 12
    assert out["prefix"][0].tolist() == [bool(p) for p in prefix]
    if objective != "corrupt-code-clm":
        assert out["input_ids"][0].tolist() == ROW["input_ids"]
    assert {k: v.dtype for k, v in out.items()} == {
        "input_ids": torch.long,
        "position_ids": torch.long,
        "labels": torch.long,
        "modality": torch.long,
        "prefix": torch.bool,
        "loss_index": torch.long,
    }
    # the positions the loss trains, found on the host: each one predicts a labelled token
    want = [t for t in range(11) if EXPECTED_LABELS[objective][t + 1] != X]
    assert out["loss_index"].tolist() == want


def test_signature_first_prefix_covers_the_signature_and_takes_no_loss():
    # <bos> sig sig <comments> d <python> body <eot>
    row = {
        "input_ids": [S.bos, 1000, 40, C, 20, P, 41, E],
        "position_ids": list(range(8)),
        "modality": [NL, CODE, CODE, NL, NL, NL, CODE, CODE],
    }
    out = Collator("prefix-code-clm", S, SMAP)([row])
    assert out["prefix"][0].tolist() == [True] * 6 + [False] * 2
    assert out["labels"][0].tolist() == [X] * 6 + [41, E]  # the signature is seen bidirectionally: no target
    assert Collator("code-clm", S, SMAP)([row])["labels"][0].tolist() == [X, X, X, X, X, X, 41, E]


# A signature-first instance then a docstring-first one in one row:
# <bos> sig sig <comments> d <python> body <eot> | <comments> d <python> c <eot>
SIG_ROW = {
    "input_ids": [S.bos, 1000, 40, C, 20, P, 41, E, C, 22, P, 1001, E],
    "position_ids": list(range(8)) + list(range(5)),
    "modality": [NL, CODE, CODE, NL, NL, NL, CODE, CODE, NL, NL, NL, CODE, CODE],
    "row": 3,
}
SIGNATURE_LABELS = {  # (objective, signature_loss) -> labels
    ("text-code-clm", False): [X, 1000, 40, C, 20, P, 41, E, X, 22, P, 1001, E],
    ("text-code-clm", True): [X, 1000, 40, C, 20, P, 41, E, X, 22, P, 1001, E],
    ("code-clm", False): [X, X, X, X, X, X, 41, E, X, X, X, 1001, E],
    ("code-clm", True): [X, 1000, 40, X, X, X, 41, E, X, X, X, 1001, E],
    ("corrupt-code-clm", False): [X, X, X, X, X, X, 41, E, X, X, X, 1001, E],
    ("corrupt-code-clm", True): [X, 1000, 40, X, X, X, 41, E, X, X, X, 1001, E],
    ("prefix-code-clm", False): [X, X, X, X, X, X, 41, E, X, X, X, 1001, E],
}


@pytest.mark.parametrize("objective,signature_loss", list(SIGNATURE_LABELS))
def test_signature_loss_for_each_objective(objective, signature_loss):
    out = Collator(objective, S, SMAP, signature_loss=signature_loss)([SIG_ROW])
    assert out["labels"][0].tolist() == SIGNATURE_LABELS[objective, signature_loss]


def test_signature_loss_under_prefix_lm_is_refused():
    with pytest.raises(ValueError, match="signature_loss needs a causal objective"):
        Collator("prefix-code-clm", S, SMAP, signature_loss=True)


def test_padding_makes_one_token_instances_without_loss():
    short = {k: v[:7] for k, v in ROW.items() if k != "row"}
    second = {k: v[7:] for k, v in ROW.items() if k != "row"}
    out = Collator("prefix-code-clm", S, SMAP, pad_to=10)([short, second])
    assert out["input_ids"].shape == (2, 10)
    assert out["input_ids"][0, 7:].tolist() == [S.pad] * 3 and out["position_ids"][0, 7:].tolist() == [0] * 3
    assert out["labels"][0, 7:].tolist() == [X] * 3 and not out["prefix"][0, 7:].any()
    assert out["labels"][1].tolist() == [X, X, X, 1001, E] + [X] * 5 and out["position_ids"][1, 5:].eq(0).all()
    assert Collator("code-clm", S, SMAP)([short, short])["input_ids"].shape == (2, 7)  # None: longest row
    with pytest.raises(ValueError, match="pad_to=5"):
        Collator("code-clm", S, SMAP, pad_to=5)([short])


def _doc_rows(count: int, length: int = 100, seed: int = 0) -> list[dict]:
    """Rows of one instance each: <comments>, `length` docstring tokens, <python>, 3 code tokens, <eot>."""
    g = np.random.default_rng(seed)
    rows = []
    for r in range(count):
        doc = g.integers(20, 1000, length).tolist()
        ids = [C, *doc, P, 1000, 1001, 30, E]
        rows.append(
            {
                "input_ids": ids,
                "position_ids": list(range(len(ids))),
                "modality": [NL] * (length + 2) + [CODE] * 4,
                "row": r,
            }
        )
    return rows


def test_corruption_rates():
    """15% of docstring tokens chosen; of those 80% -> <mask>, 20% -> a random NL token."""
    rows = _doc_rows(300)  # 30,000 docstring tokens
    out = Collator("corrupt-code-clm", S, SMAP, seed=3)(rows)
    orig = torch.tensor([r["input_ids"] for r in rows])
    doc = torch.zeros_like(orig, dtype=torch.bool)
    doc[:, 1:101] = True
    masked = (out["input_ids"] == S.mask) & doc
    replaced = (out["input_ids"] != orig) & ~masked
    n = doc.sum().item()
    # a random replacement equals the original with probability 1/|NL vocab| (~0.1%): negligible here
    chosen = masked.sum().item() + replaced.sum().item()
    p = chosen / n
    assert abs(p - 0.15) < 4 * (0.15 * 0.85 / n) ** 0.5  # within 4 standard errors
    q = masked.sum().item() / chosen
    assert abs(q - 0.8) < 4 * (0.8 * 0.2 / chosen) ** 0.5
    assert not replaced[~doc].any() and not masked[~doc].any()  # sentinels and code untouched
    assert torch.equal(out["labels"], Collator("code-clm", S, SMAP)(rows)["labels"])  # targets stay true


def test_random_replacements_come_from_the_nl_vocabulary():
    rows = _doc_rows(200, seed=1)
    out = Collator("corrupt-code-clm", S, SMAP, seed=0, corrupt_rate=1.0, mask_rate=0.0)(rows)
    doc = out["input_ids"][:, 1:101]
    sentinels = torch.tensor([S.comments, S.python, S.eot, S.mask, S.pad, S.bos])
    assert (doc < SMAP.base_vocab_size).all() and not torch.isin(doc, sentinels).any()
    assert len(doc.unique()) > 900  # drawn across the whole NL vocabulary, including ids below 20


def test_corruption_is_a_pure_function_of_seed_epoch_row():
    rows = _doc_rows(4)
    col = Collator("corrupt-code-clm", S, SMAP, seed=5)
    both = col(rows)["input_ids"]
    again = Collator("corrupt-code-clm", S, SMAP, seed=5)([rows[2], rows[0]])["input_ids"]  # another "rank"
    assert torch.equal(again[0], both[2]) and torch.equal(again[1], both[0])
    assert torch.equal(col(rows)["input_ids"], both)  # no hidden state advances between calls
    col.epoch = 1
    assert not torch.equal(col(rows)["input_ids"], both)
    assert not torch.equal(Collator("corrupt-code-clm", S, SMAP, seed=6)(rows)["input_ids"], both)


@pytest.mark.parametrize(
    "objective,row,match",
    [
        ("corrupt-code-clm", {k: v for k, v in ROW.items() if k != "row"}, "lacks 'row'"),
        ("code-clm", {k: v for k, v in ROW.items() if k != "modality"}, "lacks the field 'modality'"),
        ("code-clm", dict(ROW, position_ids=[1] + ROW["position_ids"][1:]), "restart at 0"),
        ("code-clm", dict(ROW, position_ids=[0, 1, 2, 4] + ROW["position_ids"][4:]), r"token 3"),
        ("code-clm", dict(ROW, input_ids=ROW["input_ids"][:-1]), "equally long"),
        ("code-clm", dict(ROW, input_ids=[2000] + ROW["input_ids"][1:]), "input_ids must lie"),
        ("prefix-code-clm", dict(ROW, input_ids=[C, 20, 21, 22] + ROW["input_ids"][4:]), "instance 0.*no <python>"),
    ],
)
def test_bad_rows_get_clear_errors(objective, row, match):
    with pytest.raises(ValueError, match=match):
        Collator(objective, S, SMAP)([ROW, row])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="objective"):
        Collator("mlm", S, SMAP)
    with pytest.raises(ValueError, match="corrupt_rate"):
        Collator("corrupt-code-clm", S, SMAP, corrupt_rate=1.5)
