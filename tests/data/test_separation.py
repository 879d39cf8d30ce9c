"""Tests of the token list and map building in mmpt/data/separation.py."""

from __future__ import annotations

import builtins
import keyword
import token

import pytest

from mmpt.data.separation import build_separation_map, default_separate_tokens


def test_default_tokens_come_from_the_language():
    tokens = default_separate_tokens()
    assert len(tokens) == len(set(tokens))
    expected = set(keyword.kwlist) | set(keyword.softkwlist) | set(token.EXACT_TOKEN_TYPES)
    expected |= {"len", "isinstance", "ValueError", "append", "items", "startswith", "union", "setdefault"}
    for base in expected:
        assert base in tokens and " " + base in tokens, base
    assert "__import__" not in tokens and " _private" not in tokens
    assert all(not t.startswith(" ") or t[1:] in tokens for t in tokens)
    assert {t.strip() for t in tokens} <= expected | set(dir(builtins)) | {
        m for kind in (str, list, dict, set) for m in dir(kind)
    }


def test_partial_separates_single_pieces_and_reports_the_rest(tiny_tokenizer):
    tokens = ["def", " def", "return", " return", "(", ")", ":", " isinstance", "setdefault"]
    smap, split = build_separation_map(tiny_tokenizer, "partial", tokens)
    assert smap.base_vocab_size == len(tiny_tokenizer)
    # independent check with the tokenizer's own piece-splitting
    pieces = {t: tiny_tokenizer.tokenize(t) for t in tokens}
    assert split == [t for t in tokens if len(pieces[t]) > 1]
    single = sorted({tiny_tokenizer.convert_tokens_to_ids(p[0]) for t, p in pieces.items() if len(p) == 1})
    assert smap.separated == single and len(single) >= 5
    assert smap.tokens == tiny_tokenizer.convert_ids_to_tokens(single)
    assert smap.vocab_size == len(tiny_tokenizer) + len(single)


def test_partial_default_list_and_full_and_none(tiny_tokenizer):
    smap, split = build_separation_map(tiny_tokenizer, "partial")
    assert smap.separated and split  # a 512-token BPE holds some but not all of them
    assert len(smap.separated) + len(split) <= len(default_separate_tokens())
    full, split = build_separation_map(tiny_tokenizer, "full")
    n = len(tiny_tokenizer)
    assert full.separated == list(range(n)) and full.vocab_size == 2 * n and split == []
    none, split = build_separation_map(tiny_tokenizer, "none")
    assert none.separated == [] and none.vocab_size == n and split == []
    with pytest.raises(ValueError, match="separation must be one of"):
        build_separation_map(tiny_tokenizer, "half")
