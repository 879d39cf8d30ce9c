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
from dataclasses import dataclass
from pathlib import Path

import torch

from mmpt import console, distributed, export, metrics, run_dir, train_checkpoints
from mmpt.batches import RowBatches, StepBatch, StepLoader, TrainData, load_data, make_collator
from mmpt.config import (
    ConfigError,
    TrainConfig,
    config_from_argv,
    deepspeed_config,
    default_device_type,
    dump,
    preflight,
    resolve_precision,
    take_preflight_options,
)  # fmt: skip
from mmpt.data.prepare import load_validation
from mmpt.model.build import build_model
from mmpt.model.fused_loss import packed_loss
from mmpt.optim import lr_schedule, param_groups
from mmpt.stopping import StopFlag, StopRequested
from mmpt.train_checkpoints import Checkpointer
from mmpt.validate import Validator


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
        return run(config, leave_group, stop)
    finally:
        stop.close()


def run(config: TrainConfig, leave_group: bool, stop: StopFlag) -> int:
    """`main` once the config is read: data, the process group and the output_dir's lock, training,
    leaving the group, then on rank 0 the export and the run's end (`finish`)."""
    env = distributed.detect()
    try:
        data = load_data(config)
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
            status, last = 0, Trainer(config, env, data, stop, watchdog).train()
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


@dataclass
class StepSums:
    """What one optimizer step adds up to over every rank: its one collective, read in one host sync."""

    code_sum: float  # summed code-token losses (nats)
    code_count: float  # trained code tokens
    nl_sum: float
    nl_count: float
    tokens: float  # non-pad tokens
    rows: float  # rows (stand-ins not counted)
    stop_votes: float  # ranks that got a save request
    grad_norm: float | None  # on a log step; None otherwise (and before the first optimizer step)


