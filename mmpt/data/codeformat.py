"""The paper's flattened code format: `<NEW_LINE>` / `<INDENT>` / `<DEDENT>` markers ↔ real Python.

The published corpus (`huawei-noah/python_text2code`) stores each function on one line: every
source line stripped of its indentation, lines joined by `<NEW_LINE>`, and one `<INDENT>` or
`<DEDENT>` per level wherever the indentation changes, e.g.

    def f ( x ) : <NEW_LINE> <INDENT> if x : <NEW_LINE> <INDENT> return 1 <NEW_LINE> <DEDENT> <DEDENT>

`unflatten` turns that back into Python with 4-space indentation (what `prepare` trains on and what
generation decodes the authors' checkpoints' output to); `flatten` writes it (tests, prompts of
checkpoints trained on it). Markers are recognised only outside string literals and comments, so a
string holding the text "<NEW_LINE>" survives the round trip.
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings

from mmpt.data.instances import encode_instance

NEW_LINE = "<NEW_LINE>"
INDENT = "<INDENT>"
DEDENT = "<DEDENT>"
MARKERS = (NEW_LINE, INDENT, DEDENT)
CODE_FORMATS = ("auto", "plain", "flat")
INDENT_UNIT = "    "


def parses(code: str) -> bool:
    """Whether `code` is valid Python (warnings about invalid escapes are not our concern)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def is_flat(code: str) -> bool:
    """Does `code` look like the flattened format? It holds `<NEW_LINE>` and is not Python as it stands."""
    return NEW_LINE in code and not parses(code)


def _segments(flat: str) -> list[tuple[int, str]]:
    """(level change, text) per line of `flat`: markers outside strings and comments split lines.

    Scans once, tracking string literals (single or triple quoted, backslash escapes) and comments
    (which end at the next `<NEW_LINE>`), so marker-like text inside them stays text.
    """
    lines: list[tuple[int, str]] = []
    change, text = 0, []
    i, n = 0, len(flat)
    while i < n:
        ch = flat[i]
        if ch in "'\"":
            quote = flat[i : i + 3] if flat[i : i + 3] == ch * 3 else ch
            j = i + len(quote)
            while j < n and not flat.startswith(quote, j):
                j += 2 if flat[j] == "\\" else 1
            j = min(j + len(quote), n)
            text.append(flat[i:j])
            i = j
            continue
        if ch == "#":  # a comment runs to the next line marker
            j = flat.find(NEW_LINE, i)
            j = n if j < 0 else j
            text.append(flat[i:j])
            i = j
            continue
        if ch == "<":
            if flat.startswith(NEW_LINE, i):
                lines.append((change, "".join(text)))
                change, text = 0, []
                i += len(NEW_LINE)
                continue
            if flat.startswith(INDENT, i) or flat.startswith(DEDENT, i):
                change += 1 if flat.startswith(INDENT, i) else -1
                i += len(INDENT) if flat.startswith(INDENT, i) else len(DEDENT)
                continue
        text.append(ch)
        i += 1
    lines.append((change, "".join(text)))
    return lines


def unflatten(flat: str, level: int = 0) -> str:
    """Python source of flattened `flat`, indented 4 spaces per level, starting at `level`.

    A level that would go negative (a stray `<DEDENT>`) stays at 0. Lines with no text after their
    markers become empty lines; trailing empty lines are kept so that `<NEW_LINE>` counts stay.
    """
    out = []
    for change, text in _segments(flat):
        level = max(0, level + change)
        text = text.strip()
        out.append(INDENT_UNIT * level + text if text else "")
    return "\n".join(out)


def flatten(code: str) -> str:
    """The flattened form of Python `code`. Comments are dropped and a statement that spans
    several lines (brackets, backslashes) is joined onto one; only a string literal that holds a
    line break (triple quotes) keeps it."""
    lines = code.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(pos: tuple[int, int]) -> int:
        return offsets[pos[0] - 1] + pos[1]

    parts: list[str] = []
    text: list[str] = []  # pieces of the current logical line
    last_end = None  # source offset where its last token ended
    for tok in _tokens(code):
        if tok.type == tokenize.INDENT:
            parts.append(INDENT)
        elif tok.type == tokenize.DEDENT:
            parts.append(DEDENT)
        elif tok.type == tokenize.NEWLINE:
            if text:
                parts.append("".join(text))
            parts.append(NEW_LINE)
            text, last_end = [], None
        elif tok.type == tokenize.NL and not text:
            parts.append(NEW_LINE)  # a blank (or comment-only) line
        elif tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER):
            start = at(tok.start)
            if last_end is not None:
                gap = code[last_end:start]
                text.append(" " if "\n" in gap else gap)  # a line break between tokens: one space
            text.append(code[start : at(tok.end)])
            last_end = at(tok.end)
    if text:  # code that stops inside a bracketed statement: its open line ends the text
        parts.append("".join(text))
    return " ".join(parts)


def _tokens(code: str):
    """Python tokens of `code`, which may stop inside a bracketed statement (an incremental task's
    given lines can cut one: the model continues it); code that stops inside a string is refused."""
    try:
        yield from tokenize.generate_tokens(io.StringIO(code).readline)
    except tokenize.TokenError as e:
        if "statement" not in str(e.args[0]):  # "EOF in multi-line string"
            raise ValueError(f"cannot flatten code that stops inside a string: ...{code[-60:]!r}") from None


