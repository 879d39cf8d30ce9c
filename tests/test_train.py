"""mmpt/train.py under real launches: ZeRO-3 setup, equivalence with plain PyTorch, resume, signals.

Launches are expensive (~20-40 s each on 2 cores), so one 2-rank `deepspeed` launch (the `driver`
below) checks the partitioned setup and trains all four objectives; the resume and dead-rank tests
reuse its uninterrupted text-code-clm run as their reference.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from mmpt.distributed import free_port
from mmpt.modality import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"
STEPS = 20
BATCH, ACCUM, WORLD = 3, 2, 2  # 12 rows per step: the epoch's last step is short (uneven tail)
LR, MIN_LR, WARMUP = 3e-3, 3e-4, 0.1

# the one model shape of these tests: a Llama small enough for CPU, no dropout
ARCH = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def make_pairs(path: Path, n: int = 125) -> None:
    """Deterministic NL→code pairs, one row each: 11 steps per epoch, the last one of 5 rows."""
    rng = np.random.default_rng(0)
    ops = [("add", "+"), ("subtract", "-"), ("multiply", "*"), ("compare", "<"), ("combine", "|")]
    with path.open("w") as f:
        for i in range(n):
            name, op = ops[i % len(ops)]
            k = int(rng.integers(1, 9))
            doc = f"Return the result when you {name} a and b, then scale by {k}."
            code = f"def f{i}(a, b):\n    if a is None:\n        return {k}\n    return (a {op} b) * {k}\n"
            f.write(json.dumps({"docstring": doc, "code": code}) + "\n")


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory) -> Path:
    """Prepared data (partial separation) and two saved backbones (tied and untied head)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.data.prepare import PrepareConfig, prepare
    from mmpt.data.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("train")
    # the shipped ZeRO-3 config, but no parameter is small enough to stay whole on every rank
    ds = json.loads((ROOT / "ds_configs" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    ds.pop("timers")  # a JSON of a user's own that leaves DeepSpeed's throughput timer to its default (on)
    (root / "zero3.json").write_text(json.dumps(ds))
    make_pairs(root / "pairs.jsonl")
    prepare(PrepareConfig(str(root / "pairs.jsonl"), str(ASSETS / "tokenizer"), str(root / "data"), "partial", max_seq_length=96))
    tokenizer = load_tokenizer(str(root / "data" / "tokenizer"))
    for name, tied in (("tied", True), ("untied", False)):
        torch.manual_seed(0)
        config = AutoConfig.for_model("llama", **ARCH, vocab_size=len(tokenizer), tie_word_embeddings=tied)
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
    return root


def run_args(root: Path, objective: str, out: Path, **extra) -> list[str]:
    args = dict(
        model=str(root / "tied"),
        data_dir=str(root / "data"),
        output_dir=str(out),
        objective=objective,
        max_steps=STEPS,
        learning_rate=LR,
        min_learning_rate=MIN_LR,
        warmup_ratio=WARMUP,
        weight_decay=0.1,
        max_grad_norm=0.5,
        per_device_batch_size=BATCH,
        gradient_accumulation_steps=ACCUM,
        precision="fp32",
        gradient_checkpointing=False,
        save_steps=5,
        keep_checkpoints=2,
        logging_steps=1,
        seed=7,
        deepspeed=str(root / "zero3.json"),
        attn_implementation="sdpa",
        hang_timeout_s=60,
    )
    args.update(extra)
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


DRIVER = textwrap.dedent(
    """
    import json, sys, torch, deepspeed
    from safetensors.torch import load_file
    from mmpt import distributed, train
    from mmpt.config import load_config, deepspeed_config
    from mmpt.data.separation import SeparationMap
    from mmpt.model.build import build_model
    from mmpt.optim import param_groups

    spec = json.loads(open(sys.argv[-1]).read())  # the launcher puts --local_rank first
    env = distributed.detect()
    distributed.init(env, 60)
    smap = SeparationMap.load(spec["data"])
    src = torch.tensor(smap.separated)
    dst = smap.base_vocab_size + torch.arange(len(src))
    report = {}
    for name in ("tied", "untied"):
        c = load_config(None, {"data_dir": spec["data"], "model": spec[name], "gradient_checkpointing": "false",
                               "deepspeed": spec["ds"], "per_device_batch_size": "2"})
        ds = deepspeed_config(c, env.world_size, "fp32", "cpu")
        model = build_model(c, smap, ds, "fp32")
        # before deepspeed.initialize: every parameter, the resized embeddings included, is already a
        # ZeRO-3 shard (empty .data, half of the rows' elements in ds_tensor), never a whole tensor
        w = model.get_input_embeddings().weight
        built = {
            "rows": int(w.ds_shape[0]) if hasattr(w, "ds_id") else int(w.shape[0]),
            "vocab_size": model.config.vocab_size,
            "tied": w is model.get_output_embeddings().weight,
            "whole": [n for n, p in model.named_parameters() if not hasattr(p, "ds_id") or p.numel() > 0],
            "shard": [p.ds_tensor.numel() for p in (w, model.get_output_embeddings().weight)],
            "full": [p.ds_numel for p in (w, model.get_output_embeddings().weight)],
        }
        engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.0), config=ds)
        saved = load_file(spec[name] + "/model.safetensors")
        heads = {"input": model.get_input_embeddings().weight, "output": model.get_output_embeddings().weight}
        out = {"tied": heads["input"] is heads["output"], "built": built}
        for head, w in heads.items():
            key = "model.embed_tokens.weight" if head == "input" or out["tied"] else "lm_head.weight"
            out[head + "_sharded"] = hasattr(w, "ds_id") and w.ds_tensor.numel() < w.ds_numel
            with deepspeed.zero.GatheredParameters([w], modifier_rank=None):
                full = w.detach().clone()
            out[head + "_copies_equal"] = bool(torch.equal(full[dst], full[src]))
            out[head + "_originals_kept"] = bool(torch.equal(full[src], saved[key][src]))
        report[name] = out
    json.dump(report, open(spec["report"] + f".rank{env.rank}", "w"))
    for argv in spec["runs"]:
        assert train.main(argv, leave_group=False) == 0, argv
    """
)


def launch(cmd: list[str], log: Path, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    proc.stdout_path = log
    return proc


def deepspeed_cmd(port: int, script: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port), script, *args]


def read_losses(out: Path) -> dict[int, float]:
    """step -> training loss from metrics.jsonl (a step logged again after a resume: the later line wins)."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def driver_run(setup_dir) -> Path:
    """One 2-rank ZeRO-3 launch: the partitioned-setup check, then 20 steps of every objective."""
    spec = {
        "data": str(setup_dir / "data"),
        "tied": str(setup_dir / "tied"),
        "untied": str(setup_dir / "untied"),
        "ds": str(setup_dir / "zero3.json"),
        "report": str(setup_dir / "setup.json"),
        "runs": [run_args(setup_dir, o, setup_dir / f"run-{o}") for o in OBJECTIVES],
    }
    run_script(setup_dir, "driver", DRIVER, spec, 29631)
    return setup_dir


def run_script(root: Path, name: str, script: str, spec: dict, port: int) -> None:
    """Launch ROOT/NAME.py on 2 ranks with `deepspeed`, its spec as the last argument; it must exit 0."""
    (root / "spec.json").write_text(json.dumps(spec))
    (root / f"{name}.py").write_text(script)
    log = root / f"{name}.log"
    proc = launch(deepspeed_cmd(port, str(root / f"{name}.py"), str(root / "spec.json")), log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-5000:]


# An instrumented 2-rank bf16 run (one launch): what goes into every collective of mmpt's own
# code, the host syncs, the epoch permutations, the similarity gather, a slow rank-0 export, and
# the evaluation on held-out rows.
PROBE = textwrap.dedent(
    """
    import json, sys, time, threading
    import torch, torch.distributed as torch_dist, deepspeed, deepspeed.comm as ds_comm
    from torch.overrides import TorchFunctionMode
    from mmpt import distributed, export, metrics, train
    from mmpt import batches

    spec = json.loads(open(sys.argv[-1]).read())
    argv = spec["argv"]
    OURS = ("mmpt/train.py", "mmpt/validate.py", "mmpt/metrics.py")
    events, collectives, engines, order_calls, similarity = [], [], [], [], []

    def ours(depth=2):
        f = sys._getframe(depth).f_code.co_filename
        return next((o for o in OURS if f.endswith(o)), None)

    class HostTracker(TorchFunctionMode):
        # Where a tensor of mmpt's lives, as it would on a GPU: one made on the host (a factory
        # without device=, .cpu()) is tagged _host, one moved or made on the device (.to(device),
        # device=) _dev, and each tag spreads to everything computed from it. .to(device) from
        # mmpt returns a copy, so that the host original keeps its tag.
        FACTORIES = {"tensor", "zeros", "ones", "full", "empty", "as_tensor", "arange", "from_numpy"}
        # every way a device tensor reaches the host, whoever calls it (mmpt, transformers, DeepSpeed):
        # a value read, a copy back, or an op whose output size depends on the data (nonzero & co.)
        SYNCS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy",
                 "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "repeat_interleave"}

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            caller = ours()
            frame = sys._getframe(1)
            where = f"{frame.f_code.co_filename.rsplit('site-packages/', 1)[-1]}:{frame.f_lineno}"
            made_by_mmpt = "/mmpt/" in frame.f_code.co_filename  # the collator's batches too
            flat = [a for a in args if isinstance(a, torch.Tensor)] + [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            if name in self.SYNCS and args and getattr(args[0], "_dev", False):
                events.append(("sync", name, where))
            moved = made_by_mmpt and name == "to" and any(isinstance(a, (torch.device, str)) for a in (*args[1:], kwargs.get("device")))
            # a host-to-device copy the host waits for: not asynchronous, or a tensor made from host data on the device
            on_device = bool(args) and getattr(args[0], "_dev", False)  # .to(device) of it is a no-op on a GPU
            if (moved and not on_device and kwargs.get("non_blocking") is not True) or (
                made_by_mmpt and name in ("tensor", "as_tensor") and kwargs.get("device") is not None
            ):
                events.append(("sync", f"blocking {name}", where))
            out = func(*args, **(dict(kwargs, copy=True) if moved else kwargs))
            if not isinstance(out, torch.Tensor):
                return out
            if moved or (name in self.FACTORIES and made_by_mmpt and kwargs.get("device") is not None):
                out._dev = True
            elif name == "cpu" or (name in self.FACTORIES and made_by_mmpt):
                out._host = True
            else:
                if any(getattr(t, "_host", False) for t in flat):
                    out._host = True
                if any(getattr(t, "_dev", False) for t in flat):
                    out._dev = True
            return out

    def record(name, fn, where):
        def wrapped(tensor, *a, **k):
            caller = ours()
            if caller is not None or name == "reduce_scatter_tensor":
                collectives.append({"op": name, "caller": caller, "host": bool(getattr(tensor, "_host", False)),
                                    "device": str(tensor.device), "dtype": str(tensor.dtype), "numel": tensor.numel(),
                                    "engine": str(engines[0].device) if engines else None})
                if caller == "mmpt/train.py":
                    events.append(("collective", tensor.numel()))
            return fn(tensor, *a, **k)
        setattr(where, name, wrapped)

    for name in ("all_reduce", "broadcast", "reduce"):
        record(name, getattr(ds_comm, name), ds_comm)
        record(name, getattr(torch_dist, name), torch_dist)
    # DeepSpeed's gradient reduce-scatter in ZeRO-3 (its dtype is the communication dtype)
    record("reduce_scatter_tensor", torch_dist.reduce_scatter_tensor, torch_dist)

    initialize = deepspeed.initialize
    def capture(*a, **k):
        out = initialize(*a, **k)
        engines.append(out[0])
        grad_norm = out[0].get_global_grad_norm
        def on_device():  # ZeRO-3's norm is a tensor on the engine's device: reading it is a sync
            g = grad_norm()
            if isinstance(g, torch.Tensor):
                g._dev = True
            return g
        out[0].get_global_grad_norm = on_device
        return out
    deepspeed.initialize = capture

    # DeepSpeed's own waits for the device (its throughput timer's, e.g.): on CPU a no-op, counted as a sync
    from deepspeed.accelerator import get_accelerator
    accelerator = get_accelerator()
    synchronize = accelerator.synchronize
    def counted_synchronize(*a, **k):
        frame = sys._getframe(1)
        events.append(("sync", "synchronize", f"{frame.f_code.co_filename.rsplit('site-packages/', 1)[-1]}:{frame.f_lineno}"))
        return synchronize(*a, **k)
    accelerator.synchronize = counted_synchronize

    epoch_order = batches.epoch_order
    def counted(*a):
        order_calls.append(a)
        return epoch_order(*a)
    batches.epoch_order = counted

    reduced = metrics.code_row_similarity
    def checked(model, separated, base):
        got = reduced(model, separated, base)
        w = model.module.get_input_embeddings().weight
        with deepspeed.zero.GatheredParameters([w], modifier_rank=None):  # the reference: the whole matrix
            full = w.detach().float().clone()
        want = torch.nn.functional.cosine_similarity(full[torch.tensor(separated)], full[base:base + len(separated)], dim=-1)
        similarity.append(float((got - want).abs().max()) if got.numel() else None)
        return got
    metrics.code_row_similarity = checked

    slow = spec["export_sleep_s"]
    export_checkpoint = export.export_checkpoint
    def slow_export(*a, **k):
        time.sleep(slow)  # longer than hang_timeout_s
        return export_checkpoint(*a, **k)
    export.export_checkpoint = slow_export

    with HostTracker():
        status = train.main(argv)
    engine = engines[0]
    report = {
        "status": status, "events": events, "collectives": collectives, "order_calls": len(order_calls),
        "similarity_max_diff": similarity, "grad_accum_dtype": str(engine.optimizer.gradient_accumulation_dtype),
        "communication_data_type": str(engine.communication_data_type), "engine_device": str(engine.device),
    }
    rank = distributed.detect().rank
    json.dump(report, open(spec["report"] + f".rank{rank}", "w"))
    sys.exit(status)
    """
)
PROBE_STEPS, PROBE_EVAL, PROBE_LOG, PROBE_HANG = 13, 6, 5, 10


@pytest.fixture(scope="module")
def probe_run(setup_dir) -> Path:
    """The instrumented launch: bf16, 13 steps (2 epochs), evaluation every 6 steps, a slow export."""
    import shutil

    import datasets

    root = setup_dir / "probe"
    shutil.copytree(setup_dir / "data", root / "data")
    # held-out rows as `mmpt prepare --validation-fraction` writes them: DATA_DIR/validation, same columns
    rows = datasets.load_from_disk(str(root / "data" / "rows"))
    rows.select(range(7)).save_to_disk(str(root / "data" / "validation"))
    args = run_args(
        setup_dir,
        "text-code-clm",
        root / "out",
        data_dir=root / "data",
        precision="bf16",
        max_steps=PROBE_STEPS,
        eval_steps=PROBE_EVAL,
        logging_steps=PROBE_LOG,
        save_steps=0,
        hang_timeout_s=PROBE_HANG,
    )
    spec = {"argv": args, "report": str(root / "report.json"), "export_sleep_s": 2.5 * PROBE_HANG}
    run_script(root, "probe", PROBE, spec, 29661)
    return root


def probe_report(root: Path, rank: int) -> dict:
    return json.loads((root / f"report.json.rank{rank}").read_text())


@pytest.mark.heavy
def test_every_collective_runs_on_the_engine_device(probe_run):
    for rank in range(WORLD):
        report = probe_report(probe_run, rank)
        ours = [c for c in report["collectives"] if c["caller"]]
        assert {c["caller"] for c in ours} >= {"mmpt/train.py", "mmpt/validate.py", "mmpt/metrics.py"}, ours
        bad = [c for c in ours if c["host"] or c["device"] != c["engine"]]
        assert not bad, bad  # a host tensor in a collective: NCCL raises on it


@pytest.mark.heavy
def test_a_slow_rank0_export_ends_with_every_rank_at_exit_0(probe_run):
    # the launcher exited 0 (the fixture), so every rank did, although the export slept 2.5x hang_timeout_s
    for rank in range(WORLD):
        assert probe_report(probe_run, rank)["status"] == 0
    assert (probe_run / "out" / "final" / "model.safetensors").is_file()
    assert "exported" in (probe_run / "probe.log").read_text()


@pytest.mark.heavy
def test_bf16_gradients_accumulate_and_reduce_in_fp32(probe_run):
    for rank in range(WORLD):
        report = probe_report(probe_run, rank)
        assert report["grad_accum_dtype"] == "torch.float32" and report["communication_data_type"] == "torch.float32"
        scatters = [c for c in report["collectives"] if c["op"] == "reduce_scatter_tensor"]
        assert scatters and {c["dtype"] for c in scatters} == {"torch.float32"}, {c["dtype"] for c in scatters}
    losses = read_losses(probe_run / "out")
    assert all(math.isfinite(v) for v in losses.values()) and losses[PROBE_STEPS] < losses[PROBE_LOG] - 0.3, losses


@pytest.mark.heavy
def test_per_step_host_overheads(probe_run):
    for rank in range(WORLD):
        report = probe_report(probe_run, rank)
        assert report["order_calls"] == 2  # 13 steps of 11 per epoch: two epochs, two permutations
        # between a step's first collective (the global token count) and its report: the micro-batches
        step, syncs_in_micro_steps, steps = None, [], 0
        for event in report["events"]:
            if event[0] == "collective" and event[1] == 1:
                step, steps = [], steps + 1
            elif event[0] == "collective" and event[1] == 7:
                syncs_in_micro_steps += step or []
                step = None
            elif event[0] == "sync" and step is not None:
                step.append(event)
        assert steps == PROBE_STEPS and syncs_in_micro_steps == [], syncs_in_micro_steps
        # a step without a log line, an evaluation or a save makes exactly one: its report's tolist()
        per_step, current = [], None
        for event in report["events"]:
            if event[0] == "collective" and event[1] == 1:
                current = []
                per_step.append(current)
            elif event[0] == "sync" and current is not None:
                current.append(event)
        # no other wait of the host for the device, neither of mmpt's nor of DeepSpeed's (its
        # throughput timer is off); a log step adds only the read of the NL/code similarity it logs
        # (its gradient norm rides in the report)
        quiet = [k for k in range(1, PROBE_STEPS + 1) if k % PROBE_EVAL and k != PROBE_STEPS]
        assert PROBE_LOG in quiet
        for k in quiet:  # step k's events run from its first collective to the next step's
            got = [(e[1], e[2].split(":")[0].rsplit("/", 1)[-1]) for e in per_step[k - 1]]
            logged = [("cpu", "metrics.py")] if k % PROBE_LOG == 0 and rank == 0 else []
            assert got == [("tolist", "train.py"), *logged], (k, per_step[k - 1])
        # evaluation: the batches go to the device without the host waiting, one sync at its end
        blocking = [e for e in report["events"] if e[0] == "sync" and "mmpt/validate.py" in e[2] and e[1] != "tolist"]
        assert blocking == [], blocking
        # the similarity: only the separated rows (2S x H) travel, to rank 0, and they are the right ones
        sims = [c for c in report["collectives"] if c["caller"] == "mmpt/metrics.py"]
        from mmpt.data.separation import SeparationMap

        smap = SeparationMap.load(probe_run / "data")
        assert sims and {(c["op"], c["numel"]) for c in sims} == {("reduce", 2 * len(smap.separated) * ARCH["hidden_size"])}
        diffs = report["similarity_max_diff"]
        assert all(d is not None and d < 1e-6 for d in diffs) if rank == 0 else all(d is None for d in diffs), diffs


@pytest.mark.heavy
def test_validation_loss_every_eval_steps_matches_a_plain_forward(probe_run):
    import datasets
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM

    from mmpt.data.instances import sentinel_ids
    from mmpt.data.separation import SeparationMap
    from mmpt.data.tokenizer import load_tokenizer
    from mmpt.model.attention import packed_forward
    from mmpt.model.loss import modality_loss
    from mmpt.objectives import Collator

    out = probe_run / "out"
    records = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    evaluated = sorted(s for s, r in records.items() if "validation_loss" in r)
    assert evaluated == [PROBE_EVAL, 2 * PROBE_EVAL, PROBE_STEPS]
    assert all({"validation_loss_code", "validation_loss_nl", "loss"} <= set(records[s]) for s in evaluated)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for name in ("loss", "loss_code", "loss_nl"):
        assert [e.step for e in events.Scalars(f"validation/{name}")] == evaluated
    # the reference: the exported model, in the training dtype, over all 7 held-out rows in one batch
    final = out / "final"
    model = AutoModelForCausalLM.from_pretrained(final, attn_implementation="sdpa", dtype=torch.bfloat16)
    smap = SeparationMap.load(final)
    rows = datasets.load_from_disk(str(probe_run / "data" / "validation"))
    collator = Collator("text-code-clm", sentinel_ids(load_tokenizer(str(final))), smap, seed=7)
    batch = collator([dict(rows[i], row=i) for i in range(len(rows))])
    nl, code = smap.vocab_masks(model.get_input_embeddings().weight.shape[0])
    with torch.no_grad():
        s = modality_loss(packed_forward(model, batch), batch["labels"], batch["modality"], nl, code)
    want = {"loss": s.total_sum / s.total_count, "loss_code": s.code_sum / s.code_count, "loss_nl": s.nl_sum / s.nl_count}
    for name, value in want.items():
        got = records[PROBE_STEPS][f"validation_{name}"]
        assert abs(got - value.item()) <= 1e-2 * value.item(), (name, got, value.item())


@functools.cache  # the export test reuses the text-code-clm reference
def reference_losses(root: Path, objective: str, steps: int = STEPS) -> tuple[list[float], torch.nn.Module]:
    """The same training in one process of plain PyTorch: one batch of the step's global rows, AdamW."""
    from transformers import AutoModelForCausalLM

    from mmpt.batches import epoch_order
    from mmpt.data.instances import sentinel_ids
    from mmpt.data.prepare import load_prepared
    from mmpt.data.separation import SeparationMap
    from mmpt.data.tokenizer import load_tokenizer
    from mmpt.model.attention import packed_forward
    from mmpt.model.loss import modality_loss
    from mmpt.model.split_embeddings import extend_model
    from mmpt.objectives import Collator
    from mmpt.optim import lr_factor

    rows, _ = load_prepared(root / "data")
    smap = SeparationMap.load(root / "data")
    model = AutoModelForCausalLM.from_pretrained(root / "tied", attn_implementation="sdpa", dtype=torch.float32)
    extend_model(model, smap)
    nl_mask, code_mask = smap.vocab_masks(model.get_input_embeddings().weight.shape[0])
    params = [p for p in model.parameters()]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, WARMUP, MIN_LR / LR))
    collator = Collator(objective, sentinel_ids(load_tokenizer(str(root / "data" / "tokenizer"))), smap, seed=7)
    global_batch = BATCH * ACCUM * WORLD
    per_epoch = math.ceil(len(rows) / global_batch)
    losses = []
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        collator.epoch = epoch
        idx = epoch_order(len(rows), 7, epoch)[k * global_batch : (k + 1) * global_batch].tolist()
        got = rows[idx]
        batch = collator(
            [{c: got[c][j] for c in ("input_ids", "position_ids", "modality")} | {"row": i} for j, i in enumerate(idx)]
        )
        s = modality_loss(packed_forward(model, batch), batch["labels"], batch["modality"], nl_mask, code_mask)
        loss = s.total_sum / s.total_count
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses, model


@pytest.mark.heavy
def test_zero3_setup_copies_rows_on_every_rank(driver_run):
    from mmpt.data.separation import SeparationMap
    from mmpt.model.split_embeddings import PAD_MULTIPLE

    vocab = SeparationMap.load(driver_run / "data").vocab_size
    rows = -(-vocab // PAD_MULTIPLE) * PAD_MULTIPLE  # the extended vocabulary, padded
    for rank in range(WORLD):
        report = json.loads((driver_run / f"setup.json.rank{rank}").read_text())
        assert report["tied"]["tied"] and not report["untied"]["tied"]
        for name in ("tied", "untied"):
            built = report[name]["built"]
            assert built["tied"] == (name == "tied") and built["rows"] == built["vocab_size"] == rows, (rank, name, built)
            assert built["whole"] == [], (rank, name, built["whole"])  # nothing materialised whole on a rank
            assert all(0 < s < f for s, f in zip(built["shard"], built["full"])), (rank, name, built)
        for name, heads in (("tied", ("input",)), ("untied", ("input", "output"))):
            for head in heads:
                assert report[name][f"{head}_sharded"], (rank, name, head)
                assert report[name][f"{head}_copies_equal"], (rank, name, head)
                assert report[name][f"{head}_originals_kept"], (rank, name, head)


@pytest.mark.heavy
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_rank_zero3_matches_plain_pytorch(driver_run, objective):
    got = read_losses(driver_run / f"run-{objective}")
    want, _ = reference_losses(driver_run, objective)
    assert sorted(got) == list(range(1, STEPS + 1))
    rel = [abs(got[s + 1] - w) / abs(w) for s, w in enumerate(want)]
    assert max(rel) <= 1e-4, list(zip([got[s + 1] for s in range(STEPS)], want))
    assert want[-1] < want[0] - 0.5  # it learns: the comparison is not between two flat lines


@pytest.mark.heavy
def test_export_loads_and_gives_the_reference_loss(driver_run):
    from transformers import AutoModelForCausalLM

    from mmpt.data.instances import sentinel_ids
    from mmpt.data.prepare import load_prepared
    from mmpt.data.separation import SeparationMap
    from mmpt.data.tokenizer import load_tokenizer
    from mmpt.model.attention import packed_forward
    from mmpt.model.loss import modality_loss
    from mmpt.objectives import Collator

    final = driver_run / "run-text-code-clm" / "final"
    meta = json.loads((final / "mmpt.json").read_text())
    assert meta == {
        "layout": "docstring-first",
        "objective": "text-code-clm",
        "attn_implementation": "sdpa",
        "separation": "partial",
        "code_format": "plain",
        "prompt_style": "mmpt",
    }
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    exported = AutoModelForCausalLM.from_pretrained(final, attn_implementation="sdpa")
    assert exported.get_output_embeddings().weight is exported.get_input_embeddings().weight  # still tied
    _, reference = reference_losses(driver_run, "text-code-clm")
    rows, _ = load_prepared(driver_run / "data")
    smap = SeparationMap.load(final)
    collator = Collator("text-code-clm", sentinel_ids(load_tokenizer(str(final))), smap, seed=7)
    batch = collator([dict(rows[i], row=i) for i in range(6)])
    nl, code = smap.vocab_masks(exported.get_input_embeddings().weight.shape[0])
    with torch.no_grad():
        a = modality_loss(packed_forward(exported, batch), batch["labels"], batch["modality"], nl, code)
        b = modality_loss(packed_forward(reference, batch), batch["labels"], batch["modality"], nl, code)
    la, lb = (a.total_sum / a.total_count).item(), (b.total_sum / b.total_count).item()
    assert abs(la - lb) / lb <= 1e-4, (la, lb)


@pytest.mark.heavy
def test_each_file_of_a_real_checkpoint_is_fsynced_by_the_rank_that_wrote_it(driver_run):
    from mmpt.train_checkpoints import list_complete, owner

    newest = list_complete(driver_run / "run-text-code-clm")[-1]
    files = [p.name for p in newest.rglob("*") if p.is_file()]
    ranks = {name: owner(name) for name in files}
    assert {r for r in ranks.values()} == {0, 1}, ranks  # both ranks flush some, none flushes all
    # every file DeepSpeed or we name after rank 1 is rank 1's to flush, and only those
    assert {n for n, r in ranks.items() if r == 1} == {n for n in files if "rank_1_" in n or n == "rng_rank1.pt"}, ranks
    assert len([n for n, r in ranks.items() if r == 1]) >= 3, ranks  # model and optimizer shards, RNG


@pytest.mark.heavy
def test_tensorboard_and_metrics_jsonl(driver_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = driver_run / "run-text-code-clm"
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("loss", "loss_code", "loss_nl", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu", "peak_memory_gib"):
        assert f"train/{name}" in tags, name
        assert [e.step for e in events.Scalars(f"train/{name}")] == list(range(1, STEPS + 1))
    assert "embeddings/nl_code_cosine_mean" in tags and "embeddings/nl_code_cosine" in events.Tags()["histograms"]
    cos = [e.value for e in events.Scalars("embeddings/nl_code_cosine_mean")]
    assert cos[0] < 1.0 and cos[-1] < cos[0]  # the copies drift apart from their originals
    assert (out / "tensorboard" / "projector_config.pbtxt").is_file()
    losses = read_losses(out)
    tb = {e.step: e.value for e in events.Scalars("train/loss")}
    assert all(abs(tb[s] - losses[s]) <= 1e-5 * abs(losses[s]) for s in losses)
    code_only = json.loads((driver_run / "run-code-clm" / "metrics.jsonl").read_text().splitlines()[0])
    assert "loss_nl" not in code_only and code_only["loss"] == code_only["loss_code"]
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < record["mfu"] < 1 and record["tokens_per_s"] > 0 and record["peak_memory_gib"] > 0


def signal_job(launcher: subprocess.Popen, sig: int, timeout: float = 120) -> None:
    """Send `sig` to the launcher's process group (launchers and ranks) and wait until all have exited."""
    import psutil

    procs = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]
    os.killpg(launcher.pid, sig)
    launcher.wait(timeout=timeout)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    assert not alive, f"still running after {signal.Signals(sig).name}: {alive}"


def job_processes(out: Path) -> list:
    """Every process on the machine whose command line names the run's output dir: its launcher
    processes and its ranks, wherever they are in the process tree."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(str(out) in arg for arg in p.info["cmdline"] or ()):
            found.append(p)
    return found


def _wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and max(read_losses(out) or {0: 0}) >= step:
            return
        assert proc.poll() is None, "the run ended before the step it was to be interrupted at"
        time.sleep(0.2)
    raise TimeoutError(f"step {step} not reached")


def _signal_group_and_check_the_save(proc: subprocess.Popen, out: Path, sig: int, before_signal=None) -> int:
    """`sig` to the launcher's process group mid-run, as Ctrl-C or a scheduler's kill sends it;
    returns the step every rank saved at. Checks that every rank is a descendant of the launcher
    while it runs, and that none outlives it."""
    import psutil

    from mmpt.run_dir import read_run_state
    from mmpt.train_checkpoints import list_complete

    _wait_for_step(out, 2, proc)
    tree = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
    job = {p.pid for p in job_processes(out)} - {proc.pid}
    assert len(job) >= 2 and job <= tree, (tree, job)  # the ranks (and launch.py) run below the launcher
    if before_signal is not None:
        before_signal()
    os.killpg(proc.pid, sig)
    proc.wait(timeout=180)
    _, alive = psutil.wait_procs([psutil.Process(pid) for pid in tree if psutil.pid_exists(pid)], timeout=180)
    assert not alive and not job_processes(out), alive  # nothing outlives the launcher
    state = read_run_state(out)
    assert state["state"] == "stopped", state
    assert list_complete(out)[-1].name == f"step_{state['step']:08d}", _log_of(proc)[-3000:]
    return state["step"]


def _log_of(proc: subprocess.Popen) -> str:
    return Path(proc.stdout_path).read_text()


def _check_the_uninterrupted_losses(out: Path, reference: Path) -> None:
    want, got = read_losses(reference), read_losses(out)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert abs(got[step] - want[step]) <= 1e-6 * abs(want[step]), (step, got[step], want[step])


@pytest.mark.heavy
def test_sigterm_to_torchrun_saves_and_resumes_with_the_uninterrupted_losses(driver_run):
    """SIGTERM to torchrun's process group (a scheduler's kill): torchrun passes it on too and gives
    the workers --shutdown-timeout seconds; every rank saves and exits 0."""
    out = driver_run / "torchrun"
    args = ["mmpt/train.py", *run_args(driver_run, "text-code-clm", out, save_steps=100)]
    port = str(free_port())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    torchrun += ["--signals-to-handle", "SIGTERM,SIGINT,SIGUSR1", "--shutdown-timeout", "300", *args]
    stopped = _signal_group_and_check_the_save(launch(torchrun, driver_run / "torchrun1.log"), out, signal.SIGTERM)
    assert "save requested (SIGTERM), stopped after step" in (driver_run / "torchrun1.log").read_text()
    proc = launch(torchrun, driver_run / "torchrun2.log")
    assert proc.wait(timeout=300) == 0, _log_of(proc)[-3000:]
    assert f"resumed from step {stopped}" in _log_of(proc)
    assert json.loads((out / "run_state.json").read_text()) == {"state": "finished", "step": STEPS}
    _check_the_uninterrupted_losses(out, driver_run / "run-text-code-clm")


def _pipe_to_log(proc: subprocess.Popen, log: Path):
    """Copy the launcher's stdout (a pipe, as pdsh gives the ranks) into `log`; returns a function
    that closes the pipe, as a dying runner does."""
    import select
    import threading

    stop = threading.Event()

    def pump() -> None:
        fd = proc.stdout.fileno()
        with log.open("ab") as f:
            while not stop.is_set():
                if select.select([fd], [], [], 0.1)[0]:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        break
                    f.write(data)
                    f.flush()
        proc.stdout.close()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()

    return close


@pytest.mark.heavy
def test_ctrl_c_with_a_dead_reader_then_sigkill_then_resume_gives_the_uninterrupted_losses(driver_run):
    """Ctrl-C to the `deepspeed` launcher's process group after its stdout reader has gone away
    (a dead pdsh runner: every print is a broken pipe), then SIGKILL mid-run, then finish: same losses."""
    out = driver_run / "resumed"
    args = ["mmpt/train.py", *run_args(driver_run, "text-code-clm", out, save_steps=4)]
    # 1: SIGINT reaches every rank at once; they finish the step, save and exit 0 within the
    # launcher's grace period, though nobody reads what they print any more
    log1 = driver_run / "resume1.log"
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        deepspeed_cmd(29641, *args),
        stdout=subprocess.PIPE,
        stderr=(driver_run / "resume1.err").open("w"),
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    proc.stdout_path = log1
    close_pipe = _pipe_to_log(proc, log1)
    stopped = _signal_group_and_check_the_save(proc, out, signal.SIGINT, before_signal=close_pipe)
    assert "save requested" not in log1.read_text()  # rank 0 printed it into the broken pipe, and saved
    # 2: resume, then SIGKILL the whole process group mid-run (possibly mid-save)
    log2 = driver_run / "resume2.log"
    proc = launch(deepspeed_cmd(29642, *args), log2)
    _wait_for_step(out, stopped + 7, proc)
    signal_job(proc, signal.SIGKILL)
    assert f"resumed from step {stopped}" in log2.read_text()
    # 3: resume from the newest complete checkpoint and finish
    log3 = driver_run / "resume3.log"
    proc = launch(deepspeed_cmd(29643, *args), log3)
    assert proc.wait(timeout=300) == 0, log3.read_text()[-3000:]
    resumed_at = int(log3.read_text().split("resumed from step ")[1].split()[0])
    assert stopped < resumed_at <= stopped + 8
    _check_the_uninterrupted_losses(out, driver_run / "run-text-code-clm")


def _wait_until_gone(out: Path, timeout: float = 180) -> None:
    """Until no process names the run's output dir (its ranks, launch.py), wherever they are."""
    deadline = time.time() + timeout
    while job_processes(out):
        assert time.time() < deadline, f"still running: {job_processes(out)}"
        time.sleep(0.5)


@pytest.mark.heavy
def test_sigterm_to_the_deepspeed_runner_alone_saves_and_a_second_run_is_refused(driver_run):
    """`kill -TERM <runner pid>` (what a container runtime sends its PID 1, what a user types): on one
    node DeepSpeed's runner has no handler and dies alone, leaving launch.py and the ranks. The ranks
    see their launcher gone, save and stop; `--resume auto` continues with the uninterrupted losses.
    While the run lives, a second run on its output_dir is refused, naming the holder."""
    from mmpt.run_dir import read_run_state
    from mmpt.train_checkpoints import list_complete

    out = driver_run / "runner"
    args = ["mmpt/train.py", *run_args(driver_run, "text-code-clm", out, save_steps=100, hang_timeout_s=900)]
    proc = launch(deepspeed_cmd(free_port(), *args), driver_run / "runner1.log")
    _wait_for_step(out, 2, proc)
    os.killpg(proc.pid, signal.SIGSTOP)  # the run stays alive (and holds output_dir) however slowly the second one starts
    second = subprocess.run(
        [sys.executable, "-m", "mmpt.train", *args[1:]],
        env=dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1"),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert second.returncode == 2, second.stderr[-3000:]
    assert "is in use by a live run" in second.stderr and '"pid": ' in second.stderr and '"host": ' in second.stderr
    os.killpg(proc.pid, signal.SIGCONT)
    os.kill(proc.pid, signal.SIGTERM)  # the runner alone, not its process group
    proc.wait(timeout=60)
    _wait_until_gone(out)
    log = _log_of(proc)
    assert "is gone: saving and stopping" in log, log[-3000:]
    state = read_run_state(out)
    assert state["state"] == "stopped" and state["step"] < STEPS, state  # it did not train on to the end
    assert list_complete(out)[-1].name == f"step_{state['step']:08d}"
    proc = launch(deepspeed_cmd(free_port(), *args), driver_run / "runner2.log")
    assert proc.wait(timeout=300) == 0, _log_of(proc)[-3000:]
    assert f"resumed from step {state['step']}" in _log_of(proc)
    _check_the_uninterrupted_losses(out, driver_run / "run-text-code-clm")


# A one-process run whose export is interrupted once its weights are written (its configs not yet):
# `term`: a save request (SIGTERM) to the trainer; `kill`: SIGKILL to `mmpt export`.
INTERRUPTED_EXPORT = textwrap.dedent(
    """
    import os, signal, sys, time
    from mmpt import export, train

    mode, argv = sys.argv[1], sys.argv[2:]
    write_configs = export.write_inference_configs
    def interrupted(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGTERM)
        time.sleep(30)
        return write_configs(*a, **k)
    export.write_inference_configs = interrupted
    sys.exit(export.main(argv) if mode == "kill" else train.main(argv))
    """
)


@pytest.mark.heavy
def test_usr1_in_the_import_window_then_signals_during_the_export(setup_dir, tmp_path):
    """A one-process run: USR1 while torch is being imported (the trainer's handlers are not up yet)
    is a save request, not the default action's death; a save request during the final export
    abandons it (no half final/) and leaves the run "stopped", which a resume finishes; a SIGKILL
    of `mmpt export` mid-write leaves no folder behind."""
    from mmpt.run_dir import read_run_state

    out = tmp_path / "run"
    args = run_args(setup_dir, "code-clm", out, max_steps=3, save_steps=100, save_signal="SIGUSR1")
    script = tmp_path / "interrupted_export.py"
    script.write_text(INTERRUPTED_EXPORT)
    # 1: USR1 as soon as torch's library is mapped (mid-import, seconds before `main` runs)
    proc = launch([sys.executable, "-m", "mmpt.train", *args], tmp_path / "1.log")
    maps, deadline = Path(f"/proc/{proc.pid}/maps"), time.time() + 120
    while "libtorch_cpu" not in maps.read_text():
        assert time.time() < deadline and proc.poll() is None, "torch never loaded"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=300) == 0, _log_of(proc)[-3000:]
    assert "save requested (SIGUSR1), stopped after step 1" in _log_of(proc)
    assert read_run_state(out) == {"state": "stopped", "step": 1}
    # where to look, printed at the start (rank 0): output, TensorBoard and metrics
    assert f"tensorboard --logdir {out / 'tensorboard'}" in _log_of(proc) and str(out / "metrics.jsonl") in _log_of(proc)
    # 2: SIGTERM once the export has written the weights: abandoned, nothing half written
    proc = launch([sys.executable, str(script), "term", *args], tmp_path / "2.log")
    assert proc.wait(timeout=300) == 0, _log_of(proc)[-3000:]
    assert "during the export" in _log_of(proc)
    assert not (out / "final").exists() and not list(out.glob(".final.*")), list(out.iterdir())
    assert read_run_state(out) == {"state": "stopped", "step": 3}
    # 3: the resumed run has no step left: it exports, and the run is finished
    proc = launch([sys.executable, "-m", "mmpt.train", *args], tmp_path / "3.log")
    assert proc.wait(timeout=300) == 0, _log_of(proc)[-3000:]
    assert "resumed from step 3" in _log_of(proc) and (out / "final" / "generation_config.json").is_file()
    assert read_run_state(out) == {"state": "finished", "step": 3}
    # 4: `mmpt export` killed after writing the weights: its --out never appears
    again = tmp_path / "again"
    proc = subprocess.run([sys.executable, str(script), "kill", str(out), "--out", str(again)], cwd=ROOT, timeout=300)
    assert proc.returncode == -signal.SIGKILL and not again.exists()


@pytest.mark.heavy
def test_dead_rank_makes_the_others_exit_nonzero(driver_run):
    """Ranks started by hand (as srun would, without a launcher that kills siblings); kill rank 1."""
    out = driver_run / "dead"
    args = run_args(driver_run, "code-clm", out, max_steps=200, save_steps=0, hang_timeout_s=30)
    procs = []
    for rank in range(2):
        env = {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29651"}
        procs.append(launch([sys.executable, "mmpt/train.py", *args], driver_run / f"dead{rank}.log", env))
    _wait_for_step(out, 3, procs[0])
    procs[1].send_signal(signal.SIGKILL)
    t = time.time()
    rc = procs[0].wait(timeout=150)
    assert rc != 0 and time.time() - t < 120, (rc, time.time() - t)


@pytest.mark.parametrize(
    "override, message",
    [
        (["--data_dir", "/nonexistent/data"], "does not exist; run `mmpt prepare` first"),
        (["--objective", "mlm"], "unknown objective"),
        (["--learnig_rate", "1"], "unknown field 'learnig_rate'"),
        (["--tokenizer", "OTHER"], "the data was prepared with tokenizer"),
    ],
)
def test_bad_input_fails_fast_with_a_message(setup_dir, tmp_path, capsys, override, message):
    from mmpt.data.tokenizer import train_tokenizer
    from mmpt.train import main

    if "OTHER" in override:
        train_tokenizer(setup_dir / "pairs.jsonl", 300, tmp_path / "other")
        override = ["--tokenizer", str(tmp_path / "other")]
    argv = run_args(setup_dir, "code-clm", tmp_path / "out") + override
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)]
    assert main(argv + ["--save_signal", "SIGUSR1"]) == 2
    assert message in capsys.readouterr().err
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)] == handlers  # given back


