"""TrainConfig: every setting of a training run, read from one YAML file plus `--field value` overrides.

Also the DeepSpeed JSON the run hands `deepspeed.initialize` (its "auto" values filled from the
config, `deepspeed_config`) and what `mmpt train --dry-run` prints of both (`preflight`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import json
import os
import signal
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmpt import shipped
from mmpt.jsonl import JsonlError, read_json
from mmpt.modality import OBJECTIVES
from mmpt.optim import LR_SCHEDULES, optimizer_settings, prefer_torch_adamw

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and field."""


@dataclass
class TrainConfig:
    """One training run. Defaults are the paper's hyper-parameters where it has one (docs/method.md).

    The DeepSpeed JSON (`deepspeed`) owns ZeRO stage and offload; this config owns model, data,
    objective and optimisation, and fills the JSON's "auto" values from them. The comment on a
    field's line is its documentation: `mmpt train --help` prints it (`field_docs`).
    """

    # model and data
    model: str | dict = "Daoguang/PyCodeGPT"  # hub name or local path; a mapping = architecture config, random init
    tokenizer: str = ""  # "" = the prepared data's own DATA_DIR/tokenizer; else it must be the one the data used
    data_dir: str = ""  # output of `mmpt prepare` (rows/, tokenizer/, meta.json)
    output_dir: str = "runs/mmpt"  # checkpoints/, tensorboard/, metrics.jsonl, final/
    objective: str = "code-clm"  # text-code-clm | code-clm | corrupt-code-clm | prefix-code-clm
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2 (checked against the backbone)

    # faithful to the paper's official code (issue 9)
    signature_loss: bool = False  # signature-first: train code-clm/corrupt-code-clm on the signature (official: no)

    # length of training: max_steps wins when > 0, else `epochs` passes over the rows
    max_steps: int = 0  # optimizer steps; 0 = run `epochs` passes instead
    epochs: float = 1.0  # passes over the packed rows when max_steps is 0 (fractions allowed)

    # optimisation (AdamW, linear warm-up then cosine decay from learning_rate to min_learning_rate)
    learning_rate: float = 1e-5  # peak learning rate, reached at the end of warm-up
    min_learning_rate: float = 1e-6  # where the cosine decay ends, at the last step
    warmup_ratio: float = 0.01  # share of the steps spent in linear warm-up from 0
    weight_decay: float = 0.01  # on matrices only: not on biases and norms (1-d tensors), unless weight_decay_all
    weight_decay_all: bool = False  # decay every parameter, biases and norms too (official scripts: yes)
    lr_schedule: str = "mmpt"  # mmpt: cosine rescaled to end at min_learning_rate | official: cosine toward 0, floored at it
    adam_beta1: float = 0.9  # AdamW first-moment decay
    adam_beta2: float = 0.999  # AdamW second-moment decay
    adam_epsilon: float = 1e-8  # AdamW denominator term
    max_grad_norm: float = 1.0  # clip the global gradient norm to this (DeepSpeed gradient_clipping)
    per_device_batch_size: int = 32  # packed rows per micro-batch on one rank
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 on a GPU that has it, else fp16; fp32 on CPU)
    gradient_checkpointing: bool = True  # recompute activations in the backward pass: less memory, ~30% more compute

    # checkpoints, logging, reproducibility
    save_steps: int = 1000  # a DeepSpeed checkpoint every N optimizer steps (0 = only at the end)
    keep_checkpoints: int = 2  # newest complete checkpoints kept; older ones are deleted
    logging_steps: int = 10  # a metrics.jsonl/TensorBoard record every N optimizer steps
    seed: int = 42  # model init, row order and corruption noise
    deepspeed: str = "ds_configs/zero3.json"  # DeepSpeed JSON: a path, else a shipped one (zero2, zero3, zero3_offload)
    resume: str = "auto"  # auto (newest complete checkpoint in output_dir) | never | PATH of a checkpoint
    export: bool = True  # write OUTPUT_DIR/final (Hugging Face format) at the end

    # held-out evaluation on DATA_DIR/validation (written by `mmpt prepare --validation-fraction F`)
    eval_steps: int = 1000  # loss, loss_code, loss_nl on the validation rows every N steps (0 = never)

    # robustness
    save_signal: str = "SIGTERM"  # this signal too (SIGTERM and SIGINT always) makes every rank finish its step, save and exit 0
    hang_timeout_s: float = 120.0  # a rank that makes no progress this long (dead peer) exits non-zero
    process_group_timeout_s: float = 1800.0  # bound on one collective (a slow shared-filesystem save, a late rendezvous)
    peak_tflops: float = 0.0  # MFU denominator; 0 = the card's bf16 peak on GPU, a measured matmul peak on CPU


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value, where: str):
    """`value` (from YAML or the command line) as the type of field `name`; ConfigError otherwise."""
    hint = typing.get_type_hints(TrainConfig)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    from_cli = isinstance(value, str) and where.startswith("command line")
    if dict in allowed and isinstance(value, dict):
        return value
    if bool in allowed:
        if isinstance(value, bool):
            return value
        if from_cli and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
    elif int in allowed:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_cli or isinstance(value, float) and value.is_integer():
            try:
                return int(value)
            except ValueError:
                pass
    elif float in allowed:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif str in allowed and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: field {name!r} must be {hint}, got {value!r}")


