"""A demo run's layout: the models it compares, what each generates for, and where every stage writes under OUT."""

from __future__ import annotations

from pathlib import Path

MODELS = ("separated", "baseline")  # the two further pre-trainings compared in the report
KINDS = ("greedy", "sampled", "incremental")  # what each of them generates for


class Paths:
    """Where each stage writes, under OUT."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pairs = out / "data" / "pairs.jsonl"
        self.tokenizer = out / "data" / "tokenizer"
        self.data = {"none": out / "data" / "none", "partial": out / "data" / "partial"}
        self.backbone = out / "backbone"
        self.run = {"separated": out / "separated", "baseline": out / "baseline"}
        self.eval = out / "eval"

    def samples(self, model: str, kind: str) -> Path:
        return self.eval / model / f"{kind}.samples.jsonl"

    def results(self, model: str, kind: str) -> Path:
        return self.eval / model / f"{kind}.results.jsonl"

    def score(self, model: str) -> Path:
        """`mmpt score`'s records of the reference solutions under `model`."""
        return self.eval / model / "score.jsonl"
