"""Further pre-training with DeepSpeed: config, ranks, data, model, resume, then one loop.

    deepspeed --num_gpus 8 mmpt/train.py --config configs/pycodegpt-110m.yaml --data_dir runs/data
    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 mmpt/train.py --config configs/tiny-cpu.yaml
    torchrun --nproc_per_node 8 mmpt/train.py --config ...      srun python mmpt/train.py --config ...
    python -m mmpt.train --config ...   (one process)           mmpt train --config ...
    mmpt train --config X --dry-run --device cuda --world-size 16   (pre-flight: config + DeepSpeed JSON)

Each optimizer step takes the next `per_device_batch_size * gradient_accumulation_steps * world`
rows of the epoch's shuffled order; rank r takes every world-th of them, so the shards are disjoint
and every row is used once per epoch. The loss is normalised by the number of trained tokens of the
whole step over all ranks, so that the split into ranks and micro-batches does not change it.
Watch it with `tensorboard --logdir OUTPUT_DIR`.
"""

from __future__ import annotations

import sys

from mmpt import stopping

if __name__ == "__main__":  # a launched rank: a save request in the seconds of imports below must not kill it
    stopping.catch_early(sys.argv[1:])

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mmpt import console, distributed, run_dir, train_checkpoints
from mmpt.config import ConfigError, TrainConfig, config_from_argv, deepspeed_config, dump, resolve_precision
from mmpt.data.separation import SeparationMap
from mmpt.hub import from_hub
from mmpt.modality import CODE, NL
from mmpt.model import pangu  # noqa: F401  (registers PanGu-α with the Auto classes before any load)
from mmpt.stopping import StopFlag, StopRequested

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def lr_factor(step: int, total_steps: int, warmup_ratio: float, min_ratio: float, schedule: str = "mmpt") -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warm-up, then a cosine decay.

    `mmpt`: warm-up (step + 1) / warmup, then the cosine rescaled to end at `min_ratio` on the last
    step. `official` (the paper's scripts, source/optimization.py): warm-up step / warmup from 0,
    then the cosine toward 0, floored at `min_ratio` (it reaches the floor at about 80% of the run
    when min_ratio = 0.1). Both count warm-up steps as ceil(warmup_ratio · total_steps).
    """
    warmup = math.ceil(warmup_ratio * total_steps)
    if schedule == "official":
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(min_ratio, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order of one epoch, the same on every rank."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def step_rows(order: np.ndarray, k: int, rank: int, world: int, batch: int, accum: int) -> list[list[int]]:
    """Row indices of this rank's micro-batches in step `k` of the epoch (short or empty at its tail)."""
    chunk = order[k * batch * accum * world : (k + 1) * batch * accum * world]
    mine = chunk[rank::world]  # disjoint shards; their union is the step's global batch
    return [mine[m * batch : (m + 1) * batch].tolist() for m in range(accum)]


def trained_counts(labels: torch.Tensor, modality: torch.Tensor) -> tuple[int, int]:
    """(code, nl) counts of the targets `modality_loss` trains on in a batch (it predicts label t+1)."""
    target = labels[:, 1:] != -100
    return int((target & (modality[:, 1:] == CODE)).sum()), int((target & (modality[:, 1:] == NL)).sum())


def collate_rows(source, collate, indices: list[int], width: int) -> tuple[dict[str, torch.Tensor], int]:
    """(collated micro-batch of `width` rows, its non-pad tokens) of rows `indices` of `source`.

    Rows past `indices` (an empty or short micro-batch at the epoch's tail) are stand-ins (row 0)
    that train nothing: every rank must run every micro-step (ZeRO-3 gathers are collective), and
    under flex_attention every batch has the full shape (a new shape recompiles flex).
    """
    from mmpt.objectives import IGNORE, loss_index

    picked = indices + [0] * (width - len(indices))
    got = source[picked]  # column -> list over the picked rows
    keys = ("input_ids", "position_ids", "modality")
    batch = collate([{k: got[k][j] for k in keys} | {"row": i} for j, i in enumerate(picked)])
    if len(indices) < width:
        batch["labels"][len(indices) :] = IGNORE
        batch["loss_index"] = loss_index(batch["labels"])
    return batch, sum(len(ids) for ids in got["input_ids"][: len(indices)])


def build_model(
    config: TrainConfig,
    smap: SeparationMap,
    ds_config: dict,
    precision: str,
    trained_rows: int | None = None,
    max_seq_length: int | None = None,
):
    """The backbone with its code-copy rows; under ZeRO-3 it is built already partitioned.

    `HfDeepSpeedConfig` must stay alive while transformers builds and resizes the model: it is what
    makes `from_pretrained`/`from_config` construct every layer inside `deepspeed.zero.Init`, so no
    rank ever holds the whole model. It dies on return, so that the export at the end builds a
    plain model. `extend_model` builds the larger embeddings partitioned too (inside
    `deepspeed.zero.Init` with this config), and fills them and the code-copy rows in gathers,
    since writing `.data` of a ZeRO-3 parameter would change nothing. A model type or attention
    path not verified for packed rows, or rows (`max_seq_length`, the data's) longer than the
    model's sliding window, is a ConfigError before anything is built.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from mmpt.model.attention import check_supported, check_window
    from mmpt.model.split_embeddings import extend_model

    if isinstance(config.model, dict):
        arch = dict(config.model)
        model_type = arch.pop("model_type", None)
        if model_type is None:
            raise ConfigError("config field 'model': an architecture mapping needs 'model_type'")
        hf_config = AutoConfig.for_model(model_type, **arch, vocab_size=smap.base_vocab_size)
    else:
        with from_hub(config.model, "config field 'model'"):  # a hub miss: one line (a ConfigError), no traceback
            hf_config = AutoConfig.from_pretrained(config.model)
    try:
        check_supported(hf_config.model_type, config.attn_implementation)
        check_window(hf_config, max_seq_length)
    except ValueError as e:
        raise ConfigError(
            f"config field 'model' ({config.model if isinstance(config.model, str) else model_type}): {e}"
        ) from None
    zero3 = ds_config["zero_optimization"]["stage"] == 3
    keep_alive = HfDeepSpeedConfig(ds_config) if zero3 else None
    kwargs = {"attn_implementation": config.attn_implementation, "dtype": DTYPES[precision]}
    if isinstance(config.model, dict):
        model = AutoModelForCausalLM.from_config(hf_config, **kwargs)
    else:
        with from_hub(config.model, "config field 'model'"):  # a hub miss: one line (a ConfigError), no traceback
            model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    extend_model(model, smap, ds_config=ds_config if zero3 else None, trained_rows=trained_rows)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    del keep_alive
    return model


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases and norms (1-d; ZeRO-3 keeps shapes in ds_shape);
    with `decay_all` one group that decays every parameter (the official scripts)."""
    if decay_all:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def check_same_tokenizer(data_tokenizer, other, what: str, data_dir: str) -> None:
    """Error unless every token of `other` has the same id in the data's tokenizer (which may add sentinels)."""
    vocab = data_tokenizer.get_vocab()
    for token, i in sorted(other.get_vocab().items(), key=lambda kv: kv[1]):
        if vocab.get(token) != i:
            raise ConfigError(
                f"{data_dir}/meta.json: the data was prepared with tokenizer "
                f"{data_tokenizer.name_or_path!r}, which differs from {what} (token {token!r} is id {i} there, "
                f"{vocab.get(token)} in the data); prepare the data with the model's tokenizer"
            )


def load_data(config: TrainConfig):
    """(rows, meta, tokenizer, smap) of the prepared data; clear errors for a wrong data dir."""
    from transformers import AutoTokenizer

    from mmpt.data.prepare import load_prepared

    if not Path(config.data_dir).is_dir():
        raise ConfigError(f"config field 'data_dir': {config.data_dir!r} does not exist; run `mmpt prepare` first")
    rows, meta = load_prepared(config.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(config.data_dir) / "tokenizer"))
    if config.tokenizer:
        with from_hub(config.tokenizer, "config field 'tokenizer'"):
            other = AutoTokenizer.from_pretrained(config.tokenizer)
        check_same_tokenizer(tokenizer, other, f"tokenizer={config.tokenizer!r}", config.data_dir)
    elif isinstance(config.model, str):
        try:
            model_tokenizer = AutoTokenizer.from_pretrained(config.model)
        except (OSError, ValueError):
            model_tokenizer = None  # a model folder without a tokenizer: nothing to compare with
        if model_tokenizer is not None:
            check_same_tokenizer(tokenizer, model_tokenizer, f"the tokenizer of model {config.model!r}", config.data_dir)
    smap = SeparationMap.load(config.data_dir)
    if smap.base_vocab_size != len(tokenizer):
        raise ConfigError(f"{config.data_dir}/separation.json: base_vocab_size {smap.base_vocab_size} != {len(tokenizer)} tokens")
    return rows, meta, tokenizer, smap


