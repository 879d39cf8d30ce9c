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

from mmpt.cli import command_parser
from mmpt.data.separation import SeparationMap
from mmpt.jsonl import read_json, write_json
from mmpt.modality import LAYOUTS, OBJECTIVES
from mmpt.model.checkpoint_folder import CheckpointMeta, save_model

MAP_FILE = "replicated_tokens_map.pkl"
DUP_PREFIX = "[_DUP_]"
BOS_TOKEN = "<|beginoftext|>"  # opens a signature-first instance in the official code


class CheckpointImportError(ValueError):
    """A source checkpoint that cannot be imported; the message names the file and what is wrong."""


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
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, out = Path(src), Path(out)
    if not (src / "config.json").exists():
        raise CheckpointImportError(f"{src}: no config.json (a Hugging Face checkpoint folder, or a hub name with network)")
    if objective not in OBJECTIVES:
        raise CheckpointImportError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    config = AutoConfig.from_pretrained(src)
    layout = layout or ("signature-first" if config.model_type == "gpt_neo" else "docstring-first")
    if layout not in LAYOUTS:
        raise CheckpointImportError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    tokenizer = AutoTokenizer.from_pretrained(src)
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
    if pairs and len(pairs) == base:
        separation = "full"
    else:
        separation = "partial" if pairs else "none"
    smap = SeparationMap(separation, base, [new_id[o] for o in originals], [tokens[o] for o in originals])

    out.mkdir(parents=True, exist_ok=True)
    _renumber_tokenizer(src, out, dup_ids, new_id)
    renumbered = AutoTokenizer.from_pretrained(out)
    if len(renumbered) != base or renumbered.convert_ids_to_tokens(list(range(base))) != [tokens[i] for i in kept]:
        raise CheckpointImportError(f"{src}: the tokenizer could not be renumbered faithfully")
    if layout == "signature-first" and BOS_TOKEN in renumbered.get_vocab() and renumbered.bos_token != BOS_TOKEN:
        renumbered.bos_token = BOS_TOKEN  # what opens a signature-first instance (mmpt.data.instances)
        renumbered.save_pretrained(out)

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
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


def _resolve(source: str) -> Path:
    """A local folder as is; otherwise a hub repository downloaded (needs network)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source))
    except Exception as e:  # offline, gated, no such repository
        raise CheckpointImportError(f"{source}: not a local folder, and the hub download failed ({e})") from None


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
            _resolve(args.source), args.out, layout=args.layout, objective=args.objective, code_format=args.code_format
        )
    except (CheckpointImportError, FileNotFoundError, OSError) as e:
        print(f"mmpt import-checkpoint: {e}", file=sys.stderr)
        return 2
    meta = CheckpointMeta.load(out)
    print(json.dumps({"out": str(out), "layout": meta.layout, "separation": meta.separation, "code_format": meta.code_format}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
