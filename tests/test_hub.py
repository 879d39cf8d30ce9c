"""mmpt.hub: with the hub off (HF_HUB_OFFLINE=1), every command given a hub name it cannot have
ends with one line that names the repository and how to give a local copy, never a traceback.

Each command runs as a user runs it (a fresh process, the hub switched off in its environment,
which huggingface_hub reads at import), under `deepspeed` and `torchrun` with two ranks for
training.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mmpt.hub import REPO_ID, HubMiss, from_hub, miss_message

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"
MODEL, DATASET = "Daoguang/PyCodeGPT", "huawei-noah/python_text2code"
OFFLINE = {"HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")} | OFFLINE
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def mmpt(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmpt", *args]


def assert_one_line_miss(proc: subprocess.Popen, prefix: str, name: str, option: str, dataset: bool = False) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, (proc.args, out[-2000:], err[-3000:])
    assert "Traceback" not in out + err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith(prefix)]
    kind = " --repo-type dataset" if dataset else ""
    expected = (
        f"{prefix}{option}: {name!r} is not a local {'file or folder' if dataset else 'folder'}, and the Hugging Face hub "
        f"cannot give it (HF_HUB_OFFLINE is set and it is not in the cache); download it where there is network "
        f"(`hf download {name}{kind} --local-dir DIR`) and give DIR as {option}"
    )
    assert errors and set(errors) == {expected}, err[-3000:]  # one line (once per rank under a launcher)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from mmpt.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("hub")
    prepare(PrepareConfig(str(ASSETS / "pairs.jsonl"), str(ASSETS / "tokenizer"), str(root / "data"), "none", max_seq_length=128))
    return root / "data"


def test_each_command_names_the_repository_in_one_line(tmp_path, data_dir):
    """Training's model is the launcher test's (it is built after the ranks have met)."""
    pairs, tokenizer = str(ASSETS / "pairs.jsonl"), str(ASSETS / "tokenizer")
    train = [sys.executable, "-m", "mmpt.train", "--config", "tiny-cpu", "--data_dir", str(data_dir), "--output_dir", "out"]
    cases = [  # (process, what its error line starts with, the repository, the option it was given as, a dataset)
        (mmpt("prepare", "--pairs", pairs, "--tokenizer", MODEL, "--max-seq-length", "64", "--out", "d"), "mmpt prepare: ", MODEL, "--tokenizer", False),
        (mmpt("prepare", "--pairs", DATASET, "--tokenizer", tokenizer, "--max-seq-length", "64", "--out", "d"), "mmpt prepare: ", DATASET, "--pairs", True),
        (mmpt("import-checkpoint", "huawei-noah/pycodegpt-CodeCLM-100m", "--out", "imp"), "mmpt import-checkpoint: ", "huawei-noah/pycodegpt-CodeCLM-100m", "source", False),
        ([*train, "--tokenizer", MODEL], "mmpt train: ", MODEL, "config field 'tokenizer'", False),
    ]  # fmt: skip
    procs = [(run(args, tmp_path), *rest) for args, *rest in cases]  # side by side: each is mostly start-up
    for proc, *expected in procs:
        assert_one_line_miss(proc, *expected)


@pytest.mark.parametrize("command", ["generate", "score"])
def test_generate_and_score_name_a_hub_model_they_never_download(tmp_path, command):
    proc = run(mmpt(command, "--model", MODEL, "--benchmark", "mbpp", "--out", "x.jsonl"), tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert err.splitlines() == [
        f"mmpt {command}: {MODEL}: no such checkpoint folder; generation and scoring read a local one. For a hub model, "
        f"download it where there is network (`hf download {MODEL} --local-dir DIR`) or import the authors' checkpoints "
        f"(`mmpt import-checkpoint {MODEL} --out DIR`), and give DIR"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.heavy
def test_training_under_a_launcher_says_it_in_one_line_per_rank(tmp_path, data_dir):
    args = ["--config", "tiny-cpu", "--data_dir", str(data_dir), "--model", MODEL]
    script = str(REPO / "mmpt" / "train.py")
    launches = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args, "--output_dir", "tr"],
        "deepspeed": [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(_free_port()), script, *args, "--output_dir", "ds"],
    }  # fmt: skip
    procs = {name: run(cmd, tmp_path) for name, cmd in launches.items()}  # side by side
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        lines = [line for line in (out + err).splitlines() if "mmpt train: config field" in line]
        # one line from each rank that gets there: the launcher ends the other rank as soon as the first
        # fails, so a rank slowed by the machine's load may be stopped before its own hub lookup ends
        assert proc.returncode != 0 and 1 <= len(lines) <= 2, (name, out[-3000:], err[-3000:])
        assert all(line.endswith("and give DIR as config field 'model'") for line in lines), lines
        assert "[rank0]" not in out + err and "huggingface_hub" not in out + err, (name, err[-3000:])


def test_a_path_is_not_taken_for_a_repository(tmp_path):
    assert REPO_ID.fullmatch(MODEL) and REPO_ID.fullmatch("gpt2") and REPO_ID.fullmatch("org/name-1.5b_x")
    for path in ("runs/x/final", "/data/tok", "./tok", "../tok", "~/tok", ".hidden"):
        assert not REPO_ID.fullmatch(path), path
        with pytest.raises(HubMiss, match=f"^--tokenizer: no such file or folder '{path}'$"):
            with from_hub(path, "--tokenizer"):
                raise AssertionError("the body must not run for a path that does not exist")
    (tmp_path / "here").mkdir()
    with pytest.raises(OSError, match="the loader's own error"):  # an existing path keeps its loader's error
        with from_hub(str(tmp_path / "here"), "--tokenizer"):
            raise OSError("the loader's own error")


def test_the_cause_is_one_line_when_online(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    cause = OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")
    message = miss_message(MODEL, "--tokenizer", cause)
    assert "\n" not in message and "(OSError: We couldn't connect to 'https://huggingface.co' to load the files.)" in message