def default_device_type() -> str:
    """The device type DeepSpeed's accelerator would pick here: `DS_ACCELERATOR`, else cuda when one is visible."""
    import os

    return os.environ.get("DS_ACCELERATOR") or ("cuda" if torch.cuda.is_available() else "cpu")


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


def preflight(config: TrainConfig, device_type: str, world: int) -> str:
    """`mmpt train --dry-run`: the resolved config and the exact DeepSpeed JSON `train` would pass to
    `deepspeed.initialize` on `device_type` with `world` ranks (built by the same `deepspeed_config`)."""
    import json

    on_gpu_here = device_type == "cuda" and torch.cuda.is_available()
    # without a GPU here, `auto` resolves as on a bf16-capable one (A100, H100, H200); fp16 on older cards
    bf16 = torch.cuda.is_bf16_supported() if on_gpu_here else device_type == "cuda"
    precision = resolve_precision(config.precision, device_type, bf16)
    ds = deepspeed_config(config, world, precision, device_type)
    head = f"# device {device_type}, {world} rank(s), precision {precision} ({config.precision})"
    if device_type == "cuda" and not on_gpu_here and config.precision == "auto":
        head += "; resolved as on a bf16 GPU (no GPU here)"
    return "\n".join([head, "# training config", dump(config).rstrip(), "# DeepSpeed JSON", json.dumps(ds, indent=2)])


