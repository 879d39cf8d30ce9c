"""mmpt.eval.generate: whole runs, records, resume, settings, engine choice, the CLI, ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from mmpt.data.separation import build_separation_map
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.completion import CodeText, end_of_function
from mmpt.eval.engines import SamplingConfig, pick_engine
from mmpt.eval.engines.ours import Decoder, load_checkpoint
from mmpt.eval.generate import GenerateConfig, main, run
from mmpt.eval.samples import read_records
from mmpt.model.folder import CheckpointMeta, save_model

REPO = Path(__file__).resolve().parents[2]

# --- whole runs on a tiny checkpoint ----------------------------------------------------------

PROBLEMS = [
    Problem("T/0", "T/0", "Add two numbers.", "def add(a, b):", "", "add", "", ""),
    Problem("T/1", "T/1", "Return the largest item.", "def largest(xs):", "    best = xs[0]\n", "largest", "", "", 1, 3),
    Problem("T/2", "T/2", "Count the vowels in s.", "def vowels(s):", "", "vowels", "", ""),
]


# Code-like tokens the checkpoint's head favours (weight ~ logit / hidden size): indented lines,
# newlines, and now and then a `def` at column 0 that ends the function.
FAVOURED = {"ĠĠĠ": 0.1, "Ġreturn": 0.1, "Ġa": 0.1, "Ġ+": 0.08, "Ċ": 0.1, "ĊĠĠĠ": 0.12, "def": 0.07}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny GPT-2 with full separation, prefix-code-clm, signature-first: every path of generation.

    Its final norm adds a constant direction that the output rows of FAVOURED's code copies point
    along, so it writes indented code-like lines that sometimes end at a column-0 `def`.
    """
    root = tmp_path_factory.mktemp("ckpt")
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "assets" / "tokenizer")
    smap, _ = build_separation_map(tokenizer, "full")
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "gpt2", vocab_size=smap.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=1024, tie_word_embeddings=False
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(0.3)
        model.transformer.ln_f.bias.fill_(1.0)
        for token, weight in FAVOURED.items():
            model.lm_head.weight[smap.to_code(tokenizer.convert_tokens_to_ids([token]))[0]] = weight
    hf = save_model(model, smap, root / "hf", tokenizer)
    meta = {"layout": "signature-first", "objective": "prefix-code-clm", "attn_implementation": "sdpa", "extra": 1}
    (hf / "mmpt.json").write_text(json.dumps(meta))
    return hf


def _config(checkpoint: Path, out: Path, **kw) -> GenerateConfig:
    sampling = SamplingConfig(greedy=False, temperature=1.0, top_p=0.95, max_new_tokens=24)
    return GenerateConfig(model=checkpoint, out=out, **{"n": 3, "sampling": sampling, "batch_size": 4, "progress": False, **kw})


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_read_checkpoint_meta(checkpoint: Path, tmp_path: Path) -> None:
    assert CheckpointMeta.load(checkpoint) == CheckpointMeta("signature-first", "prefix-code-clm", "sdpa")
    assert CheckpointMeta.load(tmp_path) == CheckpointMeta()  # absent: docstring-first, causal
    (tmp_path / "mmpt.json").write_text('{"layout": "code-first"}')
    with pytest.raises(ValueError, match="mmpt.json: field 'layout'"):
        CheckpointMeta.load(tmp_path)


