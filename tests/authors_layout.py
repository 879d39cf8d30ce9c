"""Tiny checkpoints laid out as the authors released theirs, for the tests and the benches.

Facts from the paper's code (NLP/text2code_mrpt, lm_trainer.py): the sentinels and the flattening
markers are special tokens; separation gives every entry of a list, bare and with the word-start
mark `Ġ` (partial), or every token of the vocabulary but the special ones (full), a copy named
`[_DUP_]<token>` appended to the vocabulary, an entry that is no token being added first (so new
tokens and copies interleave); `replicated_tokens_map.pkl` maps original id → copy id. PanGu-Coder's
model is PanGu-α saved by the official class (config tagged `gpt2`, no head weight, buffers).
PyCodeGPT's is a GPT-Neo. The tokenizer is the tiny BPE of tests/assets for both.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

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
ENTRIES = ["return", "if", "for", "in", "(", ")", ":", "=", "+", "zzqq"]  # "zzqq" is no token: added, then copied
KINDS = ("gpt_neo", "pangu")  # PyCodeGPT's architecture, PanGu-Coder's
SEPARATIONS = ("none", "partial", "full")


def official_tokenizer(directory: Path, entries: list[str] | None = None, separation: str = "partial"):
    """(tokenizer, map): the tiny BPE with the official special tokens and `[_DUP_]` copies, saved
    in `directory` with its `replicated_tokens_map.pkl` (none without separation)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    vocab, specials = tok.get_vocab(), set(tok.all_special_tokens)
    if separation == "partial":
        entries = ENTRIES if entries is None else entries
        wanted = set(entries) | {"Ġ" + e for e in entries}
    else:
        wanted = set(vocab) if separation == "full" else set()
    count, new_tokens, pairs = len(vocab), [], {}
    for entry in sorted(wanted):
        if entry in specials:
            continue
        if entry in vocab:
            new_tokens.append("[_DUP_]" + entry)
            pairs[vocab[entry]] = count
            count += 1
        else:  # no token yet: the official code adds it, then its copy
            new_tokens += [entry, "[_DUP_]" + entry]
            pairs[count] = count + 1
            count += 2
    tok.add_tokens(new_tokens)
    assert len(tok) == count
    Path(directory).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(directory)
    if pairs:
        (Path(directory) / "replicated_tokens_map.pkl").write_bytes(pickle.dumps(pairs))
    return tok, pairs


def save_official_pangu(model, directory: Path, pairs: dict[int, int], vocab: int) -> None:
    """Save a PanGu-α the way the official PanguAlphaModel does: config tagged `gpt2`, no head weight
    (logits use the token embedding), and its buffers (causal masks, -1e4, the vocabulary masks)."""
    import torch

    config = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures", "transformers_version")}
    config.update(model_type="gpt2", architectures=["PanguAlphaModel"])
    (directory / "config.json").write_text(json.dumps(config))
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    n = model.config.n_positions
    for i in range(model.config.n_layer):
        state[f"transformer.h.{i}.attn.bias"] = torch.ones(n, n, dtype=torch.uint8).tril().view(1, 1, n, n)
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    state["top_query_layer.attn.bias"] = torch.ones(n, n, dtype=torch.uint8).tril().view(1, 1, n, n)
    state["top_query_layer.attn.masked_bias"] = torch.tensor(-1e4)
    code, doc = torch.ones(vocab), torch.ones(vocab)  # the official rule: code excludes originals, doc the copies
    if pairs:  # without separation the official leaves both masks zero (unused)
        code[list(pairs)] = 0
        doc[list(pairs.values())] = 0
    else:
        code, doc = torch.zeros(vocab), torch.zeros(vocab)
    state["code_tokens_mask"], state["doc_tokens_mask"] = code, doc
    torch.save(state, directory / "pytorch_model.bin")


def stand_in(directory: Path, kind: str, separation: str, width: int = 16, positions: int = 1024, seed: int = 0) -> Path:
    """A random tiny checkpoint of `kind` (gpt_neo | pangu) with `separation`, in the authors' layout."""
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoConfig

    from mmpt.model.pangu import PanguConfig, PanguForCausalLM

    directory = Path(directory)
    tok, pairs = official_tokenizer(directory, separation=separation)
    torch.manual_seed(seed)
    if kind == "pangu":
        config = PanguConfig(vocab_size=len(tok), n_embd=width, n_layer=1, n_head=2, n_positions=positions,
                             bos_token_id=None, eos_token_id=None)  # fmt: skip
        save_official_pangu(PanguForCausalLM._from_config(config, attn_implementation="eager").eval(), directory, pairs, len(tok))
    elif kind == "gpt_neo":
        config = GPTNeoConfig(vocab_size=len(tok), hidden_size=width, num_layers=1, num_heads=2, max_position_embeddings=positions,
                              attention_types=[[["global"], 1]], bos_token_id=None, eos_token_id=None)  # fmt: skip
        AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return directory
