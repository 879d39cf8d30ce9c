"""Tests of the token list and map building in mmpt/data/separation.py."""

from __future__ import annotations

import builtins
import json
import keyword
import token

import pytest

from mmpt.data.separation import build_separation_map, default_separate_tokens, with_space_forms


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


def test_space_forms_of_a_bare_list():
    assert with_space_forms(["if", "if", " in", "->"]) == ["if", " if", " in", "->", " ->"]


def test_prepare_reads_a_paper_style_list_and_reports_what_is_not_one_token(assets, tmp_path, tiny_tokenizer, capsys):
    from mmpt.data.prepare import main

    # the shape of the paper's list: one bare token per line, duplicates and multi-piece entries included
    entries = ["def", "return", "if", "if", "(", "assertEqual", "NoneType", "->"]
    (tmp_path / "python_tokens.txt").write_text("\n".join(entries) + "\n")
    args = ["--pairs", str(assets / "pairs.jsonl"), "--tokenizer", str(assets / "tokenizer"), "--max-seq-length", "512",
            "--separation", "partial", "--separate-tokens", str(tmp_path / "python_tokens.txt"), "--space-forms"]  # fmt: skip
    assert main(args + ["--out", str(tmp_path / "o")]) == 0
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    forms = with_space_forms(entries)
    not_single = [t for t in forms if len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) != 1]
    assert meta["split_tokens"] == not_single and " return" not in not_single
    err = capsys.readouterr().err
    assert all(repr(t) in err for t in not_single)  # every entry of a user's list is named, not only ten
    single = {tiny_tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in forms if t not in not_single}
    assert meta["id_map"]["separated"] == sorted(single)


def test_full_without_special_tokens_copies_every_other_id(tiny_tokenizer):
    smap, _ = build_separation_map(tiny_tokenizer, "full", special_tokens=False)
    specials = {tiny_tokenizer.convert_tokens_to_ids(t) for t in ("<comments>", "<python>", "<eot>", "<mask>")}
    specials.add(tiny_tokenizer.pad_token_id)
    assert specials <= set(tiny_tokenizer.all_special_ids)  # the sentinels are special tokens
    assert smap.separated == [i for i in range(len(tiny_tokenizer)) if i not in set(tiny_tokenizer.all_special_ids)]
    assert not specials & set(smap.separated) and smap.to_code(sorted(specials)) == sorted(specials)
