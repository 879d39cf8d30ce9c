"""mmpt.eval.completion: where a function ends, and code ids back to text."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from mmpt.data.separation import build_separation_map
from mmpt.eval.completion import CodeText, end_of_function

REPO = Path(__file__).resolve().parents[2]

# --- end of function --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, cut",
    [
        ("    return a\n", None),
        ("    x = 1\n\n    return x\n", None),
        ("    return a\ndef g():\n", 13),  # the next def starts at column 0
        ("    return a\n\n\nprint(1)", 15),  # blank lines kept, the call is cut
        ("    return a\n# comment\n", 13),  # a column-0 comment is top-level too
        ("return a\n", 0),  # not indented: the body never started
        ("    s = 'a'\n  \t\n    t = 2", None),  # whitespace-only lines do not end it
    ],
)
def test_end_of_function(text: str, cut: int | None) -> None:
    assert end_of_function(text) == cut


def test_code_text_maps_copies_back_and_finds_the_end() -> None:
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "assets" / "tokenizer")
    smap, _ = build_separation_map(tokenizer, "partial")
    text = CodeText(tokenizer, smap)

    def code_ids(s: str) -> list[int]:
        return smap.to_code(tokenizer(s, add_special_tokens=False)["input_ids"])

    prompt, body = code_ids("def f(a):\n"), "    return a + 1\n\ndef g():\n    pass\n"
    gen = code_ids(body)
    assert any(t >= smap.base_vocab_size for t in gen)  # partial separation: some ids are code copies
    assert text.text(prompt, gen) == body
    assert text.completion(prompt, gen) == "    return a + 1\n\n"
    # the cheap check says "ended" first exactly where the decoded text first has a column-0 line
    first = next(k for k in range(1, len(gen) + 1) if text.ended(prompt, gen[:k]))
    assert first == next(k for k in range(1, len(gen) + 1) if end_of_function(text.text(prompt, gen[:k])) is not None)
    assert text.text(prompt, gen[:first]).endswith("\nd") or text.text(prompt, gen[:first]).endswith("\ndef")