def _check_name(name: str, where: str) -> None:
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown field {name!r}{hint}")


def field_docs() -> dict[str, tuple[str, str]]:
    """{field: (section, meaning)}, read from TrainConfig's source: the comment on each field's line
    (or a docstring right after it), and the last comment line above it that stands alone."""
    try:
        source = textwrap.dedent(inspect.getsource(TrainConfig))
    except (OSError, TypeError):  # no source (a frozen build): names, types and defaults still show
        return {}
    comments = {
        tok.start[0]: (tok.string.lstrip("#").strip(), tok.line.strip().startswith("#"))
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    body = ast.parse(source).body[0].body
    docs, section, last_line = {}, "", 0
    for node, after in zip(body, [*body[1:], None]):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        alone = [text for line, (text, standalone) in comments.items() if standalone and last_line < line < node.lineno]
        section = alone[-1] if alone else section
        meaning = comments.get(node.end_lineno, ("", False))[0]
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            meaning = " ".join(after.value.value.split())
        docs[node.target.id] = (section, meaning)
        last_line = node.end_lineno
    return docs


def _type_name(hint) -> str:
    return " | ".join(getattr(t, "__name__", str(t)) for t in typing.get_args(hint)) or getattr(hint, "__name__", str(hint))


def help_text() -> str:
    """`mmpt train --help`: usage, then every config field on one line: --name, type, default, meaning."""
    hints, docs = typing.get_type_hints(TrainConfig), field_docs()
    lines = [
        "usage: mmpt train [--config FILE.yaml] [--FIELD VALUE | --FIELD=VALUE]...",
        "       (also `deepspeed mmpt/train.py ...`, `torchrun ... mmpt/train.py ...`, `python -m mmpt.train ...`)",
        "       mmpt train --config FILE.yaml [--FIELD VALUE]... --dry-run [--device cuda|cpu] [--world-size N]",
        "       (print the resolved config and the exact DeepSpeed JSON for that device and world size, then exit)",
        "",
        __doc__.split("\n")[0],
        "--config is a YAML file or a shipped config's name (" + ", ".join(shipped.names("configs")) + ");",
        "command-line values win over the file's. Fields (name, type, default, meaning):",
    ]
    section = None
    for f in dataclasses.fields(TrainConfig):
        where, meaning = docs.get(f.name, ("", ""))
        if where != section and where:
            lines += ["", f"{where}:"]
        section = where
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"  --{f.name:<28} {_type_name(hints[f.name]):<12} {json.dumps(default):<24} {meaning}".rstrip())
    return "\n".join(lines)


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--field value` / `--field=value` pairs from the command line, names checked.

    `-h`/`--help` prints `help_text()` and exits 0, as argparse does.
    """
    if "-h" in argv or "--help" in argv:
        print(help_text())
        raise SystemExit(0)
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"command line: expected --field value, got {arg!r}")
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if not eq:
            if i + 1 >= len(argv):
                raise ConfigError(f"command line: --{name} needs a value")
            value, i = argv[i + 1], i + 1
        _check_name(name, "command line")
        out[name] = value
        i += 1
    return out


def load_config(path: str | Path | None, overrides: dict[str, str] | None = None) -> TrainConfig:
    """TrainConfig from a YAML file or shipped config name (None = defaults) with command-line overrides
    applied, validated."""
    values: dict = {}
    if path is not None:
        try:
            path = shipped.find_file(path, "configs")
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {e}") from None
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value at the top level")
        for name, value in raw.items():
            _check_name(str(name), str(path))
            values[name] = _coerce(name, value, str(path))
    for name, value in (overrides or {}).items():
        _check_name(name, "command line")
        values[name] = _coerce(name, value, f"command line --{name}")
    config = TrainConfig(**values)
    validate(config)
    return config


def config_from_argv(argv: list[str]) -> TrainConfig:
    """The TrainConfig of a trainer command line: `[--config X] [--field value]...` (a launcher's
    `--local_rank=N` is ignored: the rank comes from the environment)."""
    argv = [a for a in argv if not a.startswith("--local_rank")]
    path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("command line: --config needs a value")
        path, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    return load_config(path, parse_overrides(argv))


def validate(config: TrainConfig) -> None:
    """Errors for values that are well-typed but unusable."""

    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"config field {name!r}: {why} (got {getattr(config, name)!r})")

    if config.objective not in OBJECTIVES:
        raise bad("objective", f"unknown objective, expected one of {OBJECTIVES}")
    if config.signature_loss and config.objective == "prefix-code-clm":
        raise bad("signature_loss", "prefix-code-clm keeps the signature in its bidirectional prefix; it cannot be a target")
    if config.precision not in PRECISIONS:
        raise bad("precision", f"expected one of {PRECISIONS}")
    if not config.data_dir:
        raise bad("data_dir", "required: a directory written by `mmpt prepare`")
    if config.max_steps < 0 or (config.max_steps == 0 and config.epochs <= 0):
        raise bad("max_steps", "set max_steps > 0 or epochs > 0")
    for name in ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(config, name) < 1:
            raise bad(name, "must be >= 1")
    if config.save_steps < 0 or config.keep_checkpoints < 1:
        raise bad("save_steps" if config.save_steps < 0 else "keep_checkpoints", "out of range")
    if not 0 <= config.warmup_ratio < 1:
        raise bad("warmup_ratio", "must lie in [0, 1)")
    if config.lr_schedule not in LR_SCHEDULES:
        raise bad("lr_schedule", f"expected one of {LR_SCHEDULES}")
    if config.min_learning_rate > config.learning_rate:
        raise bad("min_learning_rate", "must not exceed learning_rate")
    if not config.save_signal.startswith("SIG") or not hasattr(signal, config.save_signal):
        raise bad("save_signal", "expected a signal name such as SIGTERM or SIGUSR1")
    for name in ("hang_timeout_s", "process_group_timeout_s"):
        if getattr(config, name) <= 0:
            raise bad(name, "must be > 0")
    if config.eval_steps < 0:
        raise bad("eval_steps", "must be >= 0")


def dump(config: TrainConfig) -> str:
    """The config as YAML (saved beside checkpoints, so a run says how it was made)."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


# ---- the DeepSpeed JSON: it owns ZeRO/offload, this config fills its "auto" values ----------------


def resolve_precision(precision: str, device_type: str, bf16_supported: bool) -> str:
    """fp32 | bf16 | fp16 for `auto`: bf16 where the GPU has it, fp16 on older GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    if device_type == "cpu":
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def find_deepspeed_file(name: str) -> Path:
    """The DeepSpeed JSON `name`: a path, or the name of a shipped one (`ds_configs/zero3.json`)."""
    try:
        return shipped.find_file(name, "ds_configs")
    except FileNotFoundError as e:
        raise ConfigError(f"config field 'deepspeed': {e}") from None


def deepspeed_config(config: TrainConfig, world_size: int, precision: str, device_type: str) -> dict:
    """The DeepSpeed config dict of run `config`: the JSON with every "auto" filled from it.

    A value written out in the JSON must equal the one `config` implies (one owner per setting); the
    learning-rate schedule belongs to mmpt, so the JSON must not carry a `scheduler`.
    """
    path = find_deepspeed_file(config.deepspeed)
    try:
        ds = read_json(path, dict)
    except JsonlError as e:
        raise ConfigError(str(e)) from None
    if "scheduler" in ds:
        raise ConfigError(f"{path}: remove 'scheduler'; the learning-rate schedule is set by the mmpt config")
    owned = {
        "train_micro_batch_size_per_gpu": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "train_batch_size": config.per_device_batch_size * config.gradient_accumulation_steps * world_size,
        "gradient_clipping": config.max_grad_norm,
        "bf16.enabled": precision == "bf16",
        "fp16.enabled": precision == "fp16",
        **optimizer_settings(
            config.learning_rate, (config.adam_beta1, config.adam_beta2), config.adam_epsilon, config.weight_decay
        ),
    }
    for key, value in owned.items():
        *parents, leaf = key.split(".")
        node = ds
        for p in parents:
            node = node.setdefault(p, {})
        if node.get(leaf, "auto") == "auto":
            node[leaf] = value
        elif node[leaf] != value and not (isinstance(value, float) and node[leaf] == value):
            raise ConfigError(
                f"{path}: {key} = {node[leaf]!r} disagrees with the mmpt config ({value!r}); "
                f'write "auto" there and set it in the mmpt config'
            )
    # Under bf16/fp16, gradients are accumulated over micro-batches and reduced over ranks in fp32
    # (DeepSpeed's defaults are the training dtype: bf16 sums over many ranks and micro-batches lose
    # the small contributions). A JSON that sets either keeps its own value.
    ds.setdefault("communication_data_type", "fp32")
    ds.setdefault("data_types", {}).setdefault("grad_accum_dtype", "fp32")
    # DeepSpeed's throughput timer is on by default and, since mmpt hands it no dataloader, waits for
    # the device (`synchronize`) twice per micro-batch from the third step on: mmpt measures its own
    # rates from the one sync a step makes anyway. A JSON that sets it keeps its own value.
    ds.setdefault("timers", {}).setdefault("throughput", {}).setdefault("enabled", False)
    prefer_torch_adamw(ds, device_type)  # no DeepSpeed op to build on the nodes
    leftover = [k for k, v in _walk(ds) if v == "auto"]
    if leftover:
        raise ConfigError(f"{path}: mmpt cannot fill {leftover} ('auto' is only for the values the mmpt config owns)")
    return ds


def _walk(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


# ---- `mmpt train --dry-run`: the resolved config and the DeepSpeed JSON, without a launch --------


def take_preflight_options(argv: list[str]) -> tuple[list[str], str | None, int | None]:
    """(the rest of argv, `--device TYPE`, `--world-size N`): the dry run's own options, not config fields."""
    found: dict[str, str] = {}
    for name in ("--device", "--world-size"):
        if name in argv:
            i = argv.index(name)
            if i + 1 >= len(argv):
                raise SystemExit(f"mmpt train: {name} needs a value")
            found[name], argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    if found.get("--device", "cuda") not in ("cuda", "cpu"):
        raise SystemExit(f"mmpt train: --device must be cuda or cpu, got {found['--device']!r}")
    world = found.get("--world-size")
    if world is not None and not (world.isdigit() and int(world) >= 1):
        raise SystemExit(f"mmpt train: --world-size must be a positive integer, got {world!r}")
    return argv, found.get("--device"), None if world is None else int(world)


def default_device_type() -> str:
    """The device type DeepSpeed's accelerator would pick here: `DS_ACCELERATOR`, else cuda when one is visible."""
    import torch

    return os.environ.get("DS_ACCELERATOR") or ("cuda" if torch.cuda.is_available() else "cpu")


def preflight(config: TrainConfig, device_type: str, world: int) -> str:
    """`mmpt train --dry-run`: the resolved config and the exact DeepSpeed JSON `train` would pass to
    `deepspeed.initialize` on `device_type` with `world` ranks (built by the same `deepspeed_config`)."""
    import torch

    on_gpu_here = device_type == "cuda" and torch.cuda.is_available()
    # without a GPU here, `auto` resolves as on a bf16-capable one (A100, H100, H200); fp16 on older cards
    bf16 = torch.cuda.is_bf16_supported() if on_gpu_here else device_type == "cuda"
    precision = resolve_precision(config.precision, device_type, bf16)
    ds = deepspeed_config(config, world, precision, device_type)
    head = f"# device {device_type}, {world} rank(s), precision {precision} ({config.precision})"
    if device_type == "cuda" and not on_gpu_here and config.precision == "auto":
        head += "; resolved as on a bf16 GPU (no GPU here)"
    return "\n".join([head, "# training config", dump(config).rstrip(), "# DeepSpeed JSON", json.dumps(ds, indent=2)])