def test_run_records_resume_and_batching(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    assert run(_config(checkpoint, out), PROBLEMS) == out
    records = [json.loads(line) for line in _lines(out)]
    assert [(r["task_id"], r["completion_id"]) for r in records] == [(p.task_id, c) for p in PROBLEMS for c in range(3)]
    assert not list(tmp_path.glob("samples.jsonl.rank*"))  # merged and cleaned up
    for r, p in zip(records, [p for p in PROBLEMS for _ in range(3)]):
        assert r["completion"] == p.given + r["generated"]
        assert end_of_function(r["generated"]) is None  # cut at the end of the function
        assert (r["base_task_id"], r["given_lines"], r["total_lines"]) == (p.base_task_id, p.given_lines, p.total_lines)
    assert len({r["generated"] for r in records}) > 1  # samples differ

    # resume: drop four records and tear the rank file's last line, as a crash would leave them
    first = _lines(out)
    out.write_text("\n".join(first[:5]) + "\n")
    (tmp_path / "samples.jsonl.rank0.jsonl").write_text(first[5] + "\n" + first[6][:10])
    run(_config(checkpoint, out), PROBLEMS)
    assert _lines(out) == first

    # another batch size gives the same samples (each has its own generator)
    other = tmp_path / "other.jsonl"
    run(_config(checkpoint, other, batch_size=1), PROBLEMS)
    assert _lines(other) == first


def test_full_separation_decodes_code_copies(checkpoint: Path) -> None:
    from mmpt.data.instances import encode_prompt

    model, tokenizer, smap, meta = load_checkpoint(checkpoint, torch.device("cpu"))
    code_mask = smap.vocab_masks(model.get_output_embeddings().weight.shape[0])[1]
    prompt = encode_prompt(tokenizer, smap, meta.layout, "Add two numbers.", "def add(a, b):", "")[0]
    sampling = SamplingConfig(greedy=False, max_new_tokens=30)
    gen = Decoder(model, sampling, stop_id=-1, pad_id=0, code_mask=code_mask)([prompt], [torch.Generator().manual_seed(1)])[0]
    assert gen and all(t >= smap.base_vocab_size for t in gen)  # full separation: only code copies
    text = CodeText(tokenizer, smap)
    assert text.text(prompt, gen) == tokenizer.decode(smap.to_original(gen))


def test_cli_rejects_bad_flags(checkpoint: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "--model",
        str(checkpoint),
        "--benchmark",
        "humaneval",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--top-p", "0.9"]) == 2
    assert "--top-p needs --temperature" in capsys.readouterr().err
    assert main([*argv, "--temperature", "0", "--n", "2"]) == 2
    assert "temperature must be > 0" in capsys.readouterr().err


def test_engine_choice(checkpoint: Path, tmp_path: Path, capsys) -> None:
    prefix, causal = CheckpointMeta(objective="prefix-code-clm"), CheckpointMeta(objective="code-clm")
    assert pick_engine("auto", prefix, vllm_installed=True) == "ours"  # vLLM cannot make the prefix bidirectional
    assert pick_engine("auto", causal, vllm_installed=True) == "vllm"
    assert pick_engine("auto", causal, vllm_installed=False) == "ours"
    with pytest.raises(ValueError, match="needs vLLM in this interpreter"):
        pick_engine("vllm", causal, vllm_installed=False)
    # the fixture is prefix-code-clm: asking for vLLM is a clear error whether or not it is installed
    assert main([*_cli(checkpoint, tmp_path / "o.jsonl", "--limit", "1"), "--engine", "vllm"]) == 2
    assert "--engine vllm cannot serve a prefix-code-clm checkpoint" in capsys.readouterr().err


def test_rerun_with_other_settings_refuses_to_mix(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "samples.jsonl"
    assert main(_cli(checkpoint, out, "--limit", "1")) == 0
    first = _lines(out)
    assert json.loads(first[0])["settings"]["temperature"] == 0.8
    # another temperature (or seed, engine, model, ...) on the same OUT: refused, nothing written
    argv = [a if a != "0.8" else "0.5" for a in _cli(checkpoint, out, "--limit", "2")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "other settings (temperature 0.8 on disk vs 0.5 now)" in err and "mix samples" in err
    assert _lines(out) == first and not list(tmp_path.glob("samples.jsonl.rank*"))
    # the same settings resume: the first task's samples stay, the second's are added
    assert main(_cli(checkpoint, out, "--limit", "2")) == 0
    assert _lines(out)[:2] == first and len(_lines(out)) == 4


def _cli(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    flags = "--benchmark humaneval -n 2 --temperature 0.8 --top-p 0.95 --max-new-tokens 12 --batch-size 3 --seed 7"
    return ["--model", str(checkpoint), "--out", str(out), *flags.split(), "--no-progress", *extra]


def test_cli_on_humaneval(checkpoint: Path, tmp_path: Path) -> None:
    from mmpt.eval.benchmarks.registry import load_problems

    out = tmp_path / "samples.jsonl"
    assert main(_cli(checkpoint, out, "--limit", "1", "--incremental")) == 0
    tasks = load_problems("humaneval", limit=1, incremental=True)
    assert len(tasks) > 1
    records = list(read_records(out))
    assert [(r["task_id"], r["completion_id"]) for r in records] == [(t.task_id, c) for t in tasks for c in range(2)]
    assert all(r["completion"].startswith(t.given) for r, t in zip(records, [t for t in tasks for _ in range(2)]))


@pytest.fixture(scope="module")
def one_process(checkpoint: Path, tmp_path_factory) -> list[str]:
    """The merged samples of a plain one-process run, for the launcher tests to match."""
    out = tmp_path_factory.mktemp("one") / "samples.jsonl"
    assert main(_cli(checkpoint, out, "--limit", "3")) == 0
    return _lines(out)


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mmpt", "generate"],
    "mpiexec": [str(Path(sys.executable).parent / "mpiexec"), "-n", "2", sys.executable, "-m", "mmpt", "generate"],
}


@pytest.mark.heavy
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_ranks_equal_one_process(launcher: str, checkpoint: Path, one_process: list[str], tmp_path: Path) -> None:
    out = tmp_path / "samples.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID")}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a shared CPU
    done = subprocess.run(
        [*LAUNCHERS[launcher], *_cli(checkpoint, out, "--limit", "3")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("mmpt generate:") == 1  # one rank 0 reported: the ranks saw their places
    assert _lines(out) == one_process
    assert not list(tmp_path.glob("samples.jsonl.rank*"))
