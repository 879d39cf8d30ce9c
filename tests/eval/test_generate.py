"""mmpt.eval.generate: the cached batched loop against a naive one, sampling, records, resume, ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from mmpt.data.separation import build_separation_map
from mmpt.doctor import tiny_model
from mmpt.eval.completion import CodeText, end_of_function
from mmpt.eval.engines import SamplingConfig, pick_engine
from mmpt.eval.engines.ours import Decoder, choose_next, load_checkpoint
from mmpt.eval.generate import GenerateConfig, main, run
from mmpt.eval.samples import read_records, shard
from mmpt.eval.problems import Problem
from mmpt.export import CheckpointMeta
from mmpt.model.split_embeddings import save_model

REPO = Path(__file__).resolve().parents[2]

# --- end of function --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, cut",
    [
        ("    return a\n", None),
        ("    x = 1\n\n    return x\n", None),
        ("    return a\ndef g():\n", 13),  # the next def starts at column 0
        ("    return a\n\n\nprint(1)", 15),  # blank lines kept, the call is cut
        ("    return a\n# comment\n", 13),  # a column-0 comment is top-level too
        ("return a\n", 0),  # not indented: the body never started
        ("    s = 'a'\n  \t\n    t = 2", None),  # whitespace-only lines do not end it
    ],
)
def test_end_of_function(text: str, cut: int | None) -> None:
    assert end_of_function(text) == cut


# --- the decoding loop against a naive reference ----------------------------------------------

PREFIX_ID = 7  # stands for `<python>` in the id-level tests


def lively(model, seed: int = 0, scale: float = 0.4):
    """`model` with weights drawn wide: at the default init a tiny model ignores its context."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * scale)
    return model


def naive_greedy(model, prompt: list[int], prefix_lm: bool, steps: int) -> list[int]:
    """Greedy without cache, one prompt alone, the full forward each step with a hand-built mask."""
    seq = list(prompt)
    p = prompt.index(PREFIX_ID) + 1 if prefix_lm else 0
    for _ in range(steps):
        n = len(seq)
        allowed = [[k <= q or (q < p and k < p) for k in range(n)] for q in range(n)]
        mask = torch.tensor(allowed)[None, None]  # (1, 1, n, n)
        if model.config._attn_implementation == "eager":
            mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor([seq]), position_ids=torch.arange(n)[None], attention_mask=mask, use_cache=False
            ).logits[0, -1]
        seq.append(int(logits.argmax()))
    return seq[len(prompt) :]


@pytest.mark.parametrize(
    "arch, impl, prefix_lm, seed, scale",
    [
        ("gpt2", "sdpa", False, 0, 0.4),
        ("gpt2", "eager", True, 0, 0.4),
        ("llama", "sdpa", True, 0, 0.4),
        # GPT-Neo does not scale its attention scores; a draw where the prefix changes greedy tokens
        ("gpt_neo", "eager", True, 2, 1.0),
    ],
)
def test_cached_batch_equals_naive_loop(arch: str, impl: str, prefix_lm: bool, seed: int, scale: float) -> None:
    model = lively(tiny_model(arch, impl), seed, scale)
    g = torch.Generator().manual_seed(0)
    prompts = []
    for n_nl, n_code in ((2, 1), (9, 0), (5, 3)):  # different lengths: the batch is left-padded
        nl = torch.randint(10, 96, (n_nl,), generator=g).tolist()
        code = torch.randint(10, 96, (n_code,), generator=g).tolist()
        prompts.append([1, *nl, PREFIX_ID, *code])
    prompts.append(prompts[1])  # a repeated prompt (n samples of one problem) is prefilled once
    steps = 8
    decoder = Decoder(
        model,
        SamplingConfig(greedy=True, max_new_tokens=steps),
        stop_id=-1,
        pad_id=0,
        prefix_id=PREFIX_ID if prefix_lm else None,
    )
    got = decoder(prompts)
    want = [naive_greedy(model, p, prefix_lm, steps) for p in prompts]
    assert got == want
    if prefix_lm:
        # the test can see the prefix: causal decoding of the same prompts differs somewhere
        assert want != [naive_greedy(model, p, False, steps) for p in prompts]


def test_decoder_stops_and_restricts() -> None:
    model = lively(tiny_model("gpt2", "sdpa"), 1)
    prompts = [[1, 20, PREFIX_ID, 30], [1, 21, 22, 23, PREFIX_ID, 31, 32]]
    sampling = SamplingConfig(greedy=False, max_new_tokens=8)

    def decode(stop_id: int, code_mask: torch.Tensor | None = None, ended=None) -> list[list[int]]:
        gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return Decoder(model, sampling, stop_id=stop_id, pad_id=0, code_mask=code_mask, ended=ended)(prompts, gens)

    free = decode(-1)
    assert [len(row) for row in free] == [8, 8]
    # stopping at a later token of row 0 ends each row at its first stop, which is dropped
    k = next(k for k in range(1, 8) if free[0][k] not in free[0][:k])
    stopped = decode(free[0][k])
    assert stopped[0] == free[0][:k]
    assert stopped[1] == (free[1][: free[1].index(free[0][k])] if free[0][k] in free[1] else free[1])
    # a code mask forbidding what was drawn forces other tokens, all inside the mask
    code_mask = torch.ones(96, dtype=torch.bool)
    code_mask[[t for row in free for t in row]] = False
    code_mask[90:] = False
    restricted = decode(-1, code_mask)
    assert all(code_mask[t] for row in restricted for t in row) and [len(row) for row in restricted] == [8, 8]
    # `ended` (the end of the function) ends a row after the token that ended it, keeping the token
    assert decode(-1, ended=lambda prompt, gen: len(gen) == 3 + len(prompt) % 2) == [free[0][:3], free[1][:4]]


