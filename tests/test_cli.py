"""mmpt/cli.py: `mmpt COMMAND --help` works for every subcommand and documents each option on one line."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from mmpt import cli
from mmpt.config import TrainConfig, field_docs


def _help(name: str, monkeypatch, capsys) -> tuple[str, list[argparse.ArgumentParser]]:
    parsers: list[argparse.ArgumentParser] = []
    parse_args = argparse.ArgumentParser.parse_args

    def recording(self, *args, **kwargs):
        parsers.append(self)
        return parse_args(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording)
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out, parsers


@pytest.mark.parametrize("name", [n for n in cli.COMMANDS if n != "train"])
def test_every_option_has_one_line_of_help(name, monkeypatch, capsys):
    out, parsers = _help(name, monkeypatch, capsys)
    assert out.startswith(f"usage: mmpt {name}") and len(parsers) == 1
    lines = out.split("\n\n", 1)[1].splitlines()  # after the usage block, which may wrap onto a positional's name
    for action in parsers[0]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
        assert action.help, f"mmpt {name} {flag}: no help text"
        beside = [line for line in lines if line.lstrip().startswith(flag) or f", {flag}" in line]
        assert beside and action.help.split()[0] in beside[0], f"mmpt {name} {flag}: help not on the flag's line"


def test_train_help_lists_every_field_with_type_default_and_meaning(monkeypatch, capsys):
    out, _ = _help("train", monkeypatch, capsys)
    assert out.startswith("usage: mmpt train")
    hints, docs = typing.get_type_hints(TrainConfig), field_docs()
    for f in dataclasses.fields(TrainConfig):
        line = next((x for x in out.splitlines() if x.split()[:1] == [f"--{f.name}"]), None)
        assert line is not None, f"--{f.name} missing from mmpt train --help"
        section, meaning = docs[f.name]
        assert meaning, f"TrainConfig.{f.name} has no comment to document it"
        assert line.endswith(meaning) and str(f.default).lower().strip("'") in line.lower()
        for t in typing.get_args(hints[f.name]) or (hints[f.name],):
            assert t.__name__ in line
    assert "optimisation (AdamW" in out  # the config's section comments are the headings


def test_field_docs_come_from_the_source():
    docs = field_docs()
    assert list(docs) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert docs["max_steps"][0].startswith("length of training")
    assert docs["seed"] == ("checkpoints, logging, reproducibility", "model init, row order and corruption noise")


def test_top_level_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.COMMANDS)
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