def _dry_run(*args: str) -> tuple[str, dict]:
    """(the printed config part, the DeepSpeed JSON) of `mmpt train ... --dry-run`, run as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    proc = subprocess.run(
        [sys.executable, "-m", "mmpt", "train", "--config", "tiny-cpu", "--data_dir", "d", "--dry-run", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    head, _, ds = proc.stdout.partition("# DeepSpeed JSON\n")
    return head, json.loads(ds)


def test_dry_run_cuda_resolves_as_on_a_gpu_node_and_builds_no_deepspeed_op(monkeypatch):
    """`--dry-run --device cuda` on this CPU machine: the JSON a GPU node's `deepspeed.initialize` gets,
    and DeepSpeed's own optimizer choice for it is torch's fused AdamW, with no op build."""
    import deepspeed.ops.op_builder.builder as op_builder
    from deepspeed.runtime.engine import DeepSpeedEngine

    head, ds = _dry_run("--device", "cuda", "--world-size", "8", "--per_device_batch_size", "4", "--precision", "auto")
    assert "# device cuda, 8 rank(s), precision bf16" in head and "per_device_batch_size: 4" in head
    assert ds["bf16"]["enabled"] is True and ds["train_batch_size"] == 8 * 4 * ds["gradient_accumulation_steps"]
    assert ds["optimizer"]["params"]["torch_adam"] is True and ds["optimizer"]["params"]["fused"] is True

    builds = []
    for name in ("load", "jit_load"):
        monkeypatch.setattr(op_builder.OpBuilder, name, lambda self, *a, _n=name, **k: builds.append((_n, self.name)))

    def optimizer_for(params: dict) -> torch.optim.Optimizer:
        """What DeepSpeed's engine builds from the JSON's optimizer params (its own code path)."""
        params = dict(params)
        engine = types.SimpleNamespace(zero_use_cpu_optimizer=lambda: False)  # no offload in zero3.json
        cls, kwargs = DeepSpeedEngine.get_optimizer_configuration(engine, params, True)
        return cls([torch.nn.Parameter(torch.ones(3))], **params, **kwargs)

    opt = optimizer_for(ds["optimizer"]["params"])
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"] is True and builds == []
    # the control: what the JSON used to say on CUDA (no torch_adam) makes DeepSpeed build its FusedAdam op
    with contextlib.suppress(Exception):  # the op is a stub here: whatever follows its load may fail
        optimizer_for({k: v for k, v in ds["optimizer"]["params"].items() if k not in ("torch_adam", "fused")})
    assert builds and builds[0][1] == "fused_adam"


def test_dry_run_cpu_and_bad_options():
    head, ds = _dry_run("--device", "cpu")
    assert "# device cpu, 1 rank(s), precision fp32" in head
    assert ds["optimizer"]["params"]["torch_adam"] is True and "fused" not in ds["optimizer"]["params"]
    proc = subprocess.run(
        [sys.executable, "-m", "mmpt", "train", "--data_dir", "d", "--dry-run", "--device", "tpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "--device must be cuda or cpu, got 'tpu'" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "mmpt", "train", "--data_dir", "d", "--device", "cuda"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "options of --dry-run" in proc.stderr
