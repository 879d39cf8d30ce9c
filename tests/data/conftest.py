"""Shared fixtures of the data tests: the tiny source tree, pairs and tokenizer under tests/assets."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from mmpt.data.tokenizer import load_tokenizer

    return load_tokenizer(str(ASSETS / "tokenizer"))
