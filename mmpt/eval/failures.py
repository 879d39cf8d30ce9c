"""How an executed sample failed: one outcome per result record of `mmpt execute`.

To be folded into mmpt/eval/execute.py, which writes the records it classifies.
"""

from __future__ import annotations

OUTCOMES = ("passed", "wrong answer", "runtime error", "does not parse", "timeout")
PARSE_ERRORS = ("SyntaxError", "IndentationError", "TabError")  # the program never ran


def outcome(result: dict) -> str:
    """One of OUTCOMES for a result record (`passed`, `status`, `detail` as `mmpt execute` writes them):
    an AssertionError is a wrong answer (the code ran to the tests), any other exception a runtime error."""
    if result["passed"]:
        return "passed"
    if result.get("status") == "timeout":
        return "timeout"
    detail = result.get("detail", "")
    if detail.startswith(PARSE_ERRORS):
        return "does not parse"
    return "wrong answer" if detail.startswith("AssertionError") else "runtime error"
