"""EvalPlus's rules for one task: when an output counts as correct, the time limits, the expected outputs.

Standard library only: it runs inside the sandbox (where numpy may be missing), in the checker
that judges a sample's outputs (`checker.check_inputs`) and in the judge's own sandbox that runs
the reference for the expected outputs (`zygote.py`). It restates the evaluator of the `evalplus` package, which judges a sample as follows.
The reference solution runs once per task on a copy of each input, timed; its return values are
the expected outputs. The sample runs on the same inputs in order, each call under a time limit of
max(floor, 4 x the reference's time on that input), and fails at its first wrong output, exception
or timeout. The base and the plus inputs are two such runs; a sample passes "plus" only when it
passes both. An output is correct when it equals the expected one (`==`), or, with a tolerance
`atol` > 0, when it is of the same type (and length) and numpy.allclose(out, exp, rtol=1e-7, atol)
holds; a task whose atol is 0 gets atol 1e-6 from its first input whose expected output is a float
or a flat list/tuple of floats on. A few tasks have their own oracle (`ORACLES`).

Two points follow the evaluator as fixed after evalplus 0.3.1 (the release on PyPI), not 0.3.1
itself: HumanEval/32 (`poly_root`) can pass (0.3.1 records no result for a find_zero input that
passes, so it fails every sample), and the floor of a call's time limit is 4 s, not 1 s (raised
upstream "to minimize false positives"). tests/eval/sandbox/inside/test_evalplus_rules.py checks
each rule against the package's own code.
"""

from __future__ import annotations

import cmath
import copy
import math
import time
from collections.abc import Callable, Sequence

RTOL = 1e-7  # numpy.testing.assert_allclose's default, which EvalPlus passes to numpy.allclose
FLOAT_ATOL = 1e-6  # the atol EvalPlus enforces on float outputs of a task whose atol is 0
MIN_TIME_LIMIT = 4.0  # seconds: the floor of a call's time limit (evalplus 0.3.1: 1.0, raised since)
TIME_LIMIT_FACTOR = 4.0  # a call's limit: this many times the reference's time on the same input
MAX_RUN_SECONDS = 60.0  # a whole run (one split of one sample) is cut at this much (+2 s)

# How an output is judged, beyond equality and tolerance (EvalPlus picks these by entry point):
ORACLES = {
    "exact": "equal, or close within atol",
    "poly_root": "|poly(xs, out)| <= atol, whatever the expected root (HumanEval/32 find_zero)",
    "set_equal": "set(out) == set(exp), or close within atol (MBPP+ tasks whose order is free)",
    "not_none": "the reference's output reduced to `is not None`; a bool output compared as is",
    "any": "any output passes once the call returns (MBPP/164 are_equivalent)",
    "or_zero": "equal, or 0 (MBPP/295 sum_div)",
    "surface_area": "equal, or within atol of the pyramid read with a perpendicular height (MBPP/581)",
    "digit_distance": "equal, or the zero-padded digit-wise distance (MBPP/558)",
}


def is_floats(x: object) -> bool:
    """Whether `x` is a float, or a non-empty list/tuple of floats (not nested): EvalPlus's test for
    an output that gets a float tolerance."""
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(i, float) for i in x)


def atols(expected: Sequence[object], atol: float, oracle: str = "exact") -> list[float]:
    """The tolerance each input of one run is judged with: the task's `atol`, or, when that is 0,
    FLOAT_ATOL from the first input whose expected output `is_floats` on (it sticks for the rest of
    the run, as in EvalPlus's loop; a run stops at its first failure, so the inputs before it all
    passed). `poly_root` always uses the task's atol."""
    if atol != 0 or oracle == "poly_root":
        return [atol] * len(expected)
    out, current = [], atol
    for exp in expected:
        if current == 0 and is_floats(exp):
            current = FLOAT_ATOL
        out.append(current)
    return out


class _NotNumeric(Exception):
    """A value numpy would not turn into a numeric array (strings, None, ragged lists, ...)."""


_NUMBERS = (bool, int, float, complex)


def _array(x: object) -> tuple[tuple[int, ...], list]:
    """(shape, leaves in row-major order) of `x` as numpy.asanyarray would see it."""
    if isinstance(x, (list, tuple)):
        parts = [_array(item) for item in x]
        shapes = {shape for shape, _ in parts}
        if len(shapes) > 1:  # numpy: "inhomogeneous shape"
            raise _NotNumeric
        inner = shapes.pop() if parts else ()
        return (len(x), *inner), [leaf for _, leaves in parts for leaf in leaves]
    if type(x) in _NUMBERS:
        return (), [x]
    raise _NotNumeric


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    a, b = (1,) * (len(b) - len(a)) + a, (1,) * (len(a) - len(b)) + b
    if any(m != n and 1 not in (m, n) for m, n in zip(a, b)):
        raise _NotNumeric
    return tuple(max(m, n) if 0 not in (m, n) else 0 for m, n in zip(a, b))


def _leaf_index(shape: tuple[int, ...], index: tuple[int, ...]) -> int:
    """The flat position in an array of `shape` of broadcast `index` (a dimension of 1 repeats)."""
    flat = 0
    for size, i in zip(shape, index[len(index) - len(shape) :]):
        flat = flat * size + (i if size != 1 else 0)
    return flat


def _indices(shape: tuple[int, ...]):
    if not shape:
        yield ()
        return
    for i in range(shape[0]):
        for rest in _indices(shape[1:]):
            yield (i, *rest)