def to_python(code: str, code_format: str) -> tuple[str, bool]:
    """(code as Python, converted?) under `code_format` (auto | plain | flat)."""
    if code_format not in CODE_FORMATS:
        raise ValueError(f"code format must be one of {CODE_FORMATS}, got {code_format!r}")
    if code_format == "plain" or (code_format == "auto" and not is_flat(code)):
        return code, False
    return unflatten(code).strip("\n") + "\n", True


# --- prompts and completions of checkpoints trained on the flattened format -------------------------


def _open_end(flat: str) -> str:
    """`flat` without the markers that close it (trailing `<DEDENT>`s, then one `<NEW_LINE>`)."""
    flat = flat.rstrip()
    while flat.endswith(DEDENT):
        flat = flat[: -len(DEDENT)].rstrip()
    return flat[: -len(NEW_LINE)].rstrip() if flat.endswith(NEW_LINE) else flat


def flat_prompt_code(signature: str, given: str) -> tuple[str, str, int]:
    """(code, body, level) of a prompt for a checkpoint trained on the flattened format.

    `code` is the signature and the lines already written, flattened (the docstring-first CODE);
    `body` is the part after the signature (the signature-first BODY). Both stop before the
    `<NEW_LINE>` after the last line: the training text goes on " <NEW_LINE> ..." there, and the
    model writes it. `level` is the indentation level the model continues from.
    """
    head = _open_end(flatten(signature.rstrip() + "\n"))
    code = _open_end(flatten(signature.rstrip() + "\n" + given))
    if not code.startswith(head):
        raise ValueError("the flattened prompt does not start with its flattened signature")
    level = sum(1 if kind == INDENT else -1 for kind in _markers(code))
    return code, code[len(head) :], level


def _markers(flat: str) -> list[str]:
    """The `<INDENT>`/`<DEDENT>` markers of `flat` outside strings and comments, in order."""
    return [INDENT if c > 0 else DEDENT for c, _ in _segments(flat) for _ in range(abs(c))]


def flat_completion(generated: str, level: int) -> str:
    """Generated flattened text decoded to indented lines, starting at indentation `level`.

    The text normally opens with the model's own `<NEW_LINE>`, so the result starts with "\\n" like
    a completion of plain code.
    """
    return unflatten(generated, level)


def as_flat(code: str) -> str:
    """`code` in the flattened format: as it is when it already is, else flattened."""
    return code if is_flat(code) else flatten(code)


def split_flat_signature(flat: str) -> tuple[str, str] | None:
    """(signature, body) of flattened code as the official signature-first data cuts it, or None.

    The signature runs from the first `def ` (else `class `) up to the colon of the first
    `: <NEW_LINE> <INDENT>`; the body is the rest, from the space before that `<NEW_LINE>`.
    """
    end = flat.find(": " + NEW_LINE + " " + INDENT)
    head = flat[: end + 1] if end >= 0 else ""
    for keyword in ("def ", "class "):
        if keyword in head:
            return head[head.find(keyword) :], flat[end + 1 :]
    return None


def quoted_docstring(docstring: str) -> str:
    """The docstring as the official signature-first (PyCodeGPT) data wrote it after the signature:
    a triple-quoted block indented 4 spaces, on its own lines when it has several."""
    if "\n" in docstring:
        inner = "\n".join("    " + line for line in docstring.split("\n"))
        return '\n    """\n' + inner + '\n    """'
    return '\n    """ ' + docstring + ' """'


def encode_flat_instance(tokenizer, smap, layout: str, docstring: str, signature: str, body: str):
    """(input_ids, modality) of a whole instance (with `<eot>`) for a checkpoint trained flattened:
    what `encode_flat_prompt` starts, with the body written out (for `mmpt score`)."""
    code = flatten(signature.rstrip() + "\n" + body)
    if layout == "signature-first":
        head, _, _ = flat_prompt_code(signature, "")
        if not code.startswith(head):
            raise ValueError("the flattened code does not start with its flattened signature")
        return encode_instance(tokenizer, smap, layout, quoted_docstring(docstring), code, head, code[len(head) :])
    return encode_instance(tokenizer, smap, layout, docstring, code)


def encode_flat_prompt(tokenizer, smap, layout: str, docstring: str, signature: str, given: str):
    """(input_ids, modality, level) of a generation prompt for a checkpoint trained flattened.

    As `instances.encode_prompt`, with the code flattened (`flat_prompt_code`) and, for the
    signature-first layout, the docstring quoted as the official PyCodeGPT data has it. `level`
    is the indentation the completion continues from (for `flat_completion`).
    """
    code, body, level = flat_prompt_code(signature, given)
    if layout == "signature-first":
        head, _, _ = flat_prompt_code(signature, "")
        ids, kinds = encode_instance(tokenizer, smap, layout, quoted_docstring(docstring), code, head, body, end=False)
    else:
        ids, kinds = encode_instance(tokenizer, smap, layout, docstring, code, end=False)
    return ids, kinds, level
