"""Plain data between the checker's and the candidate's processes: a tagged encoding that runs nothing.

Only None, bool, int, float, complex, str, bytes and lists, tuples, dicts, collections.Counters, sets
and frozensets of these travel, each of exactly that type (a subclass, e.g. a float whose `__eq__` is always True, is
refused by `encode`). `decode` builds nothing but those types from the bytes, so bytes written by
a hostile process can make it fail but never run code: no pickle, no classes, no `eval`.

    tag (1 byte) [+ 4-byte big-endian length/count] [+ payload]
    N None · T/F bools · I int (signed big-endian two's complement) · D float (IEEE-754 double,
    so nan, inf and -0.0 round-trip exactly) · C complex (two doubles) · S str (UTF-8, surrogates passed) · B bytes ·
    L list · U tuple · E set · Z frozenset · M dict (key, value, key, value, ...) · K Counter (as M)
    R a `Ref`: a name of the trusted setup (requests only: `decode(..., refs=True)`)

Standard library only: it also runs inside the sandbox, next to `zygote.py`.
"""

from __future__ import annotations

import struct
from collections import Counter

MAX_DEPTH = 100  # nesting; deeper data (or a cycle) is refused, not a RecursionError
_LEN = struct.Struct(">I")
_FLOAT = struct.Struct(">d")
_COMPLEX = struct.Struct(">dd")
_CONTAINERS = {list: b"L", tuple: b"U", set: b"E", frozenset: b"Z"}
_BUILD = {b"L": list, b"U": tuple, b"E": set, b"Z": frozenset}


class Ref:
    """An object the trusted setup bound to `name` (MBPP/367's trees): it travels by name, and the
    candidate's process uses its own object of that name (its program runs the same setup)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


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
    elif kind is Ref:
        _encode(x.name, lambda b: put(b"R" + b[1:]), depth)
    elif kind is dict or kind is Counter:
        put((b"M" if kind is dict else b"K") + _LEN.pack(len(x)))
        for key, value in x.items():
            _encode(key, put, depth + 1)
            _encode(value, put, depth + 1)
    else:
        raise WireError(f"an object of type {kind.__qualname__}")


def decode(data: bytes, refs: bool = False) -> object:
    """The value `data` encodes; WireError for anything else (truncated, trailing, unknown tags,
    a `Ref` unless `refs`, unhashable set members or dict keys, nesting deeper than MAX_DEPTH)."""
    data = bytes(data)
    try:
        value, end = _decode(data, 0, 0, refs)
    except (IndexError, struct.error, UnicodeDecodeError, TypeError, OverflowError) as e:
        raise WireError(f"malformed data: {type(e).__name__}: {e}") from None
    if end != len(data):
        raise WireError(f"malformed data: {len(data) - end} bytes after the value")
    return value


# tags as the ints that indexing bytes gives
_N, _T, _F, _D, _C, _I, _S, _B, _M, _K, _R = b"NTFDCISBMKR"
_BUILT = {tag[0]: kind for tag, kind in _BUILD.items()}


def _decode(data: bytes, at: int, depth: int, refs: bool) -> tuple[object, int]:
    tag = data[at]  # IndexError when truncated
    at += 1
    if tag == _N:
        return None, at
    if tag == _T:
        return True, at
    if tag == _F:
        return False, at
    if tag == _D:
        return _FLOAT.unpack_from(data, at)[0], at + 8  # struct.error when truncated
    if tag == _C:
        return complex(*_COMPLEX.unpack_from(data, at)), at + 16
    (n,) = _LEN.unpack_from(data, at)
    at += 4
    if n > len(data) - at:  # a byte string that long, or that many items (each a byte at least)
        raise WireError("malformed data: truncated")
    if tag == _I:
        return int.from_bytes(data[at : at + n], "big", signed=True), at + n
    if tag == _S:
        return data[at : at + n].decode("utf-8", "surrogatepass"), at + n
    if tag == _B:
        return data[at : at + n], at + n
    if tag == _R and refs:
        return Ref(data[at : at + n].decode("utf-8", "surrogatepass")), at + n
    if n and depth >= MAX_DEPTH:  # what `encode` refuses: items deeper than MAX_DEPTH
        raise WireError(f"malformed data: nested deeper than {MAX_DEPTH} levels")
    if tag == _M or tag == _K:
        pairs = {} if tag == _M else Counter()
        for _ in range(n):
            key, at = _decode(data, at, depth + 1, refs)
            pairs[key], at = _decode(data, at, depth + 1, refs)
        return pairs, at
    kind = _BUILT.get(tag)
    if kind is None:
        raise WireError(f"malformed data: unknown tag {bytes([tag])!r}")
    items = []
    for _ in range(n):
        item, at = _decode(data, at, depth + 1, refs)
        items.append(item)
    return (items if kind is list else kind(items)), at
