"""The GPU kit (`bash bench/gpu.sh --quick`): what one GPU says about mmpt's training in a few minutes.

    python bench/gpu_quick.py missing                       modules the kit needs that this Python lacks
    python bench/gpu_quick.py run --device cuda|cpu --out DIR

On one GPU, a ~1.5B Qwen2-shaped model (Qwen2.5-Coder-1.5B's layers, 151,646-token vocabulary,
tied head, random init: no hub) on packed rows of 2048 tokens, through mmpt's own pieces: the
DeepSpeed JSON (`deepspeed_config`, ZeRO-3, bf16, torch's fused AdamW), `build_model`, the fused
loss (`packed_loss`) and `train_checkpoints.save`. Each part runs in a process of its own (`leg`), so that
one's memory is not another's peak:
- train-flex, train-sdpa: tokens/s and MFU (median step of the timed ones) and peak GPU memory;
  train-flex also times one checkpoint save;
- loss-stock, loss-fused: the extra peak memory of the head + loss, forward and backward, of the
  stock head and cross-entropy (the (B, N, V) logits) against the fused loss;
- parity: loss and gradients of mmpt's path (packed rows, the fast attention, the fused loss)
  against a plain Hugging Face step (each instance alone, the model's own loss), fp32, TF32 off.
`--device cpu` runs the same legs on a tiny shape (what CI runs, tests/test_bench_gpu.py), with
sdpa for the flex leg's parity and no flex training (torch has no flex backward on CPU). Nothing
here needs `datasets` or the hub: rows are synthetic instances packed as `mmpt prepare` packs them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What the kit imports beyond a GPU image's torch, transformers and accelerate (module -> its wheel).
# DeepSpeed 0.19.8 built with DS_BUILD_OPS=0 is pure Python (py3-none-any, no op inside: mmpt's
# optimizer is torch's fused AdamW); `import deepspeed` needs hjson, einops, msgpack (its pure-Python
# build, MSGPACK_PUREPYTHON=1) and pydantic (its core is compiled: one wheel per Python version);
# py-cpuinfo is for its CPU op builders; numpy, packaging, psutil, tqdm and pyyaml come with
# transformers and accelerate. ninja (JIT builds) is not needed. `bash bench/gpu.sh --fetch-wheels`
# fills bench/wheels with all of them.
NEEDED = {
    "deepspeed": "deepspeed",
    "hjson": "hjson",
    "einops": "einops",
    "msgpack": "msgpack",
    "cpuinfo": "py-cpuinfo",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",
    "annotated_types": "annotated-types",
    "typing_inspection": "typing-inspection",
    "typing_extensions": "typing-extensions",
    "numpy": "numpy",
    "packaging": "packaging",
    "psutil": "psutil",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
}
QWEN_1_5B = dict(
    model_type="qwen2",
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
    rope_theta=1_000_000.0,
)
TINY = dict(QWEN_1_5B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
SHAPES = {  # per device: model, vocabulary, rows of N tokens per step, instance lengths, steps (warm-up, timed)
    "cuda": dict(arch=QWEN_1_5B, vocab=151_646, batch=4, seq=2048, inst=(100, 600), warmup=2, timed=6, precision="bf16"),
    "cpu": dict(arch=TINY, vocab=512, batch=2, seq=128, inst=(8, 40), warmup=1, timed=2, precision="fp32"),
}
SENTINELS = dict(comments=1, python=2, eot=3, mask=4, pad=0, bos=3)


def missing() -> list[str]:
    """The wheels of `NEEDED` modules this interpreter cannot import."""
    return sorted({wheel for module, wheel in NEEDED.items() if importlib.util.find_spec(module) is None})


# ---- synthetic packed rows ------------------------------------------------------------------------


def instances(vocab: int, lengths: tuple[int, int], count: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Random docstring-first instances `<comments> NL <python> CODE <eot>` with their modality."""
    import random

    from mmpt.modality import CODE, NL

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(*lengths)
        n_doc = max(1, n // 4)
        doc = [rng.randrange(8, vocab) for _ in range(n_doc)]
        code = [rng.randrange(8, vocab) for _ in range(n - n_doc)]
        ids = [SENTINELS["comments"], *doc, SENTINELS["python"], *code, SENTINELS["eot"]]
        out.append((ids, [NL] * (n_doc + 2) + [CODE] * (n - n_doc + 1)))
    return out


def pack(items, seq: int) -> list[dict]:
    """Rows of at most `seq` tokens, instances in order (next fit), as `mmpt prepare` stores them."""
    rows, row = [], {"input_ids": [], "position_ids": [], "modality": []}
    for ids, modality in items:
        if len(row["input_ids"]) + len(ids) > seq and row["input_ids"]:
            rows.append(row)
            row = {"input_ids": [], "position_ids": [], "modality": []}
        row["input_ids"] += ids
        row["position_ids"] += list(range(len(ids)))
        row["modality"] += modality
    rows.append(row)
    return [dict(r, row=i) for i, r in enumerate(rows)]


def batches(shape: dict, smap, objective: str, n: int, seed: int = 0) -> list[dict]:
    """`n` collated batches of `shape['batch']` full rows, padded to `shape['seq']` (as under flex)."""
    from mmpt.data.instances import SentinelIds
    from mmpt.objectives import Collator

    collate = Collator(objective, SentinelIds(**SENTINELS), smap, seed=seed, pad_to=shape["seq"])
    mean = sum(shape["inst"]) // 2 + 3
    rows = pack(instances(shape["vocab"], shape["inst"], n * shape["batch"] * shape["seq"] // mean + 8, seed), shape["seq"])
    return [collate(rows[k * shape["batch"] : (k + 1) * shape["batch"]]) for k in range(n)]


# ---- the legs (each in its own process) ----------------------------------------------------------


def _join_one_rank_group(device: str) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    if device == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    from mmpt import distributed

    distributed.init(distributed.detect(), timeout_s=600)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def leg_train(attn: str, a: argparse.Namespace) -> dict:
    """ZeRO-3 training steps of the shape with `attn`; tokens/s, MFU, peak memory; with --save, one save."""
    _join_one_rank_group(a.device)
    import deepspeed
    import torch
    from deepspeed.accelerator import get_accelerator

    from mmpt import metrics, train_checkpoints
    from mmpt.config import TrainConfig, deepspeed_config
    from mmpt.data.separation import SeparationMap
    from mmpt.model.build import build_model
    from mmpt.model.fused_loss import packed_loss
    from mmpt.optim import param_groups

    shape = SHAPES[a.device]
    device = torch.device(get_accelerator().current_device_name())
    smap = SeparationMap("none", shape["vocab"])
    config = TrainConfig(
        model=dict(shape["arch"]),
        data_dir="synthetic",
        attn_implementation=attn,
        per_device_batch_size=shape["batch"],
        precision=shape["precision"],
        gradient_checkpointing=False,
        learning_rate=1e-4,
        min_learning_rate=1e-5,
    )
    ds = deepspeed_config(config, 1, shape["precision"], device.type)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    model = build_model(config, smap, ds, shape["precision"], max_seq_length=shape["seq"])
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.01), config=ds)
    built_s = time.perf_counter() - t
    emb = engine.module.get_input_embeddings().weight
    nl, code = (m.to(device) for m in smap.vocab_masks(int(getattr(emb, "ds_shape", emb.shape)[0])))
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    data = batches(shape, smap, "text-code-clm", shape["warmup"] + shape["timed"])
    seconds, tokens, losses = [], [], []
    for k, batch in enumerate(data):
        n_tokens = int((batch["input_ids"] != SENTINELS["pad"]).sum())  # the tail padding is no work done
        batch = {name: v.to(device) for name, v in batch.items()}
        _sync(device)
        t = time.perf_counter()
        s = packed_loss(engine, batch, nl, code)
        engine.backward(s.total_sum / s.total_count)
        engine.step()
        _sync(device)
        if k >= shape["warmup"]:
            seconds.append(time.perf_counter() - t)
            tokens.append(n_tokens)
        losses.append(float((s.total_sum / s.total_count).detach()))
        if k == 0:
            first_s = time.perf_counter() - t  # flex compiles in its first step
    step_s = statistics.median(seconds)
    tps = statistics.median(n / s for n, s in zip(tokens, seconds))
    peak = metrics.peak_flops(device)
    out = {
        "attn": attn,
        "params": n_params,
        "build_s": built_s,
        "first_step_s": first_s,
        "step_s": step_s,
        "tokens_per_s": tps,
        "mfu": metrics.mfu(n_params, tps, peak, 1),
        "peak_tflops": peak / 1e12,
        "peak_memory_gib": metrics.peak_memory_gib(device),
        "losses": losses,
    }
    if a.save:
        where = Path(a.out) / f"ckpt-{attn}"
        _sync(device)
        t = time.perf_counter()
        path = train_checkpoints.save(engine, where, len(data), {"n_rows": 0}, lambda d: d.mkdir(parents=True, exist_ok=True), 1)
        out["save_s"] = time.perf_counter() - t
        out["save_gib"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30
    return out


def leg_loss(variant: str, a: argparse.Namespace) -> dict:
    """Extra peak memory of the head + loss, forward and backward: `stock` (logits, then
    `modality_loss`) or `fused` (`fused_modality_loss`), on the shape's B x N x V, hidden size H."""
    import torch

    from mmpt.data.separation import SeparationMap
    from mmpt.modality import CODE
    from mmpt.model.fused_loss import fused_modality_loss
    from mmpt.model.loss import modality_loss

    shape = SHAPES[a.device]
    device = torch.device(a.device)
    dtype = torch.bfloat16 if shape["precision"] == "bf16" else torch.float32
    b, n, v, h = max(1, shape["batch"] // 2), shape["seq"], shape["vocab"], shape["arch"]["hidden_size"]
    torch.manual_seed(0)
    smap = SeparationMap("none", v)
    nl, code = (m.to(device) for m in smap.vocab_masks(v))
    hidden = (torch.randn(b, n, h, dtype=dtype, device=device) * 0.5).requires_grad_()
    weight = (torch.randn(v, h, dtype=dtype, device=device) * 0.02).requires_grad_()
    modality = (torch.arange(n, device=device) * 2 // n).repeat(b, 1)  # half NL, half code targets
    labels = torch.randint(0, v, (b, n), device=device)
    before = _memory_mark(device)
    if variant == "stock":
        s = modality_loss(hidden @ weight.T, labels, modality, nl, code)
    else:
        s = fused_modality_loss(hidden, weight, None, labels, modality, nl, code)
    (s.total_sum / s.total_count).backward()
    _sync(device)
    return {
        "variant": variant,
        "extra_gib": (_memory_peak(device) - before) / 2**30,
        "loss": float((s.total_sum / s.total_count).detach()),
        "logits_gib": b * n * v * hidden.element_size() / 2**30,
        "shape": f"B={b} N={n} V={v:,} H={h} {shape['precision']}",
        "code_targets": int((modality == CODE).sum()),
    }


def _memory_mark(device) -> int:
    """Start a peak-memory window; returns the bytes in use at its start (GPU: allocated, CPU: resident)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _status_kb("VmRSS") * 1024


def _memory_peak(device) -> int:
    import torch

    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def leg_parity(attn: str, a: argparse.Namespace) -> dict:
    """mmpt's step (packed rows, `attn`, the fused loss) against a plain Hugging Face step (each
    instance alone through the stock model and its own loss), same weights, fp32, TF32 off: the
    relative difference of the loss and the worst parameter's relative L2 gradient difference.
    On the GPU the model has the 1.5B shape's width and vocabulary and 2 of its layers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.data.separation import SeparationMap
    from mmpt.model.fused_loss import packed_loss

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    shape = dict(SHAPES[a.device], batch=1)
    device = torch.device(a.device)
    spec = dict(shape["arch"], num_hidden_layers=2)
    model_type = spec.pop("model_type")
    smap = SeparationMap("none", shape["vocab"])
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **spec, vocab_size=shape["vocab"])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    model.eval()  # no dropout: both sides compute one function
    nl, code = (m.to(device) for m in smap.vocab_masks(shape["vocab"]))
    [batch] = batches(shape, smap, "text-code-clm", 1, seed=1)
    batch = {k: v.to(device) for k, v in batch.items()}

    def grads() -> dict:
        out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return out

    s = packed_loss(model, batch, nl, code)
    ours = s.total_sum / s.total_count
    ours.backward()
    have = grads()
    # the plain step: each instance of the row alone, the model's own causal mask and loss (mean over its targets)
    model.set_attn_implementation("sdpa")
    ids, starts = batch["input_ids"][0], (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    pads = int((ids == SENTINELS["pad"]).sum())
    bounds = [*starts, len(ids)]
    total, count = 0.0, 0
    for lo, hi in zip(bounds, bounds[1:]):
        one = ids[lo:hi][None]
        if hi - lo < 2 or bool((one == SENTINELS["pad"]).all()):
            continue  # a tail pad: an instance of its own that trains nothing
        loss = model(input_ids=one, labels=one).loss
        total, count = total + loss * (hi - lo - 1), count + (hi - lo - 1)
    (total / count).backward()
    want = grads()
    worst = max(((have[n] - g).norm() / g.norm().clamp_min(1e-12)).item() for n, g in want.items() if g.norm() > 0)
    result = {
        "attn": attn,
        "loss_mmpt": ours.item(),
        "loss_hf": (total / count).item(),
        "targets_mmpt": int(s.total_count),
        "targets_hf": count,
        "tail_pads": pads,
        "grad_rel_diff": worst,
    }
    result["loss_rel_diff"] = abs(result["loss_mmpt"] - result["loss_hf"]) / abs(result["loss_hf"])
    result["ok"] = result["loss_rel_diff"] <= 1e-5 and worst <= 1e-4 and result["targets_mmpt"] == count
    return result


LEGS = {"train": leg_train, "loss": leg_loss, "parity": leg_parity}


# ---- the run: legs in order, then the summary -----------------------------------------------------


def run(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    flex = "flex_attention" if a.device == "cuda" else "sdpa"  # CPU: no flex backward
    plan = [("parity", flex), ("loss", "stock"), ("loss", "fused"), ("train", "sdpa")]
    if a.device == "cuda":
        plan.insert(3, ("train", "flex_attention"))
    results, status = {}, 0
    if a.device == "cuda":  # flex_attention compiles at run time: Triton builds a C helper against Python.h
        from mmpt.doctor import DoctorConfig, check_compiler

        for r in check_compiler(DoctorConfig(archs=("qwen2",), attn=("flex_attention",))):
            print(f"{'ok  ' if r.ok else 'FAIL'}  compiler  {r.detail}", flush=True)
    for name, arg in plan:
        key = f"{name}-{arg}"
        cmd = [sys.executable, __file__, "leg", name, arg, "--device", a.device, "--out", str(out)]
        if name == "train" and not any(k.startswith("train-") for k in results):
            cmd.append("--save")  # one checkpoint save, by the first training leg (flex on a GPU)
        t = time.perf_counter()
        print(f"-- {key}", flush=True)
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"),
            timeout=a.timeout,
        )
        wall = time.perf_counter() - t
        result_file = out / f"{key}.json"
        if proc.returncode != 0 or not result_file.is_file():
            print(f"-- {key}: FAILED (exit {proc.returncode}, {wall:.0f} s; traceback above)", flush=True)
            status = 1
            continue
        results[key] = json.loads(result_file.read_text()) | {"wall_s": wall}
    lines = summary(results, a.device)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bad = [k for k, r in results.items() if r.get("ok") is False]
    return 1 if status or bad or len(results) != len(plan) else 0


def summary(results: dict, device: str) -> list[str]:
    lines = []
    for key, r in results.items():
        if key.startswith("train-"):
            line = (
                f"SUMMARY {key}: {r['tokens_per_s']:,.0f} tok/s, MFU {100 * r['mfu']:.1f}% (peak {r['peak_tflops']:.3g} TFLOP/s), "
                f"peak memory {r['peak_memory_gib']:.1f} GiB, step {r['step_s']:.3f} s, first step {r['first_step_s']:.1f} s, "
                f"{r['params'] / 1e6:,.1f}M parameters, built in {r['build_s']:.0f} s"
            )
            if "save_s" in r:
                line += f"; one checkpoint save {r['save_s']:.1f} s ({r['save_gib']:.1f} GiB)"
            lines.append(line)
    if "loss-stock" in results and "loss-fused" in results:
        stock, fused = results["loss-stock"], results["loss-fused"]
        ratio = stock["extra_gib"] / max(fused["extra_gib"], 1e-9)
        lines.append(
            f"SUMMARY loss memory ({stock['shape']}): fused {fused['extra_gib']:.2f} GiB vs stock CE {stock['extra_gib']:.2f} GiB "
            f"({ratio:.1f}x less; logits alone {stock['logits_gib']:.2f} GiB); losses {fused['loss']:.6f} / {stock['loss']:.6f}"
        )
    for key, r in results.items():
        if key.startswith("parity-"):
            lines.append(
                f"SUMMARY parity {r['attn']} + fused loss vs a plain HF step (fp32): loss rel {r['loss_rel_diff']:.1e}, "
                f"grad rel {r['grad_rel_diff']:.1e}, targets {r['targets_mmpt']}/{r['targets_hf']}: {'ok' if r['ok'] else 'MISMATCH'}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("missing")
    for name in ("run", "leg"):
        s = sub.add_parser(name)
        if name == "leg":
            s.add_argument("leg", choices=LEGS)
            s.add_argument("arg")
            s.add_argument("--save", action="store_true")
        s.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        s.add_argument("--out", required=True)
        s.add_argument("--timeout", type=float, default=600)
    a = p.parse_args(argv)
    if a.cmd == "missing":
        print("\n".join(missing()))
        return 0
    if a.cmd == "run":
        return run(a)
    result = LEGS[a.leg](a.arg, a)
    Path(a.out, f"{a.leg}-{a.arg}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
