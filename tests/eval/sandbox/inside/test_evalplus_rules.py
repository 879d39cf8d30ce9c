"""EvalPlus's rules restated without numpy, checked against the `evalplus` package's own code.

Each generated case (an input, the reference's output, a sample's output) is judged by our
`correct` and by evalplus's `untrusted_check` (its real per-input loop, in its own child process),
grouped into one run per task kind; the special oracles' helpers and numpy.allclose are compared
directly on many more values.
"""

from __future__ import annotations

import math
import pickle
import random
import warnings

import pytest

from mmpt.eval.sandbox.inside import evalplus_rules as rules

evalplus_eval = pytest.importorskip("evalplus.eval", reason="the reference: pip install --no-deps evalplus (see .ci/run)")
numpy = pytest.importorskip("numpy")

SEED = 20250


def _floats(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, 1.0, -2.5, 1e-9, 3.14159, 1e6, -7.25e12, 1e300, rng.uniform(-1e3, 1e3), rng.gauss(0, 1e-5)])


def _near(rng: random.Random, exp: float, atol: float) -> float:
    """A float around the edge of exp's tolerance band |out - exp| <= atol + rtol*|exp|."""
    band = atol + 1e-7 * abs(exp)  # evalplus's rtol, written out: the band must not follow ours
    return exp + rng.choice([-1, 1]) * band * rng.choice([0.0, 0.5, 0.999999, 1.0, 1.000001, 2.0, 1e6])


def _value_pair(rng: random.Random, atol: float) -> tuple[object, object]:
    """(expected, output) of one of many shapes: floats near the edge, nested lists/tuples, NaN/inf,
    complex, ints, big ints, bools, strings, None, mismatched types and shapes."""
    kind = rng.randrange(17)
    tol = atol or rules.FLOAT_ATOL
    if kind == 0:
        exp = _floats(rng)
        return exp, _near(rng, exp, tol)
    if kind == 1:
        exp = [_floats(rng) for _ in range(rng.randrange(1, 4))]
        return exp, [_near(rng, e, tol) for e in exp]
    if kind == 2:
        exp = tuple(_floats(rng) for _ in range(rng.randrange(1, 4)))
        out = [_near(rng, e, tol) for e in exp]
        return exp, rng.choice([tuple(out), out, tuple(out[:-1]), tuple(out) + (1.0,)])
    if kind == 3:  # nested: not "floats", so atol 0 stays exact
        exp = [[_floats(rng), _floats(rng)] for _ in range(rng.randrange(1, 3))]
        return exp, [[_near(rng, e, tol) for e in row] for row in exp]
    if kind == 4:  # broadcasting and ragged shapes inside a list of equal length
        exp = [[1.0, 2.0], [3.0, 4.0]]
        if rng.random() < 0.3:  # a shape that broadcasts or not, all values equal
            return rng.choice(
                [
                    ([[1.0, 1.0]], [[1.0, 1.0, 1.0]]),
                    ([1.0, 1.0], [1.0]),
                    ([[1.0], [1.0]], [[1.0, 1.0]]),
                    ([1.0, 1.0], [1.0, 1.0, 1.0]),
                ]
            )
        return exp, rng.choice([[[1.0], [3.0]], [[1.0, 2.0], [3.0]], [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], [[], []], [1.0, 3.0]])
    if kind == 5:
        special = [math.inf, -math.inf, math.nan, 1.0]
        exp = rng.choice(special)
        out = rng.choice(special)
        return (exp, out) if rng.random() < 0.5 else ([exp, 1.0], [out, 1.0])
    if kind == 6:
        exp = complex(_floats(rng), _floats(rng))
        out = complex(_near(rng, exp.real, tol), _near(rng, exp.imag, tol))
        return (exp, out) if rng.random() < 0.5 else ([exp, 2.0], [out, 2.0])
    if kind == 7:
        exp = rng.choice([0, 7, -3, 10**8, 2**62, 2**63, 2**64 + 1, 2**70, 10**400])
        out = exp + rng.choice([0, 1, -1, 10, 2**20])
        return (exp, out) if rng.random() < 0.5 else ([exp, 1], [out, 1])
    if kind == 8:
        exp = [rng.choice([True, False]) for _ in range(3)]
        return exp, rng.choice([[int(b) for b in exp], [float(b) for b in exp], [not b for b in exp], exp])
    if kind == 9:
        exp = ("a", _floats(rng))
        return exp, (rng.choice(["a", "b"]), _near(rng, exp[1], tol))
    if kind == 10:
        exp = [_floats(rng), None]
        return exp, [_near(rng, exp[0], tol), None]
    if kind == 11:  # an int where a float is expected and the reverse
        exp = rng.choice([2.0, 3])
        return exp, rng.choice([2, 2.0, 3.0, 3, 2.0000001])
    if kind == 12:
        return {"k": 1.0}, {"k": 1.0 + rng.choice([0.0, 1e-9])}
    if kind == 13:
        return [], rng.choice([[], [1.0], ()])
    if kind == 14:  # mixed ints and floats in one flat list (not "floats")
        exp = [1, _floats(rng)]
        return exp, [1, _near(rng, exp[1], tol)]
    if kind == 15:
        exp = [2**70, 1.5]
        return rng.choice([(exp, [2**70 + 1, 1.5]), ([1.0, 1.5], [2**70, 1.5]), ([1.0], [10**400])])
    exp = rng.choice(["abc", None, (1, 2), [1, [2, 3]]])
    return exp, rng.choice([exp, "abd", None, (1, 3), [1, [2, 4]]])