def allclose(out: object, exp: object, atol: float, rtol: float = RTOL) -> bool:
    """numpy.allclose(out, exp, rtol, atol), False where numpy would raise.

    Element-wise, with numpy's broadcasting: |out - exp| <= atol + rtol * |exp| where exp is
    finite, or out == exp (so inf matches inf of its sign, NaN matches nothing). Values are
    compared as numpy compares them: ints and bools as floats, complex as complex. numpy fails on
    anything that is not a (regular) nesting of lists/tuples of numbers, and on an expected array
    holding an int beyond 64 bits (an object array).
    """
    try:
        exp_shape, exp_leaves = _array(exp)
        # numpy keeps a scalar `exp` a Python number, but makes an array holding a wider int an
        # object array, on which it fails
        if exp_shape and any(type(v) is int and not -(2**63) <= v < 2**64 for v in exp_leaves):
            return False
        out_shape, out_leaves = _array(out)
        shape = _broadcast(out_shape, exp_shape)
        for index in _indices(shape):
            x = out_leaves[_leaf_index(out_shape, index)]
            y = exp_leaves[_leaf_index(exp_shape, index)]
            x = x if type(x) is complex else float(x)  # OverflowError for an int too big: numpy fails too
            y = y if type(y) is complex else float(y)
            finite = cmath.isfinite(y) if type(y) is complex else math.isfinite(y)
            if not ((abs(x - y) <= atol + rtol * abs(y) and finite) or x == y):
                return False
        return True
    except (_NotNumeric, OverflowError):
        return False


def poly(xs: Sequence[float], x: float) -> float:
    """xs[0] + xs[1] * x + ... + xs[n] * x**n, summed as EvalPlus's find_zero oracle sums it."""
    return sum([coefficient * math.pow(x, i) for i, coefficient in enumerate(xs)])


def pyramid_surface(base_edge: float, height: float) -> int:
    """MBPP/581's other reading: the square pyramid's surface with `height` perpendicular to the
    base (the reference reads it as the slant height), rounded; operations in EvalPlus's order."""
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    lateral = 4 * (base_edge * slant) / 2
    return round(base_edge**2 + lateral)


def digit_distance(a: int, b: int) -> int:
    """MBPP/558's other reading: the sum of digit-wise distances of `a` and `b` padded with zeros."""
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(width), y.zfill(width)))


def correct(out: object, exp: object, atol: float, oracle: str = "exact", args: Sequence = ()) -> bool:
    """Whether output `out` of a call with `args` is correct, `exp` being the reference's output and
    `atol` this input's tolerance (`atols`). Any exception while judging means not correct."""
    if oracle not in ORACLES:
        raise ValueError(f"unknown oracle {oracle!r}; one of {sorted(ORACLES)}")
    try:
        if oracle == "poly_root":
            return abs(poly(*args, out)) <= atol
        same = out == exp
        if oracle == "any":
            same = True
        elif oracle == "or_zero":
            same = same or out == 0
        elif oracle == "surface_area":
            same = same or abs(out - pyramid_surface(*args)) <= atol
        elif oracle == "digit_distance":
            same = same or out == digit_distance(*args)
        elif oracle == "set_equal":
            same = set(out) == set(exp)
        elif oracle == "not_none":
            same = out == exp if isinstance(out, bool) else exp == (out is not None)
        if same:
            return True
        if atol == 0 or type(out) is not type(exp):
            return False
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False
        return allclose(out, exp, atol)
    except Exception:
        return False


def first_failure(
    call: Callable[[Sequence], object], inputs: Sequence[Sequence], expected: Sequence, atol: float, oracle: str = "exact"
) -> int | None:
    """The index of the first input on which `call(args)` raises or returns a wrong output, or None.

    `call` runs the sample's function on one input's arguments and enforces that call's time limit
    by raising; an exception that is not an Exception (the harness's own) is not caught. The oracles
    read the arguments after the call, as the call left them.
    """
    for i, (args, exp, tolerance) in enumerate(zip(inputs, expected, atols(expected, atol, oracle))):
        try:
            out = call(args)
        except Exception:
            return i
        if not correct(out, exp, tolerance, oracle, args):
            return i
    return None


class ReferenceFailed(Exception):
    """The reference raised (a fault of the task's data, never a sample's verdict); names the input."""


def expected_outputs(
    program: str, entry_point: str, inputs: Sequence[Sequence], not_none: bool = False
) -> tuple[list, list[float]]:
    """(outputs, seconds) of the reference: `program` is executed, then its function `entry_point`
    is called on a deep copy of each input's arguments, each call timed alone; with `not_none`
    (oracle `not_none`), outputs are reduced to `output is not None`. ReferenceFailed where the
    program or a call raises.

    Trusted code only, and nothing here limits what it does: run it where the benchmark's own
    code may run (the judge's sandbox), never on a sample.
    """
    namespace: dict = {"__name__": "__reference__"}
    try:
        exec(program, namespace)
        function = namespace[entry_point]
    except Exception as e:
        raise ReferenceFailed(f"the reference program: {type(e).__name__}: {e}") from None
    outputs, seconds = [], []
    for i, args in enumerate(inputs):
        args = copy.deepcopy(args)
        start = time.perf_counter()
        try:
            out = function(*args)
        except Exception as e:
            raise ReferenceFailed(f"input {i}: {type(e).__name__}: {e}") from None
        seconds.append(time.perf_counter() - start)
        outputs.append(out is not None if not_none else out)
    return outputs, seconds


def time_limits(
    reference_seconds: Sequence[float], floor: float = MIN_TIME_LIMIT, factor: float = TIME_LIMIT_FACTOR
) -> list[float]:
    """Each call's time limit: max(floor, factor x the reference's time on that input)."""
    return [max(floor, factor * t) for t in reference_seconds]


def run_timeout(limits: Sequence[float]) -> float:
    """The wall-clock limit of one whole run (one split of one sample, its program's loading
    included): how long EvalPlus waits for the run's process before killing it."""
    return min(MAX_RUN_SECONDS, sum(limits)) + 2