def main(argv: list[str] | None = None, *, leave_group: bool = True) -> int:
    """One training run from the command line; `leave_group=False` keeps the process group for
    another run in the same process (tests), else every rank leaves it before the process exits.

    The Hugging Face export runs on rank 0 after the other ranks are done with it: outside any
    collective, so that however long it takes, no peer times out waiting for it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in argv
    argv, device_type, world_size = take_preflight_options([a for a in argv if a != "--dry-run"])
    if not dry_run and (device_type or world_size):
        print(
            "mmpt train: --device and --world-size are options of --dry-run (a run takes both from its launch)", file=sys.stderr
        )
        return 2
    console.tolerate_broken_pipes()  # a launcher that died must not fail a save through a print
    try:
        config = config_from_argv(argv)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"mmpt train: {e}", file=sys.stderr)
        return 2
    if dry_run:
        try:
            print(preflight(config, device_type or default_device_type(), world_size or distributed.detect().world_size))
        except ConfigError as e:
            print(f"mmpt train: {e}", file=sys.stderr)
            return 2
        return 0
    stop = StopFlag(config.save_signal)  # from the start: a request during the set-up stops after the first step
    try:
        return _run(config, leave_group, stop)
    finally:
        stop.close()


def _run(config: TrainConfig, leave_group: bool, stop: StopFlag) -> int:
    """`main` once the config is read: data, the process group and the output_dir's lock, training,
    leaving the group, then on rank 0 the export and the run's end (`finish`)."""
    env = distributed.detect()
    try:
        rows, meta, tokenizer, smap = load_data(config)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"mmpt train: {e}", file=sys.stderr)
        return 2
    stopping.watch_launcher(stop, env.launcher)  # no rank trains on once its launcher is gone, whatever ended it
    distributed.set_compile_caches()  # flex_attention's Triton/Inductor builds: a folder of this job, node-local
    distributed.init(env, timeout_s=config.process_group_timeout_s)
    watchdog = distributed.Watchdog(config.hang_timeout_s)
    lock = None
    try:
        try:
            run_dir.require_shared(config.output_dir)  # before any work: checkpoints need one directory for all ranks
            lock = run_dir.lock_output_dir(config.output_dir)  # a live run there: refused, before it is touched
            status, last = train(config, env, rows, meta, tokenizer, smap, stop, watchdog)
        except ConfigError as e:  # the same on every rank (output_dir not shared or held, a resume that does not fit)
            print(f"mmpt train: {e}", file=sys.stderr)
            status, last = 2, None
        if leave_group:
            distributed.shutdown(watchdog)  # a peer that died at the end: exit after hang_timeout_s, not 30 min
        else:
            watchdog.stop()
        if last is not None and env.rank == 0:
            status = finish(config, last, stop)
    finally:
        if lock is not None:
            lock.release()
    return status


