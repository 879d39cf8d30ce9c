"""`mmpt import-checkpoint SRC --out DIR`: the authors' released checkpoints as mmpt checkpoints.

    mmpt import-checkpoint huawei-noah/pycodegpt-CodeCLM-partial-100m --out runs/authors/pycodegpt-partial
    mmpt generate --model runs/authors/pycodegpt-partial --benchmark humaneval --out samples.jsonl

The paper's further-pre-trained checkpoints (PyCodeGPT as GPT-Neo, PanGu-Coder tagged gpt2) keep
their separation the official code's way: the code copy of a token is a vocabulary entry of its own,
named `[_DUP_]<token>`, and `replicated_tokens_map.pkl` maps each original id to its copy's id.
Copies and tokens that the official code added (list entries that were not one token) are
interleaved at the end of the vocabulary. mmpt wants the originals first and the copy of
`separated[i]` at `base_vocab_size + i`, so the import renumbers: the tokenizer loses the `[_DUP_]`
entries (later added tokens move down), and the embedding rows (input, and output when untied) are
permuted to match. Nothing is re-initialised: every row of the result is a row of the source.

PanGu-Coder's checkpoints are PanGu-α (GPT-2 plus a top-query layer and a query embedding,
`top_query_*` weights) tagged `gpt2`; the import re-tags them as our `mmpt_pangu`
(mmpt/model/pangu.py), whose module names are theirs. Every weight of the source is loaded by
name into the target architecture, and an import never drops or invents one: a source key the
target has no place for, a target weight the source lacks, or a shape that differs is an error
naming the keys. The only keys not loaded are the official code's non-weight buffers (causal
masks `attn.bias`/`attn.masked_bias`, and PanGu's `code_tokens_mask`/`doc_tokens_mask`, which are
checked against the map), and an output head saved beside its tied input embedding, which must
equal it.

The checkpoints were trained on the flattened code format (`<NEW_LINE>`/`<INDENT>`/`<DEDENT>`), so
`mmpt.json` says `code_format: flat`: generation prompts them in that format and decodes their
output back to indented Python. The pickle is read by an unpickler that accepts nothing but a dict
of ints: a file from the internet must not run code.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import tempfile
from pathlib import Path

from tokenizers import AddedToken

from mmpt.cli import command_parser
from mmpt.data.separation import SeparationMap
from mmpt.hub import HubMiss, from_hub
from mmpt.jsonl import read_json, write_json
from mmpt.modality import LAYOUTS, OBJECTIVES, OFFICIAL_BOS
from mmpt.model.folder import CheckpointMeta, save_model
from mmpt.model.pangu import PanguConfig

MAP_FILE = "replicated_tokens_map.pkl"
DUP_PREFIX = "[_DUP_]"
BOS_TOKEN = OFFICIAL_BOS  # opens a signature-first instance in the official code


class CheckpointImportError(ValueError):
    """A source checkpoint that cannot be imported; the message names the file and what is wrong."""


# Buffers the official model classes save that are no weights: GPT-2/GPT-Neo/PanGu causal masks
# (rebuilt by every implementation) and PanGu's output-vocabulary masks (rebuilt from the map).
_MASK_BUFFERS = ("attn.bias", "attn.masked_bias", "attention.bias", "attention.masked_bias")
_VOCAB_MASKS = ("code_tokens_mask", "doc_tokens_mask")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class _IntDictUnpickler(pickle.Unpickler):
    """Refuses every global: a dict of ints needs none, and any other reference could run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the map must be a plain dict of ints")


def read_replicated_map(path: str | Path) -> dict[int, int]:
    """The original id → copy id map of a `replicated_tokens_map.pkl`, read without running code."""
    path = Path(path)
    try:
        value = _IntDictUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointImportError(f"{path}: not a pickled dict of ints ({e})") from None
    if not isinstance(value, dict) or not all(type(k) is int and type(v) is int and k >= 0 and v >= 0 for k, v in value.items()):
        raise CheckpointImportError(f"{path}: expected a dict from token id to token id (ints), got {type(value).__name__}")
    if len(set(value.values())) != len(value) or set(value) & set(value.values()):
        raise CheckpointImportError(f"{path}: copy ids must be distinct and never themselves originals")
    return value