def test_allclose_is_numpys():
    rng = random.Random(SEED)
    cases = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(4000):
            atol = rng.choice([0.0, 1e-6, 1e-3, 0.5])
            exp, out = _value_pair(rng, atol)
            try:
                want = bool(numpy.allclose(out, exp, rtol=1e-07, atol=atol))
            except Exception:
                want = False
            assert rules.allclose(out, exp, atol) == want, (out, exp, atol)
            cases += want
    assert 500 < cases < 3500  # both outcomes well represented


def test_is_floats_and_oracle_helpers_are_evalplus():
    from evalplus.eval import _special_oracle as special

    rng = random.Random(SEED)
    for _ in range(500):
        exp, out = _value_pair(rng, 0.0)
        assert rules.is_floats(exp) == evalplus_eval.is_floats(exp), exp
        assert rules.is_floats(out) == evalplus_eval.is_floats(out), out
    for _ in range(500):
        xs = [rng.uniform(-10, 10) for _ in range(rng.choice([2, 4, 6]))]
        x = rng.uniform(-5, 5)
        assert rules.poly(xs, x) == special._poly(xs, x)
        b, h = rng.randrange(1, 1000), rng.randrange(1, 1000)
        assert rules.pyramid_surface(b, h) == special._surface_Area(b, h)
        b, h = rng.uniform(0.1, 100), rng.uniform(0.1, 100)
        assert rules.pyramid_surface(b, h) == special._surface_Area(b, h)
        m, n = rng.randrange(10 ** rng.randrange(1, 12)), rng.randrange(10 ** rng.randrange(1, 12))
        assert rules.digit_distance(m, n) == special._digit_distance_nums(m, n)


def test_time_limits_are_evalplus():
    from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT

    # the floor is 4 s as upstream has it since 0.3.1 (1 s there); the factor is the package's
    assert rules.TIME_LIMIT_FACTOR == DEFAULT_GT_TIME_LIMIT_FACTOR and (DEFAULT_MIN_TIME_LIMIT, rules.MIN_TIME_LIMIT) == (
        1.0,
        4.0,
    )
    assert rules.time_limits([0.001, 0.25, 0.3, 2.0], floor=DEFAULT_MIN_TIME_LIMIT) == [1.0, 1.0, 1.2, 8.0]
    assert rules.time_limits([0.001, 2.0]) == [4.0, 8.0]
    assert rules.run_timeout([1.0] * 5) == 7.0 and rules.run_timeout([8.0] * 10) == 62.0


# --- case by case against evalplus's own loop ------------------------------------------------


def _candidate(entry_point: str, outputs: list) -> str:
    """A sample program whose function returns `outputs` one call after another."""
    data = pickle.dumps(outputs)
    return f"import pickle\n_OUTS = iter(pickle.loads({data!r}))\ndef {entry_point}(*args):\n    return next(_OUTS)\n"


def _evalplus_details(dataset: str, entry_point: str, inputs, expected, outputs, atol) -> list[bool]:
    """evalplus's per-input verdicts (its whole loop: every input, no stop at the first failure)."""
    if entry_point == "find_zero":
        # 0.3.1 records nothing for a find_zero input that passes (the oracle `continue`s before
        # recording it; fixed upstream after 0.3.1, "record results before continue"), so each
        # input runs alone and a missing detail is a pass
        return [not _run(dataset, entry_point, [i], [e], [o], atol)[1] for i, e, o in zip(inputs, expected, outputs)]
    status, details = _run(dataset, entry_point, inputs, expected, outputs, atol)
    assert len(details) == len(inputs), status
    return [bool(d) for d in details]