def test_code_text_maps_copies_back_and_finds_the_end() -> None:
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "assets" / "tokenizer")
    smap, _ = build_separation_map(tokenizer, "partial")
    text = CodeText(tokenizer, smap)

    def code_ids(s: str) -> list[int]:
        return smap.to_code(tokenizer(s, add_special_tokens=False)["input_ids"])

    prompt, body = code_ids("def f(a):\n"), "    return a + 1\n\ndef g():\n    pass\n"
    gen = code_ids(body)
    assert any(t >= smap.base_vocab_size for t in gen)  # partial separation: some ids are code copies
    assert text.text(prompt, gen) == body
    assert text.completion(prompt, gen) == "    return a + 1\n\n"
    # the cheap check says "ended" first exactly where the decoded text first has a column-0 line
    first = next(k for k in range(1, len(gen) + 1) if text.ended(prompt, gen[:k]))
    assert first == next(k for k in range(1, len(gen) + 1) if end_of_function(text.text(prompt, gen[:k])) is not None)
    assert text.text(prompt, gen[:first]).endswith("\nd") or text.text(prompt, gen[:first]).endswith("\ndef")


# --- sampling ---------------------------------------------------------------------------------


def nucleus_reference(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """The nucleus distribution, written out: smallest prefix of the sorted probs with mass >= top_p."""
    z = logits / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep, mass = [], 0.0
    for i in order:
        keep.append(i)
        mass += p[i]
        if mass >= top_p:
            break
    q = np.zeros_like(p)
    q[keep] = p[keep]
    return q / q.sum()


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.8), (1.5, 0.5)])
def test_choose_next_samples_the_nucleus(temperature: float, top_p: float) -> None:
    logits = torch.tensor([2.0, 1.5, 1.0, 0.2, -1.0, float("-inf")])
    draws = 20000
    gens = [torch.Generator().manual_seed(i) for i in range(draws)]
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens])
    picks = choose_next(logits.expand(draws, -1), SamplingConfig(False, temperature, top_p), u)
    freq = np.bincount(picks.numpy(), minlength=6) / draws
    want = nucleus_reference(logits.numpy().astype(np.float64), temperature, top_p)
    assert np.abs(freq - want).max() < 0.015
    assert freq[want == 0].sum() == 0  # outside the nucleus (and -inf) never drawn


def test_sampling_does_not_depend_on_batching() -> None:
    model = lively(tiny_model("llama", "sdpa"), 2)
    prompts = [[1, 11, 12, PREFIX_ID, 13], [1, 14, PREFIX_ID, 15, 16, 17, 18, 19], [1, PREFIX_ID, 20, 21]]
    sampling = SamplingConfig(greedy=False, temperature=1.0, top_p=0.95, max_new_tokens=10)
    decoder = Decoder(model, sampling, stop_id=-1, pad_id=0, prefix_id=PREFIX_ID)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    prompts.append(prompts[1])  # shares its prompt's prefill, draws from its own generator
    together = decoder(prompts, gens([5, 6, 7, 9]))
    alone = [decoder([p], gens([s]))[0] for p, s in zip(prompts, [5, 6, 7, 9])]
    assert together == alone
    assert together[1] != together[3]
    assert decoder(prompts, gens([5, 6, 8, 9]))[2] != together[2]  # the seed does matter


# --- ranks and shards -------------------------------------------------------------------------


def test_shard() -> None:  # (ranks come from mmpt.distributed.detect: tests/test_distributed.py)
    items = list(range(23))
    parts = [shard(items, r, 4) for r in range(4)]
    assert [i for part in parts for i in part] == items and max(map(len, parts)) - min(map(len, parts)) <= 1


# --- whole runs on a tiny checkpoint ----------------------------------------------------------

PROBLEMS = [
    Problem("T/0", "T/0", "Add two numbers.", "def add(a, b):", "", "add", "", ""),
    Problem(
        "T/1", "T/1", "Return the largest item.", "def largest(xs):", "    best = xs[0]\n", "largest", "", "", 1, 3
    ),
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
    return GenerateConfig(
        model=checkpoint, out=out, **{"n": 3, "sampling": sampling, "batch_size": 4, "progress": False, **kw}
    )


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
    gen = Decoder(model, sampling, stop_id=-1, pad_id=0, code_mask=code_mask)(
        [prompt], [torch.Generator().manual_seed(1)]
    )[0]
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
    with pytest.raises(ValueError, match="needs vLLM: pip install 'mmpt\\[vllm\\]'"):
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
    from mmpt.eval.problems import load_problems

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