def read_state_dict(src: Path) -> dict:
    """Every tensor of the checkpoint folder `src` by name (safetensors or a weights-only torch pickle, sharded or not)."""
    import torch
    from safetensors.torch import load_file

    for name in _WEIGHT_FILES:
        index = src / f"{name}.index.json"
        files = sorted(set(read_json(index, dict)["weight_map"].values())) if index.exists() else [name]
        if not all((src / f).exists() for f in files):
            continue
        state: dict = {}
        for f in files:
            try:
                if f.endswith(".safetensors"):
                    state.update(load_file(src / f))
                else:  # weights_only: a pickle from the internet must not run code
                    state.update(torch.load(src / f, map_location="cpu", weights_only=True))
            except Exception as e:  # safetensors' SafetensorError, pickle's UnpicklingError, a truncated file
                raise CheckpointImportError(f"{src / f}: unreadable weights ({type(e).__name__}: {str(e)[:200]})") from None
        return state
    raise CheckpointImportError(f"{src}: no weights ({' or '.join(_WEIGHT_FILES)}, optionally sharded)")


def is_pangu(state: dict) -> bool:
    """Whether a state dict is PanGu-α's: it has the top-query layer and the query embedding."""
    return any(key.startswith(("top_query_layer.", "top_query_embedding.")) for key in state)


def target_config(src: Path, state: dict):
    """The transformers config of the model the weights belong to (PanGu re-tagged as ours)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(src)
    if not is_pangu(state):
        return config
    if config.model_type != "gpt2":
        raise CheckpointImportError(f"{src}: top_query_* weights in a {config.model_type!r} checkpoint (PanGu is tagged gpt2)")
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures", "transformers_version")}
    fields["tie_word_embeddings"] = True  # the official head is the token embedding itself (no lm_head weight)
    return PanguConfig(**fields)


def _check_vocab_masks(src: Path, state: dict, pairs: dict[int, int]) -> None:
    """PanGu's saved code/doc vocabulary masks must say what the map says (else the map is not theirs)."""
    import torch

    for name in _VOCAB_MASKS:
        if name not in state:
            continue
        mask = state[name].bool()
        want = torch.ones_like(mask)  # the official rule: docstring excludes the copies, code the originals
        drop = list(pairs.values()) if name == "doc_tokens_mask" else list(pairs)
        want[[i for i in drop if i < len(want)]] = False
        if not pairs:  # without separation the official leaves both masks zero (unused)
            continue
        wrong = (mask != want).nonzero().flatten().tolist()
        if wrong:
            raise CheckpointImportError(f"{src}: {name} disagrees with {MAP_FILE} at ids {wrong[:10]}")


def _weight_name(model, module) -> str:
    """The state-dict key of `module.weight` (e.g. `lm_head.weight`, also when tied to another)."""
    return next(name for name, m in model.named_modules() if m is module) + ".weight"


def load_weights(model, state: dict, src: Path) -> None:
    """Load `state` into `model` by name; any key without a place, weight without a source, or shape
    mismatch is a CheckpointImportError naming the keys (see the module doc for what is skipped)."""
    import torch

    target = model.state_dict()
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    emb_key = _weight_name(model, emb)
    tied = {_weight_name(model, head)} if head is not None and head.weight is emb.weight else set()  # {"lm_head.weight"}
    skipped = {k for k in state if k not in target and (k.endswith(_MASK_BUFFERS) or k in _VOCAB_MASKS)}
    for key in tied & set(state):  # a head saved beside the embedding it is tied to must be a copy of it
        if emb_key not in state or not torch.equal(state[key], state[emb_key]):
            raise CheckpointImportError(f"{src}: {key} differs from {emb_key}, but the model ties them")
        skipped.add(key)
    unexpected = sorted(set(state) - set(target) - skipped)
    missing = sorted(set(target) - tied - set(state))
    if unexpected or missing:
        parts = [f"weights the {type(model).__name__} has no place for: {unexpected}"] if unexpected else []
        parts += [f"weights missing from the checkpoint: {missing}"] if missing else []
        raise CheckpointImportError(f"{src}: {'; '.join(parts)} (an import never drops or invents a weight)")
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if shapes:
        raise CheckpointImportError(f"{src}: shapes differ from the config's: {shapes}")
    result = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - tied:  # cannot happen after the checks above
        raise CheckpointImportError(f"{src}: loading left {result}")


PANGU_TOKENIZER = "PanguAlphaTokenizer"


def is_pangu_tokenizer(src: Path) -> bool:
    """Whether `src` holds the authors' PanGu tokenizer (a SentencePiece `vocab.model` of their own class)."""
    config = src / "tokenizer_config.json"
    return config.exists() and read_json(config, dict).get("tokenizer_class") == PANGU_TOKENIZER


