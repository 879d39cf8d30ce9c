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

from authors_layout import official_tokenizer, save_official_pangu
from mmpt.data.codeformat import flatten
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.completion import end_of_function
from mmpt.eval.generate import GenerateConfig, SamplingConfig, run
from mmpt.eval.score import ScoreConfig
from mmpt.eval.score import run as run_score
from mmpt.eval.score_stats import read_scores
from mmpt.import_checkpoint import CheckpointImportError, import_checkpoint, main, read_replicated_map
from mmpt.model.folder import CheckpointMeta

ASSETS = Path(__file__).resolve().parent / "assets"
ENTRIES = ["return", "if", "(", "+", "zzqq"]  # "zzqq" is no token: added, then copied
FUNCTIONS = [
    ("Add two numbers.", "def add(a, b):\n    if a:\n        return a + b\n    return b\n"),
    ("Negate x.", "def neg(x):\n    return -x\n"),
]


def _official_tokenizer(directory: Path):
    return official_tokenizer(directory, ENTRIES)


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

    from mmpt.model.pangu import PanguConfig, PanguForCausalLM

    directory.mkdir()
    tok, pairs = _official_tokenizer(directory)
    torch.manual_seed(0)
    # Memorising is the goal: no dropout, and a step size that tied heads (PanGu's, GPT-Neo's) take
    # calmly. With the configs' default dropout and lr 1e-2, whether they learned both functions in
    # 200 steps depended on the seed and flipped with any change of rounding.
    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if kind == "pangu":
        config = PanguConfig(vocab_size=len(tok), n_embd=48, n_layer=2, n_head=2, n_positions=256,
                             bos_token_id=None, eos_token_id=None, **no_dropout)  # fmt: skip
        model = PanguForCausalLM._from_config(config, attn_implementation="eager")
        layout = "docstring-first"
    elif kind == "gpt_neo":
        config = GPTNeoConfig(vocab_size=len(tok), hidden_size=48, num_layers=2, num_heads=2, max_position_embeddings=256,
                              attention_types=[[["global", "local"], 1]], window_size=128, bos_token_id=None, eos_token_id=None,
                              resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0)  # fmt: skip
        layout = "signature-first"
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=48, n_layer=2, n_head=2, n_positions=256, tie_word_embeddings=False,
                            bos_token_id=None, eos_token_id=None, **no_dropout)  # fmt: skip
        layout = "docstring-first"
    if kind != "pangu":
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    data = [torch.tensor([_official_ids(tok, pairs, layout, d, c, flatten(c))]) for d, c in FUNCTIONS]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(200):
        ids = data[step % len(data)]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():  # every code token is the argmax after its prefix: greedy writes both functions
        for (d, c), ids in zip(FUNCTIONS, data):
            start = len(os.path.commonprefix([ids[0].tolist(), _official_ids(tok, pairs, layout, d, c, None)]))
            wrong = (model(input_ids=ids).logits[0, start - 1 : -1].argmax(-1) != ids[0, start:]).sum()
            assert wrong == 0, f"the tiny {kind} source did not memorise {c.split('(')[0]!r}: {int(wrong)} code tokens wrong"
    if kind == "pangu":
        save_official_pangu(model, directory, pairs, len(tok))
    else:
        model.save_pretrained(directory)
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