def _run(dataset, entry_point, inputs, expected, outputs, atol):
    return evalplus_eval.untrusted_check(
        dataset, _candidate(entry_point, outputs), inputs, entry_point, expected, atol, [0.0] * len(inputs), fast_check=False
    )


def _oracle_cases(rng: random.Random, oracle: str, n: int) -> list[tuple[tuple, object, object]]:
    """(args, expected, output) triples for one oracle."""
    cases = []
    for _ in range(n):
        if oracle == "poly_root":
            xs = [rng.uniform(-5, 5) for _ in range(rng.choice([2, 4]))]
            root = rng.uniform(-3, 3)
            xs[0] -= rules.poly(xs, root)  # now `root` is (nearly) a root
            out = rng.choice([root, root + 1e-9, root + 1e-3, root + 1.0, "x", None, [root]])
            cases.append(((xs,), root, out))
        elif oracle == "set_equal":
            exp = [rng.randrange(5) for _ in range(rng.randrange(0, 4))]
            out = rng.choice(
                [list(reversed(exp)), exp + exp[:1], exp[1:], tuple(exp), set(exp), [float(v) for v in exp], 7, None]
            )
            cases.append(((exp,), exp, out))
        elif oracle == "not_none":
            exp = rng.choice([True, False])
            out = rng.choice([None, "match", 0, True, False, ""])
            cases.append((("text",), exp, out))
        elif oracle == "surface_area":
            b, h = rng.randrange(1, 50), rng.randrange(1, 50)
            exp = 2 * b * h + b**2
            out = rng.choice(
                [exp, rules.pyramid_surface(b, h), exp + 1, float(exp), float(rules.pyramid_surface(b, h)) + 0.4, "x"]
            )
            cases.append(((b, h), exp, out))
        elif oracle == "digit_distance":
            m, n = rng.randrange(-50, 10**6), rng.randrange(0, 10**6)
            exp = sum(map(int, str(abs(m - n))))
            out = rng.choice([exp, exp + 1, 0, "x"] + ([rules.digit_distance(m, n)] if m >= 0 else []))
            cases.append(((m, n), exp, out))
        elif oracle == "or_zero":
            exp = rng.randrange(1, 100)
            cases.append(((exp,), exp, rng.choice([exp, 0, 0.0, exp + 1, None])))
        elif oracle == "any":
            cases.append(((1, 2), rng.choice([True, False]), rng.choice([True, False, None, "x"])))
    return cases


# evalplus picks oracles by the name of the function: (dataset, entry point) of each of ours
ORACLE_FUNCTIONS = {
    "poly_root": ("humaneval", "find_zero"),
    "set_equal": ("mbpp", "similar_elements"),
    "not_none": ("mbpp", "check_str"),
    "surface_area": ("mbpp", "surface_Area"),
    "digit_distance": ("mbpp", "digit_distance_nums"),
    "or_zero": ("mbpp", "sum_div"),
    "any": ("mbpp", "are_equivalent"),
}


def _judge_both(dataset, entry_point, oracle, atol, cases):
    # atol 0: the inputs whose expected output is not floats first, so that the tolerance evalplus
    # switches on at the first float output (and keeps) is the one each case would get alone
    cases = sorted(cases, key=lambda c: rules.is_floats(c[1]))
    args, expected, outputs = (list(column) for column in zip(*cases))
    theirs = _evalplus_details(dataset, entry_point, args, expected, outputs, atol)
    # outputs reach the judge as copies (evalplus: unpickled; ours: over the wire), so a NaN in a
    # list is never the expected list's own NaN object, which `==` would take as equal
    outputs = pickle.loads(pickle.dumps(outputs))
    tolerances = rules.atols(expected, atol, oracle)
    ours = [rules.correct(out, exp, t, oracle, a) for a, exp, out, t in zip(args, expected, outputs, tolerances)]
    return ours, theirs, cases