def convert_pangu_tokenizer(src: Path, out: Path) -> None:
    """Write to `out` a fast tokenizer that encodes as the authors' PanguAlphaTokenizer loaded from `src`.

    Their class (transformers 4.19, a slow tokenizer) splits the text at every added token
    (added_tokens.json) and special token, strips the whitespace on both sides of each, and runs
    SentencePiece on each piece in between. Here: transformers' own SentencePiece conversion of
    `vocab.model` (`SpmConverter.build_tokenizer_from_spm_proto`, a dummy prefix per piece) plus the
    same tokens as added tokens that strip both sides, at their ids. Checked against their class on
    a tiny vocabulary: tests/test_import_checkpoint.py.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString((src / "vocab.model").read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise CheckpointImportError(f"{src / 'vocab.model'}: not a SentencePiece model ({e})") from None
    pieces = [(p.piece, p.score) for p in proto.pieces]
    vocab = {piece: i for i, (piece, _) in enumerate(pieces)} if proto.trainer_spec.model_type == 2 else pieces
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    if tok is None:
        raise CheckpointImportError(f"{src / 'vocab.model'}: a SentencePiece model type that cannot be converted")
    named = read_json(src / "special_tokens_map.json", dict) if (src / "special_tokens_map.json").exists() else {}
    additional = [str(t) for t in named.pop("additional_special_tokens", [])]
    specials = set(additional) | {str(v) for v in named.values()}
    added = read_json(src / "added_tokens.json", dict) if (src / "added_tokens.json").exists() else {}
    for token, i in sorted(added.items(), key=lambda item: item[1]):
        if i != tok.get_vocab_size():
            raise CheckpointImportError(f"{src / 'added_tokens.json'}: {token!r} has id {i}, expected {tok.get_vocab_size()}")
        tok.add_tokens([AddedToken(token, lstrip=True, rstrip=True, normalized=False, special=token in specials)])
    # special tokens of the SentencePiece vocabulary (<s>, </s>, <unk>) split the text too, at their own ids
    for token in sorted(specials - set(added)):
        if tok.token_to_id(token) is None:
            raise CheckpointImportError(f"{src}: special token {token!r} is in neither vocab.model nor added_tokens.json")
        tok.add_special_tokens([AddedToken(token, lstrip=True, rstrip=True, normalized=False, special=True)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **named, additional_special_tokens=additional)
    fast.save_pretrained(out)


def _renumber_tokenizer(src: Path, out: Path, dup_ids: set[int], new_id: dict[int, int]) -> None:
    """Write SRC's tokenizer to OUT without the copy entries, later entries renumbered by `new_id`."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(src).save_pretrained(tmp)  # a tokenizer.json even from older formats
        spec = read_json(Path(tmp) / "tokenizer.json", dict)
        spec["added_tokens"] = [
            {**entry, "id": new_id[entry["id"]]} for entry in spec["added_tokens"] if entry["id"] not in dup_ids
        ]
        vocab = spec.get("model", {}).get("vocab")
        if isinstance(vocab, dict):  # BPE/WordPiece: token -> id
            spec["model"]["vocab"] = {t: new_id[i] for t, i in vocab.items() if i not in dup_ids}
        elif any(i in dup_ids for i in range(len(vocab or []))):
            raise CheckpointImportError(f"{src}: copies inside a {spec['model'].get('type')} model vocabulary are not supported")
        write_json(Path(tmp) / "tokenizer.json", spec, indent=None)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(tmp) / name).exists():
                (out / name).write_bytes((Path(tmp) / name).read_bytes())


def import_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    layout: str | None = None,
    objective: str = "code-clm",
    code_format: str = "flat",
) -> Path:
    """Convert the checkpoint folder `src` into an mmpt checkpoint in `out` (see the module doc).

    `layout` None: signature-first for GPT-Neo (PyCodeGPT), docstring-first otherwise (PanGu-Coder).
    """
    src, out = Path(src), Path(out)
    with tempfile.TemporaryDirectory(prefix="mmpt-import-") as tmp:
        tok_dir = src
        if is_pangu_tokenizer(src):  # the authors' SentencePiece class: converted to a fast tokenizer first
            tok_dir = Path(tmp)
            convert_pangu_tokenizer(src, tok_dir)
        return _import(src, tok_dir, out, layout, objective, code_format)