class Trainer:
    """One run in the process group `run` joined: the set-up (`__init__`), the loop (`train`), one
    step (`train_step`), and what the loop does after each step on its components' cadence:
    logging (`log`), validation (`validate`), save-or-stop (`save_or_stop`); then `close`.

    `watchdog` is left armed for the caller's `distributed.shutdown`.
    """

    def __init__(self, config: TrainConfig, env: distributed.DistEnv, data: TrainData, stop: StopFlag,
                 watchdog: distributed.Watchdog) -> None:  # fmt: skip
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        self.config, self.data, self.stop, self.watchdog = config, data, stop, watchdog
        # ---- ranks, device, precision ---------------------------------------------------------
        self.rank, self.world = rank, world = env.rank, env.world_size
        self.device = device = torch.device(get_accelerator().current_device_name())  # every collective's tensors live here
        precision = resolve_precision(config.precision, device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())
        ds_config = deepspeed_config(config, world, precision, device.type)
        self.say = print if rank == 0 else (lambda *a, **k: None)
        self.say(f"mmpt train: {env.launcher} launch, {world} rank(s), {device.type}, {precision}, {config.deepspeed}")
        self.say(metrics.where_to_look(config.output_dir))
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

        # ---- model and engine: built partitioned, optimizer and schedule owned by DeepSpeed -----
        torch.manual_seed(config.seed)
        meta = data.meta
        model = build_model(
            config, data.smap, ds_config, precision, meta["tokenizer"].get("backbone_vocab_size"), meta.get("max_seq_length")
        )
        global_batch = config.per_device_batch_size * config.gradient_accumulation_steps * world
        self.steps_per_epoch = math.ceil(len(data.rows) / global_batch)
        self.total_steps = config.max_steps or math.ceil(config.epochs * self.steps_per_epoch)
        min_ratio = config.min_learning_rate / config.learning_rate
        self.engine, *_ = deepspeed.initialize(
            model=model,
            model_parameters=param_groups(model, config.weight_decay, config.weight_decay_all),
            config=ds_config,
            lr_scheduler=lr_schedule(self.total_steps, config.warmup_ratio, min_ratio, config.lr_schedule),
        )
        emb = self.engine.module.get_input_embeddings().weight
        rows_in_model = int(getattr(emb, "ds_shape", emb.shape)[0])  # ZeRO-3 keeps the full shape in ds_shape
        self.nl_mask, self.code_mask = (m.to(device) for m in data.smap.vocab_masks(rows_in_model))  # (V,) bool each

        # ---- resume: rank 0 picked the checkpoint, every rank loads that one --------------------
        self.step, self.tokens_seen = 0, 0
        if resume_from is not None:
            state = train_checkpoints.load(self.engine, resume_from, layout, rank)
            if state.get("n_rows") != len(data.rows):
                raise ConfigError(f"{resume_from}: saved for {state.get('n_rows')} rows, the data has {len(data.rows)}")
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
            self.say(f"mmpt train: resumed from step {self.step} ({resume_from})")

        # ---- what runs beside the loop, each on its own cadence ---------------------------------
        self.log_file = metrics.MetricsLog(config.output_dir, enabled=rank == 0)
        if rank == 0:
            Path(config.output_dir, "train_config.yaml").write_text(dump(config))
            run_dir.write_run_state(config.output_dir, "running", step=self.step)
        n_params = sum(getattr(p, "ds_numel", p.numel()) for p in self.engine.module.parameters())
        tied = self.engine.module.get_output_embeddings().weight is emb
        self.n_matmul = n_params - (0 if tied else getattr(emb, "ds_numel", emb.numel()))  # a lookup is no matmul
        self.peak = metrics.peak_flops(device, config.peak_tflops)
        self.window = metrics.LogWindow(config.logging_steps, self.total_steps)
        # under flex_attention every micro-batch has one shape (per_device_batch_size rows of the data's
        # max_seq_length), so that flex compiles once per run (and once for evaluation)
        one_shape = config.attn_implementation == "flex_attention"
        pad_to = meta.get("max_seq_length") if one_shape else None
        width = config.per_device_batch_size if one_shape else None
        self.loader = StepLoader(
            RowBatches(data.rows, make_collator(config, data, pad_to), width),
            seed=config.seed, rank=rank, world=world, per_device_batch_size=config.per_device_batch_size,
            accumulation=config.gradient_accumulation_steps, steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps, pin=device.type == "cuda",
        )  # fmt: skip
        # the held-out rows with a collator of their own: the prefetch thread sets the training one's
        # epoch; this one stays at epoch 0, so that every evaluation corrupts them the same way
        held_out = load_validation(config.data_dir) if config.eval_steps else None  # None: no DATA_DIR/validation
        held_out = RowBatches(held_out, make_collator(config, data, pad_to), width) if held_out else None  # and none: empty
        self.validator = Validator(
            held_out, len(held_out) if held_out else 0, eval_steps=config.eval_steps, total_steps=self.total_steps,
            batch_size=config.per_device_batch_size, rank=rank, world=world, nl_mask=self.nl_mask, code_mask=self.code_mask,
            watchdog=watchdog,
        )  # fmt: skip
        self.checkpointer = Checkpointer(
            self.engine, config.output_dir, save_steps=config.save_steps, keep=config.keep_checkpoints, layout=layout,
            write_hf=lambda d: export.write_export_meta(d, self.engine.module.config, data.tokenizer, data.smap, meta, config),
            watchdog=watchdog,
        )  # fmt: skip

    def train(self) -> Path | None:
        """The loop: a step's batches -> train_step -> validate, log, save or stop. Returns the
        checkpoint of the last step, or None when the run stopped on a save request."""
        self.engine.train()
        self.watchdog.beat_slow()  # the first step also warms up kernels and buckets
        self.loader.start(self.step)
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            epoch = self.step // self.steps_per_epoch
            batch = self.loader.next()  # collated in the prefetch thread while the previous step ran
            self.step += 1
            sums = self.train_step(batch)
            self.tokens_seen += int(sums.tokens)
            self.window.add(sums.code_sum, sums.code_count, sums.nl_sum, sums.nl_count, sums.tokens, sums.rows,
                            time.perf_counter() - t0)  # fmt: skip
            validation = self.validate()
            self.log(epoch, sums.grad_norm, validation)
            if self.save_or_stop(epoch, sums.stop_votes):
                return None
        return self.close()

    def train_step(self, batch: StepBatch) -> StepSums:
        """One optimizer step: the micro-batches' forward and backward passes, DeepSpeed's step at the
        accumulation boundary, then one collective and one host sync for what the step adds up to."""
        import deepspeed.comm as dist

        # every micro-batch of the step to the device at once, asynchronously (a few (B, N) id tensors)
        batches = [{name: distributed.to_device(t, self.device) for name, t in b.items()} for b in batch.batches]
        # the global trained-token count of the whole step normalises every micro-batch's loss sum;
        # it stays on the device (no host sync before the micro-steps)
        denom = distributed.to_device(torch.tensor([float(sum(batch.trained))], dtype=torch.float64), self.device)
        dist.all_reduce(denom)
        denom = denom.clamp(min=1.0).float().squeeze(0)  # () fp32, as the loss sums
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # code_sum, code_count, nl_sum, nl_count
        for b in batches:
            # the head fused into the loss: no (B, N, V) logits; a stand-in batch still reaches every parameter
            s = packed_loss(self.engine, b, self.nl_mask, self.code_mask)
            loss = s.total_sum / denom
            # DeepSpeed averages gradients over ranks: undo that so that the gradient is d(sum)/denom
            self.engine.backward(loss * self.world, scale_wrt_gas=False)
            self.engine.step()  # an optimizer step only at the accumulation boundary
            sums += torch.stack([s.code_sum.detach(), s.code_count, s.nl_sum.detach(), s.nl_count]).double()
            self.watchdog.beat()
        # one collective and one host sync per step: loss sums, tokens, rows, and whether any rank got
        # the save signal; on a log step the gradient norm (a device scalar under ZeRO-3) rides along
        host = torch.tensor([sum(batch.tokens), sum(map(len, batch.rows)), float(self.stop.raised)], dtype=torch.float64)
        report = torch.cat([sums, distributed.to_device(host, self.device)])
        dist.all_reduce(report)
        log_step = self.window.should_log(self.step, self.validator.should_validate(self.step))
        grad_norm = self.engine.get_global_grad_norm() if log_step else None
        if torch.is_tensor(grad_norm):
            report = torch.cat([report, grad_norm.detach().reshape(1).to(report.dtype)])
        values = report.tolist()  # the step's one host sync
        return StepSums(*values[:7], grad_norm=values[7] if torch.is_tensor(grad_norm) else grad_norm)

    def validate(self) -> dict[str, float] | None:
        """The held-out losses on the validator's cadence (collective), else None."""
        if not self.validator.should_validate(self.step):
            return None
        validation = self.validator.validate(self.engine)
        self.say(f"step {self.step}/{self.total_steps} validation loss {validation['loss']:.4f}")
        return validation

    def log(self, epoch: int, grad_norm: float | None, validation: dict[str, float] | None) -> None:
        """A metrics.jsonl/TensorBoard record and a console line on the log window's cadence; with
        separated tokens, their NL/code row similarity (collective)."""
        if not self.window.should_log(self.step, validation is not None):
            return
        # losses and rates are means over the window, not the last step's (less noise between log lines)
        code_sum, code_count, nl_sum, nl_count, tokens, n_rows, dt = self.window.take()
        scalars = {
            "loss": (code_sum + nl_sum) / max(code_count + nl_count, 1),
            "loss_code": code_sum / max(code_count, 1),
            "lr": self.engine.get_lr()[0],
            "grad_norm": float(grad_norm or 0.0),  # a host value by now (None before the first step)
            "tokens_per_s": tokens / dt,
            "samples_per_s": n_rows / dt,
            "mfu": metrics.mfu(self.n_matmul, tokens / dt, self.peak, self.world),
            "peak_memory_gib": metrics.peak_memory_gib(self.device),
            "tokens_seen": self.tokens_seen,
            "epoch": epoch,
        }
        if nl_count:
            scalars["loss_nl"] = nl_sum / nl_count
        self.log_file.log(self.step, scalars, validation)
        self.say(
            f"step {self.step}/{self.total_steps} loss {scalars['loss']:.4f} lr {scalars['lr']:.2e} "
            f"{scalars['tokens_per_s']:.0f} tok/s"
        )
        smap = self.data.smap
        if smap.separated:
            self.log_file.similarity(
                self.step, metrics.code_row_similarity(self.engine, smap.separated, smap.base_vocab_size), smap.tokens
            )

    def save_or_stop(self, epoch: int, stop_votes: float) -> bool:
        """A checkpoint on the checkpointer's cadence or when any rank got a save request (collective);
        True when the run stops here on that request ("stopped" in run_state.json)."""
        client = {"n_rows": len(self.data.rows), "tokens_seen": self.tokens_seen, "epoch": epoch}
        last_step = self.step == self.total_steps
        self.checkpointer.save(self.step, client, last_step=last_step, requested=bool(stop_votes))
        if not stop_votes:
            return False
        if self.rank == 0:
            run_dir.write_run_state(self.config.output_dir, "stopped", step=self.step)
        self.say(
            f"mmpt train: save requested ({self.stop.name or 'by another rank'}), stopped after step {self.step}; "
            "resume with --resume auto"
        )
        self.loader.close(cancel=True)
        self.log_file.close()
        return True

    def close(self) -> Path:
        """After the last step: the projector view of the separated rows (collective), the logs closed;
        returns the last step's checkpoint (the loop saved it). The export (rank 0) runs after the
        process group is left (`finish`)."""
        self.loader.close()
        self.watchdog.beat_slow()
        smap = self.data.smap
        if smap.separated:
            self.log_file.projector(
                self.step, metrics.separated_rows(self.engine, smap.separated, smap.base_vocab_size), smap.tokens
            )
        self.watchdog.beat()
        self.log_file.close()
        return train_checkpoints.checkpoints_dir(self.config.output_dir) / train_checkpoints.step_dir_name(self.step)


def finish(config: TrainConfig, last: Path, stop: StopFlag) -> int:
    """Rank 0 after the last step, outside the process group: the export (`config.export`), then
    "finished" in run_state.json. A save request during the export abandons it (it is written to a
    temporary folder, so final/ is never half written) and leaves the run "stopped" at its last
    step, so that a requeued job resumes there and exports."""
    step = train_checkpoints.step_of(last)
    if config.export:
        final = Path(config.output_dir) / "final"
        try:
            with stop.interruptible():
                print(f"mmpt train: exported {export.export_checkpoint(last, final)}")
        except StopRequested:
            run_dir.write_run_state(config.output_dir, "stopped", step=step)
            print(f"mmpt train: save requested ({stop.name}) during the export: {final} not written; resume to export it")
            return 0
    run_dir.write_run_state(config.output_dir, "finished", step=step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