@pytest.mark.parametrize("kind", ["gpt_neo", "gpt2", "pangu"])
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
    from transformers import AutoModelForCausalLM, GPT2Config

    from mmpt.model.folder import load_model

    src = tmp_path / "src"
    tok, _ = official_tokenizer(src, separation="none")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2))
    model.save_pretrained(src)
    assert main([str(src), "--out", str(tmp_path / "o"), "--code-format", "plain"]) == 0
    meta = CheckpointMeta.load(tmp_path / "o")
    assert (meta.layout, meta.separation, meta.code_format) == ("docstring-first", "none", "plain")
    imported, tokenizer, smap = load_model(tmp_path / "o")
    assert smap.vocab_size == len(tokenizer) == len(tok)
    assert torch.equal(imported.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_pangu_imports_with_every_weight_and_equal_logits(tmp_path: Path):
    from mmpt.model.folder import load_model
    from mmpt.model.pangu import PanguForCausalLM

    src = tmp_path / "src"
    src.mkdir()
    tok, pairs = _official_tokenizer(src)
    torch.manual_seed(1)
    from mmpt.model.pangu import PanguConfig

    config = PanguConfig(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=None, eos_token_id=None
    )
    source = PanguForCausalLM._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # wide weights: every part of the network shows in the logits
        for p in source.parameters():
            p.add_(torch.randn(p.shape) * 0.2)
    save_official_pangu(source, src, pairs, len(tok))
    out = import_checkpoint(src, tmp_path / "o")
    model, tokenizer, smap = load_model(out, attn_implementation="eager")
    assert isinstance(model, PanguForCausalLM) and model.config.model_type == "mmpt_pangu"
    # every source weight landed: the imported rows are the source's, permuted (copies after originals)
    kept = [i for i in range(len(tok)) if i not in set(pairs.values())]
    old_of = kept + [pairs[o] for o in sorted(pairs)]  # new id -> old id
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    for key, value in model.state_dict().items():
        if key in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(value[: len(old_of)], state["transformer.wte.weight"][old_of])
        else:
            assert torch.equal(value, state[key]), key
    ids_old = torch.tensor([[old_of[i] for i in (3, 10, len(kept) + 1, 5, len(kept), 7)]])
    ids_new = torch.tensor([[3, 10, len(kept) + 1, 5, len(kept), 7]])
    with torch.no_grad():
        want = source(input_ids=ids_old).logits[0][:, old_of]
        got = model(input_ids=ids_new).logits[0][:, : len(old_of)]
    assert (got - want).abs().max().item() == 0.0


def _tiny_pangu_source(tmp_path: Path) -> tuple[Path, dict]:

    from mmpt.model.pangu import PanguConfig, PanguForCausalLM

    src = tmp_path / "src"
    tok, _ = official_tokenizer(src, separation="none")
    model = PanguForCausalLM(PanguConfig(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=32))
    save_official_pangu(model, src, {}, len(tok))
    return src, torch.load(src / "pytorch_model.bin", weights_only=True)


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda s: s.update({"top_query_layer.extra.weight": torch.zeros(3)}), "no place for: ['top_query_layer.extra.weight']"),
        (
            lambda s: s.pop("top_query_layer.attn.q_attn.bias"),
            "missing from the checkpoint: ['top_query_layer.attn.q_attn.bias']",
        ),
        (lambda s: s.update({"lm_head.weight": torch.zeros_like(s["transformer.wte.weight"])}), "lm_head.weight differs"),
        (
            lambda s: s.update({"top_query_embedding.weight": torch.zeros(31, 16)}),
            "top_query_embedding.weight (31, 16) vs (32, 16)",
        ),
    ],
    ids=["extra", "missing", "untied-head", "shape"],
)
def test_a_pangu_key_without_a_place_is_refused_by_name(tmp_path: Path, capsys, change, named):
    src, state = _tiny_pangu_source(tmp_path)
    change(state)
    torch.save(state, src / "pytorch_model.bin")
    assert main([str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1


def test_a_gpt_neo_extra_key_is_refused_and_a_saved_tied_head_accepted(tmp_path: Path, capsys):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoConfig

    src = tmp_path / "src"
    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    tok.save_pretrained(src)
    config = GPTNeoConfig(
        vocab_size=len(tok), hidden_size=16, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]]
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    state = load_file(src / "model.safetensors")
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()  # older transformers saved the tie twice
    state["transformer.h.0.attn.attention.masked_bias"] = torch.tensor(-1e9)  # an official buffer: no weight
    save_file(state, src / "model.safetensors")
    assert main([str(src), "--out", str(tmp_path / "ok")]) == 0
    state["transformer.h.0.attn.attention.k_proj.bias"] = torch.zeros(16)  # GPT-Neo has no k bias: would be dropped
    save_file(state, src / "model.safetensors")
    assert main([str(src), "--out", str(tmp_path / "o")]) == 2
    assert "no place for: ['transformer.h.0.attn.attention.k_proj.bias']" in capsys.readouterr().err


# The authors' PanguAlphaTokenizer (transformers 4.19) built on a tiny SentencePiece BPE, with the
# official lm_trainer.py's special tokens and a partial separation list added, saved as released
# (tests/assets/pangu_tokenizer: tokenizer_config.json, special_tokens_map.json, added_tokens.json,
# vocab.model, replicated_tokens_map.pkl), reloaded with from_pretrained; these are its ids.
PANGU_PROBES = {
    "def f(x):\n    return x": [22, 16, 247, 266, 41, 319, 231],
    "  leading and  double  spaces ": [233, 20, 240, 245, 166, 183, 5, 241, 243, 255, 20, 7, 251, 34, 220],
    "<comments> Add two numbers. <python> def add ( a , b ) : <NEW_LINE> <INDENT> return a + b <NEW_LINE> <DEDENT>": [
        311,
        233,
        294,
        245,
        245,
        6,
        258,
        241,
        117,
        90,
        255,
        59,
        237,
        249,
        304,
        22,
        11,
        245,
        245,
        112,
        11,
        233,
        254,
        21,
        233,
        248,
        233,
        253,
        312,
        313,
        319,
        11,
        93,
        21,
        312,
        314,
    ],  # fmt: skip
    "x<NEW_LINE>y": [231, 312, 96],
    "return zzqq if(": [319, 321, 317, 112],
    "Ünïcödé naïve café": [233, 0, 239, 0, 246, 0, 245, 0, 117, 240, 0, 153, 33, 240, 244, 0],
    "tabs\tand\nnewlines\n\n": [6, 240, 146, 0, 57, 245, 0, 239, 234, 258, 242, 3, 220, 0],
    "<eot>": [301],
    "<s>a</s>": [1, 11, 2],
}


def test_the_authors_pangu_tokenizer_converts_to_the_same_ids(tmp_path: Path):
    from transformers import AutoTokenizer

    from mmpt.import_checkpoint import convert_pangu_tokenizer, is_pangu_tokenizer

    src = ASSETS / "pangu_tokenizer"
    assert is_pangu_tokenizer(src)
    convert_pangu_tokenizer(src, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tok) == 327 and tok.pad_token == "<pad>" and "<NEW_LINE>" in tok.all_special_tokens
    for text, ids in PANGU_PROBES.items():
        assert tok.encode(text, add_special_tokens=False) == ids, text


def test_a_pangu_checkpoint_imports_with_its_sentencepiece_tokenizer(tmp_path: Path):
    from mmpt.model.folder import load_model
    from mmpt.model.pangu import PanguConfig, PanguForCausalLM

    src = tmp_path / "src"
    src.mkdir()
    for f in (ASSETS / "pangu_tokenizer").iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    pairs = read_replicated_map(src / "replicated_tokens_map.pkl")
    torch.manual_seed(0)
    config = PanguConfig(vocab_size=327, n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=None, eos_token_id=None)
    save_official_pangu(PanguForCausalLM(config), src, pairs, 327)
    out = import_checkpoint(src, tmp_path / "o")
    _, tokenizer, smap = load_model(out)
    assert len(tokenizer) == 327 - len(pairs) == smap.base_vocab_size and len(smap.separated) == len(pairs)
    assert not any(t.startswith("[_DUP_]") for t in tokenizer.get_vocab())
    # text without the added copies encodes as the authors' tokenizer did (ids below the first copy keep their number)
    kept = [i for i in range(327) if i not in set(pairs.values())]
    for text, ids in PANGU_PROBES.items():
        assert tokenizer.encode(text, add_special_tokens=False) == [kept.index(i) for i in ids], text


def test_the_official_full_separation_imports_as_full(tmp_path: Path):
    """Their full separation copies every token but the special ones: that is `full`, not `partial`."""
    from transformers import AutoModelForCausalLM, GPT2Config

    src = tmp_path / "src"
    tok, _ = official_tokenizer(src, separation="full")
    specials = set(tok.all_special_tokens)
    AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2)).save_pretrained(src)
    meta = CheckpointMeta.load(import_checkpoint(src, tmp_path / "o"))
    assert meta.separation == "full"
    smap = json.loads((tmp_path / "o" / "separation.json").read_text())
    assert len(smap["separated"]) == smap["base_vocab_size"] - len(specials)


def test_weights_that_would_run_code_are_refused(tmp_path: Path, capsys):
    src, state = _tiny_pangu_source(tmp_path)

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({**state, "evil": Evil()}, src / "pytorch_model.bin")
    assert main([str(src), "--out", str(tmp_path / "o")]) == 2
    assert "pytorch_model.bin: unreadable weights" in capsys.readouterr().err and not (tmp_path / "pwned").exists()
