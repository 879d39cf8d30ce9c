"""Tests of mmpt/import_checkpoint.py on synthetic checkpoints laid out as the authors released theirs.

Each source checkpoint is built here the official way (facts from the paper's code): the sentinels
and the flattening markers are special tokens; every entry of the separation list, bare and with the
word-start mark, gets a `[_DUP_]` copy appended to the vocabulary (an entry that is no token is
added first, so copies and new tokens interleave); `replicated_tokens_map.pkl` maps original id →
copy id; training text is flattened code with code ids remapped to the copies. A tiny GPT-Neo
(signature-first, PyCodeGPT's layout) and a tiny GPT-2 (docstring-first, PanGu-Coder's) are trained
on two functions for a few steps, so that they write markers. Greedy `mmpt generate` on the imported
checkpoint must equal the source model driven by hand the official way.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmpt.data.codeformat import flatten
from mmpt.eval.generate import GenerateConfig, SamplingConfig, end_of_function, run
from mmpt.eval.problems import Problem
from mmpt.eval.score import ScoreConfig, read_scores
from mmpt.eval.score import run as run_score
from mmpt.import_checkpoint import CheckpointImportError, import_checkpoint, main, read_replicated_map
from mmpt.model.checkpoint_folder import CheckpointMeta

ASSETS = Path(__file__).resolve().parent / "assets"
SPECIALS = [
    "<eod>",
    "<eot>",
    "<pad>",
    "<python>",
    "<comments>",
    "<NEW_LINE>",
    "<INDENT>",
    "<DEDENT>",
    "<mask>",
    "<|beginoftext|>",
]
ENTRIES = ["return", "if", "(", "+", "zzqq"]  # "zzqq" is no token: added, then copied
FUNCTIONS = [
    ("Add two numbers.", "def add(a, b):\n    if a:\n        return a + b\n    return b\n"),
    ("Negate x.", "def neg(x):\n    return -x\n"),
]


def _official_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    vocab, specials = tok.get_vocab(), set(tok.all_special_tokens)
    count, new_tokens, pairs = len(vocab), [], {}
    for entry in sorted(set(ENTRIES + ["Ġ" + e for e in ENTRIES])):
        if entry in specials:
            continue
        if entry in vocab:
            new_tokens.append("[_DUP_]" + entry)
            pairs[vocab[entry]] = count
            count += 1
        else:
            new_tokens += [entry, "[_DUP_]" + entry]
            pairs[count] = count + 1
            count += 2
    tok.add_tokens(new_tokens)
    assert len(tok) == count
    tok.save_pretrained(directory)
    (directory / "replicated_tokens_map.pkl").write_bytes(pickle.dumps(pairs))
    return tok, pairs


def _quoted(doc: str) -> str:
    return '\n    """ ' + doc + ' """'


def _official_ids(tok, pairs, layout: str, doc: str, code: str, flat_code: str | None) -> list[int]:
    """An official instance (flat_code given) or prompt (None): code ids remapped to their copies."""
    ids = tok.convert_tokens_to_ids
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    remap = lambda xs: [pairs.get(x, x) for x in xs]  # noqa: E731
    if layout == "signature-first":
        signature = code.split("\n")[0]
        body = [] if flat_code is None else remap(enc(flat_code[flat_code.find(": <NEW_LINE> <INDENT>") + 1 :])) + [ids("<eot>")]
        return (
            [ids("<|beginoftext|>")] + remap(enc(signature)) + [ids("<comments>")] + enc(_quoted(doc)) + [ids("<python>")] + body
        )
    text = code.split("\n")[0] if flat_code is None else flat_code
    tail = [] if flat_code is None else [ids("<eot>")]
    return [ids("<comments>")] + enc(doc) + [ids("<python>")] + remap(enc(text)) + tail


pytestmark = pytest.mark.usefixtures("one_thread")


def _build_source(directory: Path, kind: str) -> tuple:
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoConfig

    directory.mkdir()
    tok, pairs = _official_tokenizer(directory)
    torch.manual_seed(0)
    if kind == "gpt_neo":
        config = GPTNeoConfig(vocab_size=len(tok), hidden_size=48, num_layers=2, num_heads=2, max_position_embeddings=256,
                              attention_types=[[["global", "local"], 1]], window_size=128, bos_token_id=None, eos_token_id=None)  # fmt: skip
        layout = "signature-first"
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=48, n_layer=2, n_head=2, n_positions=256, tie_word_embeddings=False,
                            bos_token_id=None, eos_token_id=None)  # fmt: skip
        layout = "docstring-first"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    data = [torch.tensor([_official_ids(tok, pairs, layout, d, c, flatten(c))]) for d, c in FUNCTIONS]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(200):
        ids = data[step % len(data)]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(directory)
    return model, tok, pairs, layout


def _by_hand(model, tok, pairs, layout: str, doc: str, signature: str, max_new: int) -> tuple[str, str]:
    """(raw text, completion): greedy over the code vocabulary, the official decoding of the markers."""
    ids = _official_ids(tok, pairs, layout, doc, signature, None)
    banned = torch.tensor(sorted(pairs))  # separated originals: code is written with their copies
    eot, out = tok.convert_tokens_to_ids("<eot>"), []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            logits[banned] = -float("inf")
            nxt = int(logits.argmax())
            if nxt == eot:
                break
            out.append(nxt)
    raw = tok.convert_tokens_to_string(tok.convert_ids_to_tokens(out)).replace("[_DUP_]", "")
    lines, level = [], 0
    for segment in raw.split("<NEW_LINE>"):
        level = max(0, level + segment.count("<INDENT>") - segment.count("<DEDENT>"))
        text = segment.replace("<INDENT>", "").replace("<DEDENT>", "").strip()
        lines.append("    " * level + text if text else "")
    text = "\n".join(lines)
    cut = end_of_function(text)
    return raw, text if cut is None else text[:cut]


@pytest.mark.parametrize("kind", ["gpt_neo", "gpt2"])
def test_imported_checkpoint_generates_as_the_source_driven_by_hand(tmp_path: Path, kind: str):
    model, tok, pairs, layout = _build_source(tmp_path / "src", kind)
    out = import_checkpoint(tmp_path / "src", tmp_path / "mmpt")
    meta = CheckpointMeta.load(out)
    assert (meta.layout, meta.code_format, meta.separation) == (layout, "flat", "partial")
    smap = json.loads((out / "separation.json").read_text())
    assert smap["base_vocab_size"] == len(tok) - len(pairs) and len(smap["separated"]) == len(pairs)

    problems = [
        Problem(
            task_id=f"T/{i}",
            base_task_id=f"T/{i}",
            docstring=doc,
            signature=code.split("\n")[0],
            given="",
            entry_point=code[4 : code.index("(")],
            prompt=code.split("\n")[0] + "\n",
            test="",
        )  # fmt: skip
        for i, (doc, code) in enumerate(FUNCTIONS)
    ]
    assert meta.prompt_style == "paper"  # the default of imported checkpoints; here mmpt's own flat prompts
    config = GenerateConfig(
        model=out, out=tmp_path / "s.jsonl", sampling=SamplingConfig(max_new_tokens=40), progress=False, prompt_style="mmpt"
    )
    run(config, problems)
    got = {r["task_id"]: r["completion"] for r in map(json.loads, (tmp_path / "s.jsonl").read_text().splitlines())}
    for p, (doc, _code) in zip(problems, FUNCTIONS):
        raw, expected = _by_hand(model, tok, pairs, layout, doc, p.signature, 40)
        assert "<NEW_LINE>" in raw and "<INDENT>" in raw  # the decoding of markers is exercised
        assert got[p.task_id] == expected.removeprefix("\n")
    # the tiny models learned their two functions: the decoded text is the original Python
    assert got["T/0"] == FUNCTIONS[0][1].split("\n", 1)[1]

    # `mmpt score` on the imported checkpoint: the reference NLL of the source model driven by hand
    problems = [replace(p, reference=code.split("\n", 1)[1]) for p, (_, code) in zip(problems, FUNCTIONS)]
    run_score(ScoreConfig(out, tmp_path / "scores.jsonl", progress=False, prompt_style="mmpt"), problems)
    scores = read_scores(tmp_path / "scores.jsonl")
    banned = torch.tensor(sorted(pairs))
    for p, (doc, code) in zip(problems, FUNCTIONS):
        ids = _official_ids(tok, pairs, layout, doc, code, flatten(code))
        start = len(os.path.commonprefix([ids, _official_ids(tok, pairs, layout, doc, code, None)]))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        logits[:, banned] = -float("inf")
        logp = torch.log_softmax(logits, -1)
        expected = -sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids))) / (len(ids) - start)
        assert scores[p.task_id] == pytest.approx(expected, abs=1e-5) and expected < 0.5


def test_the_map_is_read_without_running_code(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "replicated_tokens_map.pkl"
    path.write_bytes(pickle.dumps({1: 2, 3: Evil()}))
    with pytest.raises(CheckpointImportError, match="not a pickled dict of ints"):
        read_replicated_map(path)
    assert not (tmp_path / "pwned").exists()
    for bad, match in (([1, 2], "expected a dict"), ({1: "2"}, "expected a dict"), ({1: 2, 2: 3}, "never themselves")):
        path.write_bytes(pickle.dumps(bad))
        with pytest.raises(CheckpointImportError, match=match):
            read_replicated_map(path)
    path.write_bytes(pickle.dumps({5: 7, 9: 8}))
    assert read_replicated_map(path) == {5: 7, 9: 8}


def test_a_map_that_does_not_name_its_copies_is_refused(tmp_path: Path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    tok, pairs = _official_tokenizer(src)
    first = min(pairs)
    (src / "replicated_tokens_map.pkl").write_bytes(pickle.dumps({**pairs, first: pairs[first] + 1}))
    from transformers import AutoModelForCausalLM, GPT2Config

    AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2)).save_pretrained(src)
    assert main([str(src), "--out", str(tmp_path / "o")]) == 2
    assert "replicated_tokens_map.pkl" in capsys.readouterr().err


def test_a_checkpoint_without_separation_imports_unchanged(tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

    from mmpt.model.checkpoint_folder import load_model

    src = tmp_path / "src"
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.save_pretrained(src)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2))
    model.save_pretrained(src)
    assert main([str(src), "--out", str(tmp_path / "o"), "--code-format", "plain"]) == 0
    meta = CheckpointMeta.load(tmp_path / "o")
    assert (meta.layout, meta.separation, meta.code_format) == ("docstring-first", "none", "plain")
    imported, tokenizer, smap = load_model(tmp_path / "o")
    assert smap.vocab_size == len(tokenizer) == len(tok)
    assert torch.equal(imported.get_input_embeddings().weight, model.get_input_embeddings().weight)
