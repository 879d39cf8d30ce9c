"""The benchmark files shipped as package data: unchanged releases, and the default of the loaders."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmpt.eval import data
from mmpt.eval.benchmarks.registry import load_problems

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


def test_mbpp_commands_run_offline_without_a_data_file(tmp_path):
    """`mmpt prompts|generate|score --benchmark mbpp` as a user runs them with no network and no --data-file."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.data.separation import SeparationMap
    from mmpt.data.tokenizer import load_tokenizer
    from mmpt.model.folder import CheckpointMeta, save_model

    tokenizer = load_tokenizer(str(Path(__file__).resolve().parents[1] / "assets" / "tokenizer"))
    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=512)
    model_dir = save_model(AutoModelForCausalLM.from_config(config), SeparationMap("none", len(tokenizer)), tmp_path / "m",
                           tokenizer, CheckpointMeta())  # fmt: skip
    common = ["--model", str(model_dir), "--benchmark", "mbpp", "--limit", "2"]
    commands = {
        "prompts": ["prompts", *common, "--out", "prompts.jsonl"],
        "generate": [
            "generate",
            *common,
            "--n",
            "1",
            "--greedy",
            "--max-new-tokens",
            "4",
            "--no-progress",
            "--out",
            "samples.jsonl",
        ],
        "score": ["score", *common, "--out", "score.jsonl"],
    }
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "mmpt", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for name, args in commands.items()
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, (name, out[-3000:])
        written = (tmp_path / commands[name][-1]).read_text().splitlines()
        assert {json.loads(line)["task_id"] for line in written if "task_id" in line} == {"MBPP/11", "MBPP/12"}, (name, written)
