"""Tests of mmpt/data/tokenizer.py: the trained BPE and adding sentinels to a foreign tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mmpt.data.instances import sentinel_ids
from mmpt.data.tokenizer import add_sentinels, load_tokenizer, main, synthetic_tokenizer, train_tokenizer
from mmpt.modality import COMMENTS, EOT, MASK, PAD, PYTHON, SENTINELS


def test_trained_bpe_loads_with_sentinels(assets: Path, tmp_path: Path):
    out = tmp_path / "tok"
    train_tokenizer(assets / "pairs.jsonl", 320, out)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert len(tokenizer) == 320
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == list(SENTINELS)
    assert tokenizer.pad_token == PAD and tokenizer.eos_token == EOT
    ids = sentinel_ids(tokenizer)
    assert (ids.comments, ids.python, ids.eot, ids.mask, ids.pad) == (0, 1, 2, 3, 4)
    # sentinels never split, even glued to text; byte-level BPE round-trips any text
    text = f"x{COMMENTS}Return the sum.{PYTHON}def f(a):\n\treturn a + 'é'{EOT}{MASK}"
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [i for i in encoded if i < 5] == [0, 1, 2, 3]
    assert tokenizer.decode(encoded) == text
    code = json.loads((assets / "pairs.jsonl").read_text().splitlines()[0])["code"]
    assert tokenizer.decode(tokenizer(code, add_special_tokens=False)["input_ids"]) == code


def test_cli_and_too_small_vocab(assets: Path, tmp_path: Path, capsys):
    assert main(["--pairs", str(assets / "pairs.jsonl"), "--vocab-size", "300", "--out", str(tmp_path / "t")]) == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] == 300
    assert main(["--pairs", str(assets / "pairs.jsonl"), "--vocab-size", "100", "--out", str(tmp_path / "u")]) == 2


def _foreign_tokenizer(pad: str | None) -> PreTrainedTokenizerFast:
    """A byte-level BPE without any of mmpt's sentinels, like a backbone's own tokenizer."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + ([pad] if pad else [])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["def f(x):\n    return x + 1\n"] * 10, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token=pad)


def test_add_sentinels_to_a_foreign_tokenizer(tmp_path: Path):
    tokenizer = _foreign_tokenizer(pad=None)
    before = len(tokenizer)
    with pytest.raises(ValueError, match="lacks the sentinels"):
        sentinel_ids(tokenizer)
    add_sentinels(tokenizer)
    assert len(tokenizer) == before + 5  # four sentinels and a pad
    ids = sentinel_ids(tokenizer)
    assert min(ids.comments, ids.python, ids.eot, ids.mask, ids.pad) >= before
    assert tokenizer.pad_token == PAD
    assert tokenizer(f"a{PYTHON}b", add_special_tokens=False)["input_ids"].count(ids.python) == 1
    add_sentinels(tokenizer)
    assert len(tokenizer) == before + 5  # idempotent
    tokenizer.save_pretrained(str(tmp_path / "saved"))
    reloaded = load_tokenizer(str(tmp_path / "saved"))
    assert len(reloaded) == len(tokenizer) and sentinel_ids(reloaded) == ids


def test_add_sentinels_keeps_an_existing_pad():
    tokenizer = _foreign_tokenizer(pad="<|pad|>")
    before = len(tokenizer)
    add_sentinels(tokenizer)
    assert len(tokenizer) == before + 4 and tokenizer.pad_token == "<|pad|>" and PAD not in tokenizer.get_vocab()


def test_load_tokenizer_error_names_the_path(tmp_path: Path):
    with pytest.raises(ValueError, match=r"--tokenizer: no such file or folder '.*/nowhere'"):
        load_tokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--tokenizer: cannot load a tokenizer from '.*/empty'"):
        load_tokenizer(str(tmp_path / "empty"))


@pytest.mark.parametrize("size", [300, 70_000])  # two-byte tokens only; into the three-byte ones
def test_synthetic_tokenizer_has_the_size_and_round_trips(tmp_path: Path, assets: Path, size: int):
    from mmpt.data.prepare import PrepareConfig, prepare

    tokenizer = synthetic_tokenizer(size, tmp_path / "tok")
    assert len(tokenizer) == size and tokenizer.eos_token_id == size - 1
    loaded = load_tokenizer(str(tmp_path / "tok"))  # sentinels and a pad appended after the backbone's ids
    assert len(loaded) == size + 5 and min(loaded.convert_tokens_to_ids([COMMENTS, PYTHON, EOT, MASK, PAD])) == size
    text = 'def f(a, b):\n    """héllo → wörld"""\n    return a + b\n'
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == text and max(ids) < size
    assert size < 1000 or len(ids) < len(text.encode()) * 0.7  # merges that text meets: fewer ids than bytes
    meta = prepare(PrepareConfig(str(assets / "pairs.jsonl"), str(tmp_path / "tok"), str(tmp_path / "data"), max_seq_length=4096))
    assert (meta["tokenizer"]["backbone_vocab_size"], meta["tokenizer"]["vocab_size"]) == (size, size + 5)
    with pytest.raises(ValueError, match="vocab_size must lie in 257"):
        synthetic_tokenizer(256, tmp_path / "x")
