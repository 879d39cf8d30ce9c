"""Sampling engines behind one interface: our own decoder (`ours`) and vLLM (`vllm`).

An engine turns token-id prompts into generated code ids, one list per prompt, without the stop
id; a sample that reached the end of its function ends with the token that ended it. Each sample
brings its own seed, so what it draws does not depend on batching, ranks or resumption. Text,
cutting and records are the caller's (`mmpt.eval.generate`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mmpt.data.separation import SeparationMap
from mmpt.model.folder import CheckpointMeta

ENGINES = ("auto", "ours", "vllm")


@dataclass(frozen=True)
class SamplingConfig:
    """How each next token is chosen."""

    greedy: bool = True  # argmax; temperature and top_p are then unused
    temperature: float = 1.0  # logits are divided by it before the softmax
    top_p: float = 1.0  # nucleus: sample among the most likely tokens whose mass reaches top_p
    max_new_tokens: int = 300  # per completion; also bounded by the model's context

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.greedy and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_seed(seed: int, task_id: str, completion_id: int) -> int:
    """A 63-bit seed of one sample, stable across runs, machines and Python hash salts."""
    digest = hashlib.sha256(f"{seed}\0{task_id}\0{completion_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class ServedModel:
    """What every engine must know of the model folder it serves, besides its weights."""

    directory: Path  # the Hugging Face folder written by `mmpt export`
    tokenizer: object
    smap: SeparationMap
    meta: CheckpointMeta
    stop_id: int  # `<eot>`'s code id: ends a sample, never returned
    pad_id: int
    prefix_id: int | None  # `<python>` for prefix-LM checkpoints (bidirectional prompt prefix), else None


class Engine(Protocol):
    """Generated code ids of each prompt; `seeds` (one per prompt) are unused when greedy."""

    context: int | None  # the longest sequence (prompt + generated) the model allows, if known

    def generate(self, prompts: list[list[int]], seeds: list[int]) -> list[list[int]]: ...


def pick_engine(name: str, meta: CheckpointMeta, vllm_installed: bool) -> str:
    """`ours` or `vllm` for `--engine name`; a clear error when vLLM cannot serve the checkpoint."""
    if name not in ENGINES:
        raise ValueError(f"--engine must be one of {ENGINES}, got {name!r}")
    if name == "auto":
        return "vllm" if vllm_installed and not meta.prefix_lm else "ours"
    if name == "vllm" and meta.prefix_lm:
        raise ValueError(
            "--engine vllm cannot serve a prefix-code-clm checkpoint: its NL prefix attends bidirectionally, "
            "which vLLM's causal attention cannot express; use --engine ours (or auto)"
        )
    if name == "vllm" and not vllm_installed:
        raise ValueError("--engine vllm needs vLLM in this interpreter: run mmpt from a venv with vLLM (docs/evaluation.md)")
    return name
