"""The plain-data encoding: exact round trips, refusal of anything else, no crash on hostile bytes."""

from __future__ import annotations

import math
import random
import struct

import pytest

from mmpt.eval.sandbox.inside.wire import MAX_DEPTH, WireError, decode, encode

VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    255,
    -256,
    2**100,
    -(2**100),
    10**5000,
    0.0,
    -0.0,
    1.5,
    -2.25e-300,
    5e-324,
    math.inf,
    -math.inf,
    1e308,
    complex(-0.0, math.inf),
    "",
    "héllo\n\x00",
    "\udc80 lone surrogate",
    b"",
    b"\x00\xff",
    [],
    (),
    {},
    set(),
    frozenset(),
    [1, (2, [3.0, None])],
    (1,),
    {"a": [1, {2, 3}], (1, 2): b"x", None: frozenset({1})},
    {1, 2.5, "x", (1, 2), b"y"},
]


def same(a, b) -> bool:
    """Equal in value and in type at every level (so 1 != 1.0 != True here), -0.0 and nan included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    return a == b


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_value_and_type(value):
    assert same(decode(encode(value)), value)


def test_nan_bits_and_negative_zero_are_exact():
    nan = struct.unpack(">d", b"\x7f\xf8\x00\x00\x00\x00\x12\x34")[0]
    assert struct.pack(">d", decode(encode(nan))) == struct.pack(">d", nan)
    assert math.copysign(1.0, decode(encode(-0.0))) == -1.0
    assert decode(encode([True, 1, 1.0])) == [True, 1, 1.0] and [type(v) for v in decode(encode([True, 1, 1.0]))] == [
        bool,
        int,
        float,
    ]


class AlwaysEqual(float):
    def __eq__(self, other):
        return True

    __hash__ = float.__hash__


class MyList(list):
    pass


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (AlwaysEqual(1.0), "AlwaysEqual"),
        ([1, [MyList()]], "MyList"),
        ({"k": (x for x in [])}, "generator"),
        (lambda: 0, "function"),
        (bytearray(b"x"), "bytearray"),
        ({1: object()}, "object"),
    ],
)
def test_anything_but_plain_data_is_refused_by_name(value, name):
    with pytest.raises(WireError, match=f"an object of type .*{name}"):
        encode(value)


def test_cycles_and_deep_nesting_are_refused():
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(WireError, match="deeper"):
        encode(cycle)
    deep: list = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(WireError, match="deeper"):
        encode(deep)
    with pytest.raises(WireError, match="deeper"):
        decode(b"L\x00\x00\x00\x01" * (MAX_DEPTH + 5) + b"N")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Q",
        b"I\x00\x00\x00\x09\x01",
        b"S\x00\x00\x00\x02\xff\xfe",
        b"NN",
        b"E\x00\x00\x00\x01L\x00\x00\x00\x00",
        b"M\x00\x00\x00\x01L\x00\x00\x00\x00N",
        b"L\xff\xff\xff\xffN",
        b"D\x00\x00",
    ],
)
def test_malformed_bytes_raise_wire_error(data):
    with pytest.raises(WireError, match="malformed"):
        decode(data)


def test_random_bytes_never_escape_as_anything_but_wire_error():
    rng = random.Random(0)
    pieces = [encode(v) for v in VALUES]
    for _ in range(3000):
        data = bytearray(rng.choice(pieces))
        for _ in range(rng.randint(1, 3)):  # flip, cut or splice
            if data and rng.random() < 0.5:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif data:
                del data[rng.randrange(len(data)) :]
            else:
                data += rng.choice(pieces)
        try:
            value = decode(bytes(data))
        except WireError:
            continue
        encode(value)  # what decodes is plain data again


def test_numpy_scalars_and_arrays_travel_as_genuine_numpy_values():
    import numpy as np

    for value in (
        np.int64(-3),
        np.float32(1.5),
        np.bool_(True),
        np.str_("ab"),
        np.complex128(1 + 2j),
        np.datetime64("2020-01-01"),
    ):
        got = decode(encode(value))
        assert type(got) is type(value) and got == value
    for array in (np.arange(6).reshape(2, 3), np.array([1.5, np.nan]), np.array([], dtype=np.uint8), np.array(["a", "bc"])):
        got = decode(encode(array))
        assert type(got) is np.ndarray and got.dtype == array.dtype and got.shape == array.shape
        assert got.tobytes() == array.tobytes() and got.flags.writeable
    nested = decode(encode([np.int64(1), {"k": (np.float64(2.5),)}]))
    assert nested == [1, {"k": (2.5,)}] and type(nested[0]) is np.int64


def test_numpy_objects_that_could_run_code_or_lie_about_equality_do_not_travel():
    import numpy as np

    class Sub(np.ndarray):
        def __eq__(self, other):
            return True

    for value in (
        np.array([object()], dtype=object),
        np.ma.array([1, 2]),
        np.zeros(2, dtype=[("a", "i4")]),
        np.zeros(2).view(Sub),
    ):
        with pytest.raises(WireError, match="an object of type"):
            encode(value)
    # bytes a hostile process writes: an object dtype, sizes that do not add up, a bad shape
    for data in (
        b"G" + encode(("|O8", b"\0" * 8)),
        b"A" + encode(("<i8", (3,), b"\0" * 8)),
        b"A" + encode(("<i8", (-1,), b"")),
        b"G" + encode(("<i8", b"\0" * 4)),
        b"A" + encode(("V8", (1,), b"\0" * 8)),
    ):
        with pytest.raises(WireError, match="malformed"):
            decode(data)
