"""Generated code ids → the completion's text, and where the function ends (both engines stop there).

`CodeText.text` is the one place where generated ids become text: every completion, from either
engine, is decoded there, then cut where the function ends (`CodeText.completion`).
"""

from __future__ import annotations

import re

import torch

from mmpt.data import codeformat
from mmpt.data.separation import SeparationMap
from mmpt.model.split_embeddings import decode_code

# The generated text starts at the beginning of a body line (prompts end with "\n"), so a line at
# column 0 is one that starts the text or follows a newline, and starts with non-whitespace.
_TOP_LEVEL = re.compile(r"^\S", re.MULTILINE)
_NEW_TOP_LEVEL = re.compile(r"\n\S")  # inside a window of the text, whose start is no line start
_WINDOW = 4  # tokens `CodeText.ended` decodes: the two that may start the line, and context for them


def end_of_function(text: str) -> int | None:
    """Offset in generated `text` where top-level code starts (the function has ended), else None."""
    m = _TOP_LEVEL.search(text)
    return m.start() if m else None


class CodeText:
    """Generated code ids → text (`decode_code`), decoded after the prompt's last token.

    Decoding after a context token keeps tokenizers that drop a leading space when a sequence starts
    (sentencepiece) from eating one space of the first line's indentation.
    """

    def __init__(self, tokenizer, smap: SeparationMap) -> None:
        self.tokenizer = tokenizer
        self.smap = smap
        self._pieces: dict[int, str] = {}
        self._original: list[int] = smap.to_original(list(range(smap.vocab_size)))  # code id -> text id

    def _decode(self, ids: list[int]) -> str:
        if any(not 0 <= i < len(self._original) for i in ids):
            return decode_code(self.tokenizer, self.smap, ids)  # raises, naming the range
        return self.tokenizer.decode([self._original[i] for i in ids])

    def text(self, prompt: list[int], generated: list[int]) -> str:
        """The text of `generated` (code ids, copies mapped back) as it continues `prompt`."""
        head = self._decode(prompt[-1:])
        full = self._decode(prompt[-1:] + list(generated))
        return full[len(head) :] if full.startswith(head) else self._decode(list(generated))

    def _piece(self, code_id: int) -> str:
        if code_id not in self._pieces:
            self._pieces[code_id] = self._decode([code_id])
        return self._pieces[code_id]

    def newline_ids(self, rows: int) -> torch.Tensor:
        """(rows,) bool: code ids whose text holds a newline (`ended` can only turn True next to one)."""
        ids = list(range(self.smap.vocab_size))
        pieces = self.tokenizer.batch_decode([[i] for i in self.smap.to_original(ids)])
        self._pieces.update(zip(ids, pieces))
        table = torch.zeros(rows, dtype=torch.bool)
        table[: len(ids)] = torch.tensor(["\n" in piece for piece in pieces])
        return table

    def ended(self, prompt: list[int], generated: list[int]) -> bool:
        """Has the function ended with the last token of `generated`, which did not end before it?

        Decodes only next to a newline token, and then only the last few tokens: a line at column
        0 that was not there one token earlier must start in the text of the last two tokens.
        """
        if len(generated) > 1 and not any("\n" in self._piece(i) for i in generated[-2:]):
            return False  # no newline in the last two tokens: no new line can have started
        if len(generated) <= _WINDOW:
            return end_of_function(self.text(prompt, generated)) is not None
        tail = self.text(generated[-_WINDOW - 1 : -_WINDOW], generated[-_WINDOW:])  # decoded after one token
        return _NEW_TOP_LEVEL.search(tail) is not None

    def completion(self, prompt: list[int], generated: list[int]) -> str:
        """The text of `generated`, cut where the function ends."""
        text = self.text(prompt, generated)
        cut = end_of_function(text)
        return text if cut is None else text[:cut]

    def flat_completion(self, prompt: list[int], generated: list[int], level: int) -> str:
        """The completion of a checkpoint that writes the paper's flattened code: its markers decoded
        to indentation (starting at block `level`), then cut at the end of the function."""
        decoded = codeformat.flat_completion(self.text(prompt, generated), level)
        cut = end_of_function(decoded)
        return decoded if cut is None else decoded[:cut]