@pytest.mark.parametrize("atol", [0.0, 1e-6, 1e-2])
@pytest.mark.parametrize("dataset", ["humaneval", "mbpp"])
def test_plain_comparison_case_by_case(dataset, atol, monkeypatch):
    monkeypatch.setenv("EVALPLUS_MAX_MEMORY_BYTES", "-1")  # the child is forked from this (large) process
    rng = random.Random(f"{SEED}{dataset}{atol}")
    cases = [((i,), *_value_pair(rng, atol)) for i in range(600)]
    ours, theirs, cases = _judge_both(dataset, "f", "exact", atol, cases)
    mismatches = [(c, o, t) for c, o, t in zip(cases, ours, theirs) if o != t]
    assert not mismatches, mismatches[:5]
    assert 0.1 < sum(theirs) / len(theirs) < 0.9


@pytest.mark.parametrize("oracle", sorted(ORACLE_FUNCTIONS))
def test_special_oracles_case_by_case(oracle, monkeypatch):
    monkeypatch.setenv("EVALPLUS_MAX_MEMORY_BYTES", "-1")
    dataset, entry_point = ORACLE_FUNCTIONS[oracle]
    rng = random.Random(f"{SEED}{oracle}")
    n = 40 if oracle == "poly_root" else 150  # find_zero's cases run one process each
    for atol in (0.0, 1e-6, 0.5):
        ours, theirs, cases = _judge_both(dataset, entry_point, oracle, atol, _oracle_cases(rng, oracle, n))
        mismatches = [(c, o, t) for c, o, t in zip(cases, ours, theirs) if o != t]
        assert not mismatches, (atol, mismatches[:5])
        assert any(theirs) and (oracle == "any" or not all(theirs)), atol


def test_a_run_stops_at_its_first_failure_with_the_sticky_tolerance(monkeypatch):
    """Whole runs (evalplus's fast check, as its evaluator runs them): our first_failure gives the
    same verdict; the tolerance switched on by a float output also loosens a later int one."""
    monkeypatch.setenv("EVALPLUS_MAX_MEMORY_BYTES", "-1")
    rng = random.Random(SEED)
    runs = [
        ([1.5, 10**8], [1.5, 10**8 + 1]),  # passes only because of the float before the int
        ([10**8, 1.5], [10**8 + 1, 1.5]),
        ([[[1.0]], 2.0], [[[1.0000001]], 2.0]),  # [[1.0]] is not `floats`: exact
    ]
    for _ in range(30):
        pairs = [_value_pair(rng, 0.0) for _ in range(rng.randrange(1, 4))]
        runs.append(([e for e, _ in pairs], [o for _, o in pairs]))
    verdicts = []
    for expected, outputs in runs:
        inputs = [(i,) for i in range(len(expected))]
        status, _ = evalplus_eval.untrusted_check(
            "humaneval", _candidate("f", outputs), inputs, "f", expected, 0.0, [0.0] * len(inputs)
        )
        answers = iter(pickle.loads(pickle.dumps(outputs)))
        ours = rules.first_failure(lambda args, a=answers: next(a), inputs, expected, 0.0)
        assert (ours is None) == (status == "pass"), (expected, outputs, status, ours)
        verdicts.append(status == "pass")
    assert verdicts[:2] == [True, False] and not verdicts[2] and any(verdicts[3:]) and not all(verdicts[3:])


def test_first_failure_counts_exceptions_but_not_the_harness():
    def call(args):
        if args[0] == 2:
            raise ZeroDivisionError
        return args[0] * 1.0

    assert rules.first_failure(call, [(0,), (1,), (2,)], [0.0, 1.0, 2.0], 0.0) == 2
    assert rules.first_failure(call, [(0,), (1,)], [0.0, 1.0000001], 0.0) is None

    class HarnessFault(BaseException):
        pass

    def broken(args):
        raise HarnessFault

    with pytest.raises(HarnessFault):
        rules.first_failure(broken, [(0,)], [0], 0.0)
    with pytest.raises(ValueError, match="unknown oracle"):
        rules.correct(1, 1, 0.0, "fuzzy")


def test_expected_outputs_copy_inputs_and_reduce_not_none():
    program = "def reference(xs):\n    xs.append(0)\n    return None if len(xs) == 1 else xs\n"
    inputs = [([],), ([5],)]  # the reference mutates its argument: the inputs must not change
    outputs, seconds = rules.expected_outputs(program, "reference", inputs)
    assert outputs == [None, [5, 0]] and inputs == [([],), ([5],)] and len(seconds) == 2 and min(seconds) >= 0
    assert rules.expected_outputs(program, "reference", inputs, not_none=True)[0] == [False, True]
