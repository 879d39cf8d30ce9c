"""An mmpt model folder (OUTPUT_DIR/final, an import): a Hugging Face model folder plus `separation.json` and `mmpt.json`.

One owner for what such a folder holds and how it is read and written. Training's `hf/` copy in
every training checkpoint (`mmpt.train_checkpoints`), `mmpt export`, `mmpt import-checkpoint`,
generation, scoring and the tests all go through `save_model` / `load_model` / `load_folder` /
`read_folder` here:

    config.json, model.safetensors     the Hugging Face model (weights absent in training's hf/ copy);
                                       `use_cache: true` (training turns the cache off, inference wants it)
    generation_config.json             eos `<eot>`, pad `<pad>`, no bos (mmpt's prompts start with a
                                       sentinel of their own), the KV cache on (`write_inference_configs`)
    tokenizer files                    the tokenizer, sentinels included
    separation.json                    the id map (`mmpt.data.separation.SeparationMap`)
    mmpt.json                          how it was trained, as far as generation must know (`CheckpointMeta`)
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mmpt.data.separation import SeparationMap
from mmpt.hub import REPO_ID, download_hint
from mmpt.jsonl import read_json, write_json
from mmpt.modality import EOT, LAYOUTS, OBJECTIVES, PAD, PROMPT_STYLES, SEPARATIONS
from mmpt.model.attention import SUPPORTED
from mmpt.model.split_embeddings import embedding_rows

META_FILE = "mmpt.json"
CODE_FORMATS = ("plain", "flat")


@dataclass(frozen=True)
class CheckpointMeta:
    """How a checkpoint was trained, as far as generation must know: its `mmpt.json`."""

    layout: str = "docstring-first"  # how prompts are laid out (mmpt.data.instances)
    objective: str = "text-code-clm"  # prefix-code-clm makes the NL prefix bidirectional
    attn_implementation: str | None = None  # None: sdpa where verified, else eager
    separation: str = "none"  # informational: the id map itself is separation.json
    code_format: str = "plain"  # plain | flat: trained on the paper's <NEW_LINE> format (imported checkpoints)
    prompt_style: str = "mmpt"  # the default --prompt-style of generate/score/prompts/execute (imported: paper)

    @property
    def prefix_lm(self) -> bool:
        return self.objective == "prefix-code-clm"

    def save(self, directory: str | Path) -> Path:
        return write_json(Path(directory) / META_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, directory: str | Path) -> CheckpointMeta:
        """The `mmpt.json` of `directory`; absent → docstring-first and causal. Extra keys are ignored."""
        path = Path(directory) / META_FILE
        if not path.exists():
            return cls()
        raw = read_json(path, dict)
        known = {f.name for f in dataclasses.fields(cls)}
        meta = cls(**{k: v for k, v in raw.items() if k in known})
        checks = (("layout", LAYOUTS), ("objective", OBJECTIVES), ("separation", SEPARATIONS), ("code_format", CODE_FORMATS),
                  ("prompt_style", PROMPT_STYLES))  # fmt: skip
        for name, allowed in checks:
            if getattr(meta, name) not in allowed:
                raise ValueError(f"{path}: field {name!r} must be one of {allowed}, got {getattr(meta, name)!r}")
        if meta.attn_implementation is not None and not isinstance(meta.attn_implementation, str):
            raise ValueError(f"{path}: field 'attn_implementation' must be a string")
        return meta


def resolve_prompt_style(requested: str | None, model_dir: str | Path | None) -> str:
    """`requested` (--prompt-style), else the checkpoint's default (`mmpt.json`: paper for imported checkpoints)."""
    if requested is not None:
        if requested not in PROMPT_STYLES:
            raise ValueError(f"--prompt-style must be one of {PROMPT_STYLES}, got {requested!r}")
        return requested
    return CheckpointMeta.load(model_dir).prompt_style if model_dir is not None else "mmpt"


