"""Plain data between the checker's and the candidate's processes: a tagged encoding that runs nothing.

Only None, bool, int, float, complex, str, bytes and lists, tuples, dicts, collections.Counters, sets
and frozensets of these travel, each of exactly that type (a subclass, e.g. a float whose `__eq__` is always True, is
refused by `encode`), and numpy's scalars and arrays of numbers, booleans, fixed-width strings and
dates (as their dtype, shape and raw bytes: the reader builds a genuine numpy object of that dtype,
so it compares as it would have in the candidate's process). `decode` builds nothing but those
types from the bytes, so bytes written by a hostile process can make it fail but never run code: no
pickle, no classes, no `eval`, no object dtype.

    tag (1 byte) [+ 4-byte big-endian length/count] [+ payload]
    N None · T/F bools · I int (signed big-endian two's complement) · D float (IEEE-754 double,
    so nan, inf and -0.0 round-trip exactly) · C complex (two doubles) · S str (UTF-8, surrogates passed) · B bytes ·
    L list · U tuple · E set · Z frozenset · M dict (key, value, key, value, ...) · K Counter (as M)
    R a `Ref`: a name of the trusted setup (requests only: `decode(..., refs=True)`)
    G a numpy scalar: (dtype string, raw bytes) · A a numpy array: (dtype string, shape, raw bytes, C order)

Standard library only: it also runs inside the sandbox, next to `zygote.py`.
"""

from __future__ import annotations

import re
import struct
import sys
from collections import Counter

MAX_DEPTH = 100  # nesting; deeper data (or a cycle) is refused, not a RecursionError
_LEN = struct.Struct(">I")
_FLOAT = struct.Struct(">d")
_COMPLEX = struct.Struct(">dd")
_CONTAINERS = {list: b"L", tuple: b"U", set: b"E", frozenset: b"Z"}
_BUILD = {b"L": list, b"U": tuple, b"E": set, b"Z": frozenset}
# numpy dtypes that travel: booleans, integers, floats, complex numbers, fixed-width str/bytes,
# dates and durations (no objects, no records); numpy parses nothing else the reader is sent
_NUMPY_KINDS = "biufcUSmM"
_NUMPY_DTYPE = re.compile(r"[<>|=][biufcUSmM][0-9]{1,4}(\[[0-9]{0,3}[a-zA-Z]{1,2}\])?")
MAX_DIMENSIONS = 32


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
    elif not _encode_numpy(x, put, depth):
        raise WireError(f"an object of type {kind.__qualname__}")


def _encode_numpy(x: object, put, depth: int) -> bool:
    """Encode a numpy scalar or array (exactly numpy's own types, of a dtype that travels); False
    for anything else. numpy is never imported here: a value of its types means it was."""
    np = sys.modules.get("numpy")
    if np is None:
        return False
    kind = type(x)
    if kind is np.ndarray and x.dtype.kind in _NUMPY_KINDS and x.dtype.fields is None:
        put(b"A")
        _encode((x.dtype.str, tuple(int(n) for n in x.shape), x.tobytes(order="C")), put, depth + 1)
        return True
    if isinstance(x, np.generic) and kind.__module__ == "numpy" and x.dtype.kind in _NUMPY_KINDS:
        put(b"G")
        _encode((x.dtype.str, x.tobytes()), put, depth + 1)
        return True
    return False


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
_N, _T, _F, _D, _C, _I, _S, _B, _M, _K, _R, _G, _A = b"NTFDCISBMKRGA"
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
    if tag == _G or tag == _A:
        parts, at = _decode(data, at, depth + 1, False)
        return _numpy_value(tag == _A, parts), at
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


def _numpy_value(array: bool, parts: object) -> object:
    """The numpy scalar or array that (dtype string, [shape,] raw bytes) describes; WireError for
    anything else (numpy missing, a dtype that does not travel, sizes that do not add up)."""
    shape = ()
    if array and type(parts) is tuple and len(parts) == 3:
        dtype, shape, raw = parts
    elif not array and type(parts) is tuple and len(parts) == 2:
        dtype, raw = parts
    else:
        raise WireError("malformed data: a numpy value's parts")
    if type(dtype) is not str or not _NUMPY_DTYPE.fullmatch(dtype) or type(raw) is not bytes:
        raise WireError(f"malformed data: numpy dtype {dtype!r}")
    if type(shape) is not tuple or len(shape) > MAX_DIMENSIONS or any(type(n) is not int or n < 0 for n in shape):
        raise WireError("malformed data: a numpy array's shape")
    try:
        import numpy
    except ImportError:
        raise WireError("a numpy value, but numpy is not installed here") from None
    try:
        dt = numpy.dtype(dtype)
    except (TypeError, ValueError):
        raise WireError(f"malformed data: numpy dtype {dtype!r}") from None
    if dt.kind not in _NUMPY_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise WireError(f"malformed data: numpy dtype {dtype!r}")
    count = 1
    for n in shape:
        count *= n
    if count * dt.itemsize != len(raw) or (not array and len(raw) != dt.itemsize):
        raise WireError("malformed data: a numpy value's size")
    values = numpy.frombuffer(raw, dtype=dt)
    return values.reshape(shape).copy() if array else values[0]
