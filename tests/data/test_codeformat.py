"""Tests of mmpt/data/codeformat.py: flatten/unflatten round trips, detection, prompts and completions."""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize

import pytest

from mmpt.data import codeformat
from mmpt.data.codeformat import flat_completion, flat_prompt_code, flatten, is_flat, to_python, unflatten

NESTED = '''
import re


def parse(text, sep="<NEW_LINE>", marker='<INDENT> <DEDENT>'):
    """Docstring: <NEW_LINE> inside, and # not a comment."""
    out = []  # a comment with <DEDENT>
    for line in text.split(sep):
        if not line:
            continue

        try:
            while line:
                if line.startswith("#"):
                    line = line[1:]
                else:
                    break
        except ValueError:
            pass
    total = sum(
        len(x)
        for x in out
    )
    return out, total, r"\\d+<INDENT>", f"{total}<NEW_LINE>"


class Box:
    text = """multi
  line <NEW_LINE> string"""

    def get(self):
        return self.text
'''


def _functions() -> list[str]:
    """Real functions of the standard library with nested blocks and several dedents at once."""
    import json.decoder
    import textwrap as tw

    return [inspect.getsource(f) for f in (json.decoder.py_scanstring, tw.dedent, tw.TextWrapper._wrap_chunks)]


@pytest.mark.parametrize("source", [NESTED, *_functions()])
def test_round_trip_keeps_the_ast(source: str):
    source = textwrap.dedent(source)
    flat = flatten(source)
    # one line, except for the line breaks inside string literals
    strings = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.STRING]
    assert flat.count("\n") == sum(s.count("\n") for s in strings)
    assert is_flat(flat) and not is_flat(source)
    back = unflatten(flat)
    assert ast.dump(ast.parse(back)) == ast.dump(ast.parse(source))
    assert to_python(flat, "auto") == (back.strip("\n") + "\n", True)


def test_several_dedents_at_once_are_one_marker_per_level():
    flat = flatten("def f(x):\n    if x:\n        if x:\n            return 1\n    return 2\n")
    assert flat == (
        "def f(x): <NEW_LINE> <INDENT> if x: <NEW_LINE> <INDENT> if x: <NEW_LINE> <INDENT> return 1 "
        "<NEW_LINE> <DEDENT> <DEDENT> return 2 <NEW_LINE> <DEDENT>"
    )


def test_corpus_style_text_converts():
    # space-separated tokens as in the published corpus, a blank line, a stray final dedent
    flat = "def add ( a , b ) : <NEW_LINE> <INDENT> c = a + b <NEW_LINE> <NEW_LINE> return c <NEW_LINE> <DEDENT> <DEDENT>"
    code, converted = to_python(flat, "auto")
    assert converted and code == "def add ( a , b ) :\n    c = a + b\n\n    return c\n"
    assert to_python(flat, "plain") == (flat, False)
    assert to_python("x = '<NEW_LINE>'\n", "auto") == ("x = '<NEW_LINE>'\n", False)  # valid Python stays
    with pytest.raises(ValueError, match="code format"):
        to_python(flat, "weird")


def test_prompt_and_completion_of_flat_checkpoints():
    code, body, level = flat_prompt_code("def f(x):", "    if x:\n        y = 1\n")
    assert code == "def f(x): <NEW_LINE> <INDENT> if x: <NEW_LINE> <INDENT> y = 1"
    assert body == " <NEW_LINE> <INDENT> if x: <NEW_LINE> <INDENT> y = 1" and level == 2
    assert flat_prompt_code("def f(x):", "") == ("def f(x):", "", 0)
    # the model goes on from the prompt's level; its text opens with its own NEW_LINE
    assert flat_completion(" <NEW_LINE> return y <NEW_LINE> <DEDENT> <DEDENT> <NEW_LINE>", level) == ("\n        return y\n\n")
    assert flat_completion(" <NEW_LINE> <INDENT> return x <NEW_LINE> <DEDENT>", 0) == "\n    return x\n"
    assert codeformat.MARKERS == ("<NEW_LINE>", "<INDENT>", "<DEDENT>")


def test_split_flat_signature_cuts_where_the_official_data_does():
    from mmpt.data.codeformat import split_flat_signature

    flat = "@cache <NEW_LINE> def f ( x ) : <NEW_LINE> <INDENT> return x <NEW_LINE> <DEDENT>"
    assert split_flat_signature(flat) == ("def f ( x ) :", " <NEW_LINE> <INDENT> return x <NEW_LINE> <DEDENT>")
    assert split_flat_signature("class A : <NEW_LINE> <INDENT> pass <NEW_LINE> <DEDENT>")[0] == "class A :"
    assert split_flat_signature("x = 1 <NEW_LINE>") is None


def test_given_lines_that_stop_inside_a_bracket_flatten_to_an_open_line():
    # an incremental task's given lines can cut a statement: the model continues its open line
    given = "    y = g(1,\n          2,\n"
    code, body, level = flat_prompt_code("def f(x):", given)
    assert code == "def f(x): <NEW_LINE> <INDENT> y = g(1, 2," and level == 1
    completion = flat_completion(" 3) <NEW_LINE> return y <NEW_LINE> <DEDENT>", level)
    assert ast.parse("def f(x):\n" + given + completion)  # given + completion is Python again
    with pytest.raises(ValueError, match="inside a string"):
        flatten('def f():\n    s = """abc\n')
