"""One NL→code pair as token ids with a modality per token, in a training layout.

This is the one place that decides how a pair becomes ids; training (`prepare`) and generation
(`eval.generate`) both call it, so a prompt is tokenized exactly as the model saw its training data.

    docstring-first:  <comments> DOCSTRING <python> CODE <eot>
    signature-first:  <bos> SIGNATURE <comments> DOCSTRING <python> BODY <eot>

NL = the sentinels before the code and the docstring; code = CODE / SIGNATURE / BODY and `<eot>`.
Code ids are remapped to their code copies by the separation map.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmpt.data.separation import SeparationMap
from mmpt.modality import CODE, COMMENTS, EOT, LAYOUTS, MASK, NL, PAD, PYTHON


@dataclass(frozen=True)
class SentinelIds:
    comments: int
    python: int
    eot: int
    mask: int
    pad: int
    bos: int  # the tokenizer's own bos; without one `<eot>` opens an instance (GPT-2's bos = eos convention)


def sentinel_ids(tokenizer) -> SentinelIds:
    """Ids of the sentinels in `tokenizer`; an error naming the missing ones if absent."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in (COMMENTS, PYTHON, EOT, MASK) if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks the sentinels {missing}; add them with mmpt.data.tokenizer.add_sentinels")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else vocab.get(PAD)
    if pad is None:
        raise ValueError("tokenizer has no pad token")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else vocab[EOT]
    return SentinelIds(vocab[COMMENTS], vocab[PYTHON], vocab[EOT], vocab[MASK], pad, bos)


def _text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_instance(
    tokenizer,
    smap: SeparationMap,
    layout: str,
    docstring: str,
    code: str,
    signature: str = "",
    body: str = "",
    *,
    ids: SentinelIds | None = None,
    end: bool = True,
) -> tuple[list[int], list[int]]:
    """(input_ids, modality) of one instance; `end=False` leaves out `<eot>` (a generation prompt).

    docstring-first uses `code`; signature-first uses `signature` and `body` (callers keep
    `code == signature + "\\n" + body`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    ids = ids or sentinel_ids(tokenizer)
    doc = _text_ids(tokenizer, docstring)
    if layout == "docstring-first":
        return assemble_instance(smap, layout, ids, doc, _text_ids(tokenizer, code), end=end)
    return assemble_instance(smap, layout, ids, doc, _text_ids(tokenizer, body), _text_ids(tokenizer, signature), end=end)


def assemble_instance(
    smap: SeparationMap,
    layout: str,
    ids: SentinelIds,
    doc: list[int],
    code: list[int],
    signature: list[int] | None = None,
    *,
    end: bool = True,
) -> tuple[list[int], list[int]]:
    """`encode_instance` on texts already tokenized (prepare tokenizes whole batches at once).

    `code` is the ids of CODE (docstring-first) or of BODY (signature-first, with `signature`).
    """
    nl = [ids.comments, *doc, ids.python]
    head = smap.to_code(list(signature or [])) if layout == "signature-first" else []
    code_ids = list(code) + [ids.eot] if end else list(code)
    code_ids = smap.to_code(code_ids)
    if layout == "docstring-first":
        return nl + code_ids, [NL] * len(nl) + [CODE] * len(code_ids)
    return (
        [ids.bos] + head + nl + code_ids,
        [NL] + [CODE] * len(head) + [NL] * len(nl) + [CODE] * len(code_ids),
    )


def encode_prompt(
    tokenizer, smap: SeparationMap, layout: str, docstring: str, signature: str, given: str = ""
) -> tuple[list[int], list[int]]:
    """A generation prompt: the instance up to and including the code already written.

    `signature` ends without a newline; `given` is the code already written after it (the first i
    lines of a reference body for incremental tasks), each line ending in a newline. The prompt
    stops before the last newline: in training a newline is tokenized together with the next
    line's indentation, so the model writes that token itself (its text then starts with "\n").
    """
    body = given.removesuffix("\n")
    code = (signature + "\n" + given).removesuffix("\n")
    if layout == "signature-first":
        # the signature is the head; `<python>` then opens the body written so far
        return encode_instance(tokenizer, smap, layout, docstring, code, signature, body, end=False)
    return encode_instance(tokenizer, smap, layout, docstring, code, end=False)
