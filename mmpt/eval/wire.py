"""Plain data between the checker's and the candidate's processes: a tagged encoding that runs nothing.

Only None, bool, int, float, complex, str, bytes and lists, tuples, dicts, sets and frozensets of these
travel, each of exactly that type (a subclass, e.g. a float whose `__eq__` is always True, is
refused by `encode`). `decode` builds nothing but those types from the bytes, so bytes written by
a hostile process can make it fail but never run code: no pickle, no classes, no `eval`.

    tag (1 byte) [+ 4-byte big-endian length/count] [+ payload]
    N None · T/F bools · I int (signed big-endian two's complement) · D float (IEEE-754 double,
    so nan, inf and -0.0 round-trip exactly) · C complex (two doubles) · S str (UTF-8, surrogates passed) · B bytes ·
    L list · U tuple · E set · Z frozenset · M dict (key, value, key, value, ...)

Standard library only: it also runs inside the sandbox, next to `zygote.py`.
"""

from __future__ import annotations

import struct

MAX_DEPTH = 100  # nesting; deeper data (or a cycle) is refused, not a RecursionError
_LEN = struct.Struct(">I")
_FLOAT = struct.Struct(">d")
_COMPLEX = struct.Struct(">dd")
_CONTAINERS = {list: b"L", tuple: b"U", set: b"E", frozenset: b"Z"}
_BUILD = {b"L": list, b"U": tuple, b"E": set, b"Z": frozenset}


class WireError(ValueError):
    """Data that is not plain (encode) or bytes that are no valid encoding (decode)."""


def encode(obj: object) -> bytes:
    """The encoding of `obj`; WireError names the first value of a type that may not travel."""
    out: list[bytes] = []
    _encode(obj, out.append, 0)
    return b"".join(out)


def _encode(x: object, put, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise WireError(f"data nested deeper than {MAX_DEPTH} levels (or a cycle)")
    kind = type(x)
    if x is None:
        put(b"N")
    elif kind is bool:
        put(b"T" if x else b"F")
    elif kind is int:
        raw = x.to_bytes(x.bit_length() // 8 + 1, "big", signed=True)
        put(b"I" + _LEN.pack(len(raw)) + raw)
    elif kind is float:
        put(b"D" + _FLOAT.pack(x))
    elif kind is complex:
        put(b"C" + _FLOAT.pack(x.real) + _FLOAT.pack(x.imag))
    elif kind is str:
        raw = x.encode("utf-8", "surrogatepass")
        put(b"S" + _LEN.pack(len(raw)) + raw)
    elif kind is bytes:
        put(b"B" + _LEN.pack(len(x)) + x)
    elif kind in _CONTAINERS:
        put(_CONTAINERS[kind] + _LEN.pack(len(x)))
        for item in x:
            _encode(item, put, depth + 1)
    elif kind is dict:
        put(b"M" + _LEN.pack(len(x)))
        for key, value in x.items():
            _encode(key, put, depth + 1)
            _encode(value, put, depth + 1)
    else:
        raise WireError(f"an object of type {kind.__qualname__}")


def decode(data: bytes) -> object:
    """The value `data` encodes; WireError for anything else (truncated, trailing, unknown tags,
    unhashable set members or dict keys, nesting deeper than MAX_DEPTH)."""
    view = memoryview(data)
    try:
        value, end = _decode(view, 0, 0)
    except (IndexError, struct.error, UnicodeDecodeError, TypeError, OverflowError) as e:
        raise WireError(f"malformed data: {type(e).__name__}: {e}") from None
    if end != len(view):
        raise WireError(f"malformed data: {len(view) - end} bytes after the value")
    return value


def _take(view: memoryview, at: int, n: int) -> bytes:
    if at + n > len(view):
        raise WireError("malformed data: truncated")
    return bytes(view[at : at + n])


def _decode(view: memoryview, at: int, depth: int) -> tuple[object, int]:
    if depth > MAX_DEPTH:
        raise WireError(f"malformed data: nested deeper than {MAX_DEPTH} levels")
    tag = _take(view, at, 1)
    at += 1
    if tag == b"N":
        return None, at
    if tag in (b"T", b"F"):
        return tag == b"T", at
    if tag == b"D":
        return _FLOAT.unpack(_take(view, at, 8))[0], at + 8
    if tag == b"C":
        return complex(*_COMPLEX.unpack(_take(view, at, 16))), at + 16
    (n,) = _LEN.unpack(_take(view, at, 4))
    at += 4
    if tag == b"I":
        return int.from_bytes(_take(view, at, n), "big", signed=True), at + n
    if tag == b"S":
        return _take(view, at, n).decode("utf-8", "surrogatepass"), at + n
    if tag == b"B":
        return _take(view, at, n), at + n
    if tag in _BUILD or tag == b"M":
        if n > len(view) - at:  # every item takes at least one byte: a lie about the count
            raise WireError("malformed data: truncated")
        items = []
        for _ in range(2 * n if tag == b"M" else n):
            item, at = _decode(view, at, depth + 1)
            items.append(item)
        if tag == b"M":
            return dict(zip(items[::2], items[1::2])), at
        return _BUILD[tag](items), at
    raise WireError(f"malformed data: unknown tag {tag!r}")
