"""mmpt/eval/failures.py: each executed sample gets one outcome from its status and detail."""

from __future__ import annotations

from mmpt.eval.failures import OUTCOMES, outcome


def test_outcomes_of_failed_samples() -> None:
    base = {"passed": False, "status": "failed"}
    assert outcome({"passed": True, "status": "passed", "detail": ""}) == "passed"
    assert outcome({**base, "detail": "SyntaxError: '(' was never closed"}) == "does not parse"
    assert outcome({**base, "detail": "IndentationError: unexpected indent"}) == "does not parse"
    assert outcome({**base, "detail": "AssertionError"}) == "wrong answer"
    assert outcome({**base, "detail": "NameError: name 'x' is not defined"}) == "runtime error"
    assert outcome({"passed": False, "status": "timeout", "detail": "wall-clock limit"}) == "timeout"
    assert outcome(base) == "runtime error" and set(OUTCOMES) >= {"passed", "timeout", "does not parse"}