def finish(config: TrainConfig, last: Path, stop: StopFlag) -> int:
    """Rank 0 after the last step, outside the process group: the export (`config.export`), then
    "finished" in run_state.json. A save request during the export abandons it (it is written to a
    temporary folder, so final/ is never half written) and leaves the run "stopped" at its last
    step, so that a requeued job resumes there and exports."""
    from mmpt.export import export_checkpoint

    step = train_checkpoints.step_of(last)
    if config.export:
        final = Path(config.output_dir) / "final"
        try:
            with stop.interruptible():
                print(f"mmpt train: exported {export_checkpoint(last, final)}")
        except StopRequested:
            run_dir.write_run_state(config.output_dir, "stopped", step=step)
            print(f"mmpt train: save requested ({stop.name}) during the export: {final} not written; resume to export it")
            return 0
    run_dir.write_run_state(config.output_dir, "finished", step=step)
    return 0


def train(
    config: TrainConfig,
    env: distributed.DistEnv,
    rows,
    meta: dict,
    tokenizer,
    smap: SeparationMap,
    stop: StopFlag,
    watchdog: distributed.Watchdog,
) -> tuple[int, Path | None]:
    """Train in the process group `_run` joined; returns (exit status, the checkpoint of the last
    step, or None when the run stopped on a request). `watchdog` is left armed for the caller's
    `distributed.shutdown`."""
    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.accelerator import get_accelerator

    from mmpt import metrics
    from mmpt.data.instances import sentinel_ids
    from mmpt.data.prepare import load_validation
    from mmpt.export import write_export_meta
    from mmpt.model.fused_loss import packed_loss
    from mmpt.objectives import Collator
    from mmpt.validate import evaluate

    # ---- ranks, device, precision -------------------------------------------------------------
    rank, world = env.rank, env.world_size
    accel = get_accelerator()
    device = torch.device(accel.current_device_name())  # every collective's tensors live here (NCCL: the GPU)
    precision = resolve_precision(config.precision, device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())
    ds_config = deepspeed_config(config, world, precision, device.type)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"mmpt train: {env.launcher} launch, {world} rank(s), {device.type}, {precision}, {config.deepspeed}")
    say(metrics.where_to_look(config.output_dir))
    # what the data position and the schedule mean: a resume with any of these changed is refused
    layout = {
        "world_size": world,
        "per_device_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "seed": config.seed,
    }
    resume_from = train_checkpoints.choose_resume(config.resume, config.output_dir)
    if resume_from is not None:
        train_checkpoints.check_layout(resume_from, layout)  # before the model is built: a refusal costs nothing

    # ---- model and engine: built partitioned, optimizer and schedule owned by DeepSpeed ---------
    torch.manual_seed(config.seed)
    model = build_model(
        config, smap, ds_config, precision, meta["tokenizer"].get("backbone_vocab_size"), meta.get("max_seq_length")
    )
    global_batch = config.per_device_batch_size * config.gradient_accumulation_steps * world
    steps_per_epoch = math.ceil(len(rows) / global_batch)
    total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    min_ratio = config.min_learning_rate / config.learning_rate
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=param_groups(model, config.weight_decay, config.weight_decay_all),
        config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total_steps, config.warmup_ratio, min_ratio, config.lr_schedule)
        ),
    )
    emb = engine.module.get_input_embeddings().weight
    rows_in_model = int(getattr(emb, "ds_shape", emb.shape)[0])  # ZeRO-3 keeps the full shape in ds_shape
    nl_mask, code_mask = (m.to(device) for m in smap.vocab_masks(rows_in_model))  # (V,) bool each

    def write_hf(directory: Path) -> None:
        write_export_meta(directory, engine.module.config, tokenizer, smap, meta, config)

    # ---- resume: rank 0 picks the checkpoint, every rank loads that one ------------------------
    step, tokens_seen = 0, 0
    if resume_from is not None:
        state = train_checkpoints.load(engine, resume_from, layout, rank)
        if state.get("n_rows") != len(rows):
            raise ConfigError(f"{resume_from}: saved for {state.get('n_rows')} rows, the data has {len(rows)}")
        step, tokens_seen = state["step"], state["tokens_seen"]
        say(f"mmpt train: resumed from step {step} ({resume_from})")
    log = metrics.MetricsLog(config.output_dir, enabled=rank == 0)
    if rank == 0:
        Path(config.output_dir, "train_config.yaml").write_text(dump(config))
        run_dir.write_run_state(config.output_dir, "running", step=step)
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    tied = engine.module.get_output_embeddings().weight is emb
    n_matmul = n_params - (0 if tied else getattr(emb, "ds_numel", emb.numel()))  # a lookup is no matmul
    peak = metrics.peak_flops(device, config.peak_tflops)
    # under flex_attention every micro-batch has one shape (per_device_batch_size rows of the data's
    # max_seq_length), so that flex compiles once per run (and once for evaluation)
    one_shape = config.attn_implementation == "flex_attention"
    pad_to = meta.get("max_seq_length") if one_shape else None
    collator = Collator(
        config.objective, sentinel_ids(tokenizer), smap, seed=config.seed, signature_loss=config.signature_loss, pad_to=pad_to
    )
    held_out = load_validation(config.data_dir) if config.eval_steps else None  # None: no DATA_DIR/validation
    held_out = held_out if held_out is not None and len(held_out) else None
    # epoch 0: the same rows every time
    held_out_collator = Collator(
        config.objective, sentinel_ids(tokenizer), smap, seed=config.seed, signature_loss=config.signature_loss, pad_to=pad_to
    )
    pin = device.type == "cuda"  # page-locked host memory: a copy to the GPU then runs without the host waiting

    def to_device(t: torch.Tensor) -> torch.Tensor:
        return distributed.to_device(t, device)

    def fetch(source, collate, indices: list[int]) -> tuple[dict[str, torch.Tensor], int]:
        return collate_rows(source, collate, indices, config.per_device_batch_size if one_shape else max(len(indices), 1))

    orders: dict[int, np.ndarray] = {}  # the current epoch's row order (one permutation per epoch, not per step)

    def load_step(k: int) -> tuple[list[list[int]], list[dict[str, torch.Tensor]], list[int], list[int]]:
        """The host side of optimizer step k: this rank's row indices, micro-batches (pinned on a GPU
        host), non-pad tokens and trained-token counts. Runs in the prefetch thread, one step ahead."""
        epoch, k_in_epoch = divmod(k, steps_per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = epoch_order(len(rows), config.seed, epoch)
        collator.epoch = epoch
        micro = step_rows(
            orders[epoch], k_in_epoch, rank, world, config.per_device_batch_size, config.gradient_accumulation_steps
        )
        batches, n_tokens = zip(*(fetch(rows, collator, idx) for idx in micro))
        counts = [sum(trained_counts(b["labels"], b["modality"])) for b in batches]  # host ints, from host tensors
        if pin:
            batches = [{name: t.pin_memory() for name, t in b.items()} for b in batches]
        return micro, list(batches), list(n_tokens), counts

    prefetch = ThreadPoolExecutor(1, thread_name_prefix="mmpt-prefetch")  # collates step k+1 while k runs

    # ---- the loop: set epoch -> fetch the step's rows -> count -> micro-steps -> step -> log/eval/save
    engine.train()
    watchdog.beat(allow_s=10 * config.hang_timeout_s)  # the first step also warms up kernels and buckets
    # sums over the steps since the last log line: code_sum, code_count, nl_sum, nl_count, tokens, rows, seconds
    window = np.zeros(7)
    pending = prefetch.submit(load_step, step)
    while step < total_steps:
        t0 = time.perf_counter()
        epoch = step // steps_per_epoch
        micro, batches, n_tokens, counts = pending.result()
        if step + 1 < total_steps:
            pending = prefetch.submit(load_step, step + 1)
        # every micro-batch of the step to the device at once, asynchronously (a few (B, N) id tensors)
        batches = [{name: to_device(t) for name, t in b.items()} for b in batches]
        # the global trained-token count of the whole step normalises every micro-batch's loss sum;
        # it stays on the device (no host sync before the micro-steps)
        denom = to_device(torch.tensor([float(sum(counts))], dtype=torch.float64))
        dist.all_reduce(denom)
        denom = denom.clamp(min=1.0).float().squeeze(0)  # () fp32, as the loss sums
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # code_sum, code_count, nl_sum, nl_count
        for batch in batches:
            # the head fused into the loss: no (B, N, V) logits; a stand-in batch still reaches every parameter
            s = packed_loss(engine, batch, nl_mask, code_mask)
            loss = s.total_sum / denom
            # DeepSpeed averages gradients over ranks: undo that so that the gradient is d(sum)/denom
            engine.backward(loss * world, scale_wrt_gas=False)
            engine.step()  # an optimizer step only at the accumulation boundary
            sums += torch.stack([s.code_sum.detach(), s.code_count, s.nl_sum.detach(), s.nl_count]).double()
            watchdog.beat()
        step += 1
        evaluate_now = held_out is not None and (step % config.eval_steps == 0 or step == total_steps)
        log_now = step % config.logging_steps == 0 or step == total_steps or evaluate_now
        # one collective and one host sync per step: loss sums, tokens, rows, and whether any rank got
        # the save signal; on a log step the gradient norm (a device scalar under ZeRO-3) rides along
        host = torch.tensor([sum(n_tokens), sum(map(len, micro)), float(stop.raised)], dtype=torch.float64)
        report = torch.cat([sums, to_device(host)])
        dist.all_reduce(report)
        grad_norm = engine.get_global_grad_norm() if log_now else None
        if torch.is_tensor(grad_norm):
            report = torch.cat([report, grad_norm.detach().reshape(1).to(report.dtype)])
        code_sum, code_count, nl_sum, nl_count, tokens, n_rows, stop_votes, *norm = report.tolist()
        grad_norm = norm[0] if norm else grad_norm
        tokens_seen += int(tokens)
        window += [code_sum, code_count, nl_sum, nl_count, tokens, n_rows, time.perf_counter() - t0]
        validation = None
        if evaluate_now:
            watchdog.beat(allow_s=10 * config.hang_timeout_s)
            validation = evaluate(
                engine,
                lambda idx: fetch(held_out, held_out_collator, idx),
                len(held_out),
                config.per_device_batch_size,
                rank,
                world,
                nl_mask,
                code_mask,
                beat=watchdog.beat,
            )
            say(f"step {step}/{total_steps} validation loss {validation['loss']:.4f}")
        if log_now:
            # losses and rates are means over the window, not the last step's (less noise between log lines)
            code_sum, code_count, nl_sum, nl_count, tokens, n_rows, dt = window
            window[:] = 0
            scalars = {
                "loss": (code_sum + nl_sum) / max(code_count + nl_count, 1),
                "loss_code": code_sum / max(code_count, 1),
                "lr": engine.get_lr()[0],
                "grad_norm": float(grad_norm or 0.0),  # a host value by now (None before the first step)
                "tokens_per_s": tokens / dt,
                "samples_per_s": n_rows / dt,
                "mfu": metrics.mfu(n_matmul, tokens / dt, peak, world),
                "peak_memory_gib": metrics.peak_memory_gib(device),
                "tokens_seen": tokens_seen,
                "epoch": epoch,
            }
            if nl_count:
                scalars["loss_nl"] = nl_sum / nl_count
            log.log(step, scalars, validation)
            say(
                f"step {step}/{total_steps} loss {scalars['loss']:.4f} lr {scalars['lr']:.2e} {scalars['tokens_per_s']:.0f} tok/s"
            )
            if smap.separated:
                log.similarity(step, metrics.code_row_similarity(engine, smap.separated, smap.base_vocab_size), smap.tokens)
        if (config.save_steps and step % config.save_steps == 0) or step == total_steps or stop_votes:
            watchdog.beat(allow_s=10 * config.hang_timeout_s)
            client = {"n_rows": len(rows), "tokens_seen": tokens_seen, "epoch": epoch}
            train_checkpoints.save(engine, config.output_dir, step, client, write_hf, config.keep_checkpoints, layout)
            watchdog.beat()
        if stop_votes:
            if rank == 0:
                run_dir.write_run_state(config.output_dir, "stopped", step=step)
            say(
                f"mmpt train: save requested ({stop.name or 'by another rank'}), stopped after step {step}; resume with --resume auto"
            )
            prefetch.shutdown(cancel_futures=True)
            log.close()
            return 0, None

    # ---- the end: projector view; the export (rank 0) runs after the process group is left -----
    prefetch.shutdown()
    watchdog.beat(allow_s=10 * config.hang_timeout_s)
    if smap.separated:
        log.projector(step, metrics.separated_rows(engine, smap.separated, smap.base_vocab_size), smap.tokens)
    watchdog.beat()
    log.close()
    return 0, train_checkpoints.checkpoints_dir(config.output_dir) / train_checkpoints.step_dir_name(
        step
    )  # the loop saved the last step


if __name__ == "__main__":
    raise SystemExit(main())