def _import(src: Path, tok_dir: Path, out: Path, layout: str | None, objective: str, code_format: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (src / "config.json").exists():
        raise CheckpointImportError(f"{src}: no config.json (a Hugging Face checkpoint folder, or a hub name with network)")
    if objective not in OBJECTIVES:
        raise CheckpointImportError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    state = read_state_dict(src)
    config = target_config(src, state)
    layout = layout or ("signature-first" if config.model_type == "gpt_neo" else "docstring-first")
    if layout not in LAYOUTS:
        raise CheckpointImportError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    size = len(tokenizer)
    pairs = read_replicated_map(src / MAP_FILE) if (src / MAP_FILE).exists() else {}
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    for original, copy in sorted(pairs.items()):
        if not (original < size and copy < size) or tokens[copy] != DUP_PREFIX + tokens[original]:
            found = tokens[copy] if copy < size else "outside the vocabulary"
            raise CheckpointImportError(
                f"{src / MAP_FILE}: id {original} maps to {copy}, which should be the token "
                f"{DUP_PREFIX + (tokens[original] if original < size else '?')!r} but is {found!r}"
            )
    stray = [t for i, t in enumerate(tokens) if t.startswith(DUP_PREFIX) and i not in set(pairs.values())]
    if stray:
        raise CheckpointImportError(f"{src}: {DUP_PREFIX} tokens that {MAP_FILE} does not map to: {stray[:5]}")

    # originals keep their order; the copies follow in the order of their originals' new ids
    dup_ids = set(pairs.values())
    kept = [i for i in range(size) if i not in dup_ids]
    new_id = {old: new for new, old in enumerate(kept)}
    originals = sorted(pairs)  # ascending old id == ascending new id (renumbering keeps order)
    order = kept + [pairs[o] for o in originals]  # new row r comes from old row order[r]
    base = len(kept)
    shared = set(kept) - set(originals)  # tokens without a copy: the official full separation leaves only specials
    if pairs and shared <= set(tokenizer.all_special_ids):
        separation = "full"
    else:
        separation = "partial" if pairs else "none"
    smap = SeparationMap(separation, base, [new_id[o] for o in originals], [tokens[o] for o in originals])

    out.mkdir(parents=True, exist_ok=True)
    _renumber_tokenizer(tok_dir, out, dup_ids, new_id)
    renumbered = AutoTokenizer.from_pretrained(out)
    if len(renumbered) != base or renumbered.convert_ids_to_tokens(list(range(base))) != [tokens[i] for i in kept]:
        raise CheckpointImportError(f"{src}: the tokenizer could not be renumbered faithfully")
    if layout == "signature-first" and BOS_TOKEN in renumbered.get_vocab() and renumbered.bos_token != BOS_TOKEN:
        renumbered.bos_token = BOS_TOKEN  # what opens a signature-first instance (mmpt.data.instances)
        renumbered.save_pretrained(out)

    _check_vocab_masks(src, state, pairs)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    load_weights(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, src)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < size:
        raise CheckpointImportError(f"{src}: the model has {rows} embedding rows for a vocabulary of {size} tokens")
    index = torch.as_tensor(order, dtype=torch.long)
    tied = model.get_output_embeddings() is not None and (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    new_in = model.get_input_embeddings().weight.detach()[index].clone()  # (V', d)
    new_out = None if tied else model.get_output_embeddings().weight.detach()[index].clone()
    model.resize_token_embeddings(len(order), mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(new_in)
        if new_out is not None:
            model.get_output_embeddings().weight.copy_(new_out)
    meta = CheckpointMeta(layout=layout, objective=objective, separation=separation, code_format=code_format,
                          prompt_style="paper")  # fmt: skip
    return save_model(model, smap, out, meta=meta)


def resolve_source(source: str) -> Path:
    """A local folder as is; otherwise a hub repository downloaded (needs network). Offline, a
    one-line error that says how to pass a folder instead."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    with from_hub(source, "source"):  # offline, gated, no such repository: one line
        return Path(snapshot_download(source))


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("mmpt import-checkpoint", __doc__.splitlines()[0])
    parser.add_argument("source", help="checkpoint folder, or a hub name such as huawei-noah/pycodegpt-CodeCLM-100m")
    parser.add_argument("--out", required=True, help="folder for the mmpt checkpoint")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        metavar="LAYOUT",
        help=f"{' | '.join(LAYOUTS)}; default: signature-first for GPT-Neo, else docstring-first",
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="code-clm",
        metavar="OBJECTIVE",
        help=f"{' | '.join(OBJECTIVES)}; prefix-code-clm for the prefix-LM variants",
    )
    parser.add_argument("--code-format", choices=("flat", "plain"), default="flat", help="what the checkpoint was trained on")
    args = parser.parse_args(argv)
    try:
        out = import_checkpoint(
            resolve_source(args.source), args.out, layout=args.layout, objective=args.objective, code_format=args.code_format
        )
    except (CheckpointImportError, HubMiss, FileNotFoundError, OSError) as e:
        print(f"mmpt import-checkpoint: {e}", file=sys.stderr)
        return 2
    meta = CheckpointMeta.load(out)
    print(json.dumps({"out": str(out), "layout": meta.layout, "separation": meta.separation, "code_format": meta.code_format}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
