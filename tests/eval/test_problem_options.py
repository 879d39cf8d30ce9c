"""mmpt/eval/problem_options.py: every eval command takes the problem options of one definition."""

from __future__ import annotations

import argparse

import pytest

from mmpt import cli
from mmpt.eval.problem_options import OPTIONS, ProblemOptions, add_problem_options, problem_options

# which problem options each command takes (execute: incremental tasks are read from the samples' ids)
TAKES = {
    "generate": OPTIONS,
    "prompts": OPTIONS,
    "watch": OPTIONS,
    "score": ("benchmark", "data_file", "limit", "prompt_style", "split"),
    "execute": ("benchmark", "data_file", "prompt_style", "split"),
    "paper-table": ("limit",),
}


def _options(command: str, monkeypatch) -> dict[str, argparse.Action]:
    """The actions of `mmpt COMMAND`'s parser, by dest (the parser caught as `--help` builds it)."""
    parsers = []
    original = argparse.ArgumentParser.parse_args

    def catch(self, *args, **kwargs):
        parsers.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return {a.dest: a for p in parsers for a in p._actions}


def test_each_command_takes_its_options_from_the_one_definition(monkeypatch, capsys):
    reference = argparse.ArgumentParser()
    add_problem_options(reference)
    want = {a.dest: a for a in reference._actions if a.dest in OPTIONS}
    for command, names in TAKES.items():
        actions = _options(command, monkeypatch)
        for name in names:
            a, w = actions.get(name), want[name]
            assert a is not None, f"mmpt {command} lacks --{name.replace('_', '-')}"
            if name != "prompt_style":  # its help names the command's own default
                assert (a.option_strings, a.help, a.default, a.choices) == (w.option_strings, w.help, w.default, w.choices), (
                    command,
                    name,
                )


def test_typed_options_and_unknown_names():
    ap = argparse.ArgumentParser()
    add_problem_options(ap, only=("benchmark", "split"))
    chosen = problem_options(ap.parse_args(["--benchmark", "mbpp", "--split", "validation"]))
    assert chosen == ProblemOptions(benchmark="mbpp", split="validation")
    with pytest.raises(SystemExit):
        ap.parse_args(["--benchmark", "apps"])
    with pytest.raises(ValueError, match="unknown problem options"):
        add_problem_options(argparse.ArgumentParser(), only=("splits",))
