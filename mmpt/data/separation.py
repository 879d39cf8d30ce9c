"""Which tokens get a code-only embedding row, and the id map between NL and code ids."""

from __future__ import annotations

import builtins
import keyword
import token
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmpt.jsonl import read_json, write_json
from mmpt.modality import SEPARATIONS

if TYPE_CHECKING:  # torch and numpy are imported where they are used: the data commands' `--help` and
    # `mmpt execute` (which reaches this module through the benchmarks' text rules) do not load them
    import numpy as np
    import torch

MAP_FILE = "separation.json"


@dataclass
class SeparationMap:
    """The id map of a separation.

    `base_vocab_size` is the tokenizer's length (sentinels included). The code copy of the original
    id `separated[i]` gets the id `base_vocab_size + i`; ids below `base_vocab_size` are originals.
    With `none` the map is empty and every function here is the identity.
    """

    separation: str
    base_vocab_size: int
    separated: list[int] = field(default_factory=list)  # original ids, sorted, unique
    tokens: list[str] = field(default_factory=list)  # their token strings, for reports

    def __post_init__(self) -> None:
        if self.separation not in SEPARATIONS:
            raise ValueError(f"separation must be one of {SEPARATIONS}, got {self.separation!r}")
        if self.separated != sorted(set(self.separated)):
            raise ValueError("separated ids must be sorted and unique")
        if self.separated and not (0 <= self.separated[0] and self.separated[-1] < self.base_vocab_size):
            raise ValueError("separated ids must lie inside the base vocabulary")
        import numpy as np  # inside: `mmpt execute` reaches this module and needs no numpy to start

        # original id -> code id, as a dense table over the base vocabulary (identity elsewhere)
        table = np.arange(self.base_vocab_size, dtype=np.int64)
        table[np.asarray(self.separated, dtype=np.int64)] = self.base_vocab_size + np.arange(len(self.separated))
        self._to_code = table
        self._to_original = np.concatenate([np.arange(self.base_vocab_size), np.asarray(self.separated, dtype=np.int64)])

    @property
    def vocab_size(self) -> int:
        """Rows the model needs: the base vocabulary plus one code copy per separated token."""
        return self.base_vocab_size + len(self.separated)

    def to_code(self, ids):
        """Remap original ids as they occur in code (numpy array, tensor or list)."""
        return _apply(self._to_code, ids)

    def to_original(self, ids):
        """Map code copies back to their original ids (for decoding to text)."""
        return _apply(self._to_original, ids)

    def vocab_masks(self, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(nl_allowed, code_allowed): boolean (rows,) masks of the two output vocabularies.

        NL predicts over the originals; code over the originals that were not separated plus the
        copies. Rows past `vocab_size` (a model's padded embedding) belong to neither.
        """
        import torch

        rows = self.vocab_size if rows is None else rows
        if rows < self.vocab_size:
            raise ValueError(f"model has {rows} embedding rows, the separation needs {self.vocab_size}")
        nl = torch.zeros(rows, dtype=torch.bool)
        nl[: self.base_vocab_size] = True
        code = nl.clone()
        code[torch.as_tensor(self.separated, dtype=torch.long)] = False
        code[self.base_vocab_size : self.vocab_size] = True
        return nl, code

    def to_dict(self) -> dict:
        return {
            "separation": self.separation,
            "base_vocab_size": self.base_vocab_size,
            "separated": list(self.separated),
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SeparationMap:
        return cls(d["separation"], int(d["base_vocab_size"]), [int(i) for i in d["separated"]], list(d.get("tokens", [])))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MAP_FILE
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> SeparationMap:
        path = Path(directory) / MAP_FILE
        try:
            return cls.from_dict(read_json(path, dict))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no separation map beside this checkpoint") from None
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: malformed separation map ({e})") from None

    @classmethod
    def load_or_none(cls, directory: str | Path, base_vocab_size: int) -> SeparationMap:
        """The map saved in `directory`, or the identity map when there is none."""
        if (Path(directory) / MAP_FILE).exists():
            return cls.load(directory)
        return cls("none", base_vocab_size)


def _apply(table: np.ndarray, ids):
    import numpy as np
    import torch

    if isinstance(ids, torch.Tensor):
        return torch.as_tensor(table, device=ids.device)[ids]
    if isinstance(ids, np.ndarray):
        return table[ids]
    return table[np.asarray(ids, dtype=np.int64)].tolist()


# ---- which tokens to separate -------------------------------------------------------------------


def default_separate_tokens() -> list[str]:
    """The partial-separation strings, derived from the running Python itself.

    Keywords (soft keywords too), the operators and delimiters of `token`, the public builtins, and
    the public methods of str/list/dict/set; each bare and space-prefixed (" if"), because byte-level
    BPE tokenizers hold both forms. Order is stable: by group, then as listed, duplicates dropped.
    """
    words = list(keyword.kwlist) + list(keyword.softkwlist)
    operators = sorted(token.EXACT_TOKEN_TYPES)
    names = [n for n in dir(builtins) if not n.startswith("_")]
    methods = [m for kind in (str, list, dict, set) for m in dir(kind) if not m.startswith("_")]
    seen: dict[str, None] = {}
    for base in words + operators + names + methods:
        seen.setdefault(base)
        seen.setdefault(" " + base)
    return list(seen)


def with_space_forms(tokens: list[str]) -> list[str]:
    """Each string and its space-prefixed form (" if"), duplicates dropped, order kept.

    The paper's code reads its list (one bare token per line, e.g. its `python_tokens.txt`) this
    way: every entry is separated bare and with the tokenizer's word-start mark ('Ġ' in byte-level
    BPE, '▁' in sentencepiece), which is how " if" encodes. Entries that are not one token either way
    are reported by `build_separation_map`; the paper's code added them to the vocabulary instead.
    """
    seen: dict[str, None] = {}
    for text in tokens:
        seen.setdefault(text)
        if not text.startswith(" "):
            seen.setdefault(" " + text)
    return list(seen)


def add_entry_tokens(tokenizer, entries: list[str]) -> list[str]:
    """Add each entry of a separation list that `tokenizer` encodes as several pieces as a token of its
    own, as the official scripts do (lm_trainer.py adds it, then its copy); returns those entries.

    An added token is matched in the raw text before the backbone's pre-tokenizer, so it also splits
    off the space before each occurrence: " isinstance" becomes "Ġ" + "isinstance", in NL and code
    alike. Space-prefixed entries are not added: the official adds their "Ġ" spelling, which no text
    produces. Flags as the official's (transformers 4.19's `add_tokens`): not special, normalized,
    no stripping, matched inside words too.
    """
    bare = [e for e in dict.fromkeys(entries) if e and not e.startswith(" ")]
    encoded = tokenizer(bare, add_special_tokens=False)["input_ids"] if bare else []
    new = [e for e, ids in zip(bare, encoded) if len(ids) != 1]
    from tokenizers import AddedToken

    tokenizer.add_tokens(
        [AddedToken(e, single_word=False, lstrip=False, rstrip=False, normalized=True, special=False) for e in new]
    )
    return new


def build_separation_map(
    tokenizer, separation: str, tokens: list[str] | None = None, special_tokens: bool = True
) -> tuple[SeparationMap, list[str]]:
    """(map, split): the SeparationMap of `separation` for `tokenizer`, and the requested strings
    that the tokenizer encodes as several pieces (reported, not separated).

    partial: each string of `tokens` (default `default_separate_tokens()`) that encodes to exactly
    one id separates that id. full: every id of the tokenizer, sentinels included unless not
    `special_tokens` (then no special token is copied: the official full separation).
    """
    if separation not in SEPARATIONS:
        raise ValueError(f"separation must be one of {SEPARATIONS}, got {separation!r}")
    base = len(tokenizer)
    if separation == "none":
        return SeparationMap("none", base), []
    if separation == "full":
        specials = set() if special_tokens else set(tokenizer.all_special_ids)
        ids = [i for i in range(base) if i not in specials]
        return SeparationMap("full", base, ids, tokenizer.convert_ids_to_tokens(ids)), []
    tokens = default_separate_tokens() if tokens is None else tokens
    encoded = tokenizer(list(tokens), add_special_tokens=False)["input_ids"] if tokens else []
    single: dict[int, None] = {}
    split = []
    for text, ids in zip(tokens, encoded):
        if len(ids) == 1:
            single.setdefault(ids[0])
        else:
            split.append(text)
    separated = sorted(single)
    return SeparationMap("partial", base, separated, tokenizer.convert_ids_to_tokens(separated)), split