def save_model(
    model, smap: SeparationMap, directory: str | Path, tokenizer=None, meta: CheckpointMeta | None = None, *,
    hf_config=None,
) -> Path:  # fmt: skip
    """Write a model folder: the model (or, with `model=None`, only its `hf_config`), the
    tokenizer when given, the separation map, and `mmpt.json` when `meta` is given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model is not None:
        model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    if model is not None or hf_config is not None:
        write_inference_configs(directory, model.config if model is not None else hf_config, tokenizer)
    smap.save(directory)
    if meta is not None:
        meta.save(directory)
    return directory


def write_inference_configs(directory: str | Path, hf_config, tokenizer=None) -> None:
    """Write `config.json` and `generation_config.json` as stock `generate` should use them.

    A copy of `hf_config` with `use_cache: true` (training sets it false, and a checkpoint that keeps
    it makes plain `model.generate` recompute every prefix at each step), and a generation config
    whose eos is `<eot>` (an instance ends there) and pad `<pad>`, with no bos: mmpt's prompts open
    with a sentinel of their own and the backbone's bos id may name an mmpt sentinel (`<python>`).
    Without a tokenizer the ids come from `hf_config`. `hf_config` itself is left unchanged.
    """
    from transformers import GenerationConfig

    config = copy.deepcopy(hf_config)
    config.use_cache = True
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    eos = vocab.get(EOT, getattr(config, "eos_token_id", None))
    pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else vocab.get(PAD)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = None, eos, pad
    config.save_pretrained(directory)
    GenerationConfig(bos_token_id=None, eos_token_id=eos, pad_token_id=pad, use_cache=True).save_pretrained(directory)


def read_folder(directory: str | Path, tokenizer=None) -> tuple[object, SeparationMap, CheckpointMeta]:
    """(tokenizer, smap, meta) of a model folder, without its weights; a clear error when it is none.

    Without a saved map the separation is `none`; without `mmpt.json` the defaults of `CheckpointMeta`.
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(not_a_folder(str(directory)))
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"{directory}: no config.json; expected a checkpoint folder written by `mmpt export` or `mmpt import-checkpoint`"
        )
    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(directory)
    smap = SeparationMap.load_or_none(directory, base_vocab_size=len(tokenizer))
    if smap.base_vocab_size != len(tokenizer):
        raise ValueError(
            f"{directory / 'separation.json'}: base_vocab_size {smap.base_vocab_size} does not match the "
            f"tokenizer's {len(tokenizer)} tokens"
        )
    return tokenizer, smap, CheckpointMeta.load(directory)


def not_a_folder(name: str) -> str:
    """The one-line error for a model folder that does not exist, perhaps a hub name (read
    locally only: generation and scoring never download)."""
    if not REPO_ID.fullmatch(name):
        return f"{name}: no such checkpoint folder"
    return (
        f"{name}: no such checkpoint folder; generation and scoring read a local one. For a hub model, "
        f"{download_hint(name)} or import the authors' checkpoints (`mmpt import-checkpoint {name} --out DIR`), and give DIR"
    )


def load_model(directory: str | Path, tokenizer=None, **from_pretrained):
    """(model, tokenizer, smap) of a model folder (or any plain HF checkpoint).

    `from_pretrained` goes to `AutoModelForCausalLM.from_pretrained` (dtype, attn_implementation, ...).
    """
    model, tokenizer, smap, _ = load_folder(directory, tokenizer, **from_pretrained)
    return model, tokenizer, smap


def load_folder(directory: str | Path, tokenizer=None, **from_pretrained):
    """(model, tokenizer, smap, meta) of a model folder. Unless `attn_implementation` is given,
    the one in `mmpt.json`, else sdpa where it is verified for packed rows (`SUPPORTED`), else eager."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer, smap, meta = read_folder(directory, tokenizer)
    if "attn_implementation" not in from_pretrained:
        impl = meta.attn_implementation
        if impl is None:
            model_type = AutoConfig.from_pretrained(directory).model_type
            impl = "sdpa" if "sdpa" in SUPPORTED.get(model_type, ()) else "eager"
        from_pretrained["attn_implementation"] = impl
    model = AutoModelForCausalLM.from_pretrained(directory, **from_pretrained)
    rows = embedding_rows(model.get_input_embeddings().weight)
    if rows < smap.vocab_size:
        raise ValueError(f"{directory}: the model has {rows} embedding rows, its separation map needs {smap.vocab_size}")
    return model, tokenizer, smap, meta
