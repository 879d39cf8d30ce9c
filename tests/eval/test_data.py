"""The benchmark files shipped as package data: unchanged releases, and the default of the loaders."""

from __future__ import annotations

import hashlib

import pytest

from mmpt.eval import data
from mmpt.eval.problems import load_problems

# the SHA-256 of each release as published (mmpt/eval/data/README.md)
RELEASES = {
    data.MBPP: "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
    data.HUMANEVAL_X_PYTHON: "5752fb122efddb0e9b47c77907ae6ce9a15aac4dea14e44c46032c831e6b987a",
}


@pytest.mark.parametrize("path", list(RELEASES), ids=lambda p: p.name)
def test_shipped_files_are_the_releases(path):
    assert hashlib.sha256(path.read_bytes()).hexdigest() == RELEASES[path]
    assert path.name in (data.FOLDER / "README.md").read_text()  # its source and license are named


def test_mbpp_needs_no_file_and_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    problems = load_problems("mbpp")
    assert [p.task_id for p in problems[:2]] == ["MBPP/11", "MBPP/12"] and len(problems) == 500
