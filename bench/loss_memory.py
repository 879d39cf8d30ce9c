"""Extra peak memory of the modality loss, forward + backward: stock head + `modality_loss` vs the fused loss.

    python bench/loss_memory.py [--batch 2] [--seq 2048] [--vocab 151936] [--hidden 896] [--dtype bf16]

Defaults: Qwen2-0.5B's head (151,936 x 896, bf16) on 2 packed rows of 2048 tokens, half NL and
half code targets, a partial separation. Each variant runs in a fresh process (so neither sees the
other's freed memory): it builds the inputs (hidden states and head weight, both requiring grad),
resets the kernel's resident-memory high-water mark (`echo 5 > /proc/self/clear_refs`, which resets
VmHWM), runs forward and backward, and reports VmHWM - VmRSS-before: every byte the loss made
resident, logits, softmax temporaries and the gradients of hidden states and weight included (the
weight gradient, V x H, is the same for both paths and is shown apart). Goal: fused <= 0.6 GB and
>= 10x less than the stock path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now; VmHWM: its high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(variant: str, a: argparse.Namespace) -> dict:
    """One variant in this process: extra resident peak (bytes) and seconds of forward + backward."""
    import torch

    from mmpt.data.separation import SeparationMap
    from mmpt.modality import CODE
    from mmpt.model.fused_loss import fused_modality_loss
    from mmpt.model.loss import modality_loss

    torch.manual_seed(0)
    dtype = getattr(torch, DTYPES[a.dtype])
    v, base = a.vocab, a.vocab - 4096  # the last 4096 rows: code copies of separated tokens, then padding
    smap = SeparationMap("partial", base, list(range(0, 3 * 4000, 3)))
    nl, code = smap.vocab_masks(v)
    hidden = (torch.randn(a.batch, a.seq, a.hidden, dtype=dtype) * 0.5).requires_grad_()
    weight = (torch.randn(v, a.hidden, dtype=dtype) * 0.02).requires_grad_()
    modality = (torch.arange(a.seq) * 2 // a.seq).repeat(a.batch, 1)  # first half NL, second half code
    labels = torch.randint(0, base, (a.batch, a.seq))
    labels = torch.where(modality == CODE, smap.to_code(labels), labels)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    if variant == "stock":
        logits = hidden @ weight.T  # (B, N, V): what the model's lm_head returns
        s = modality_loss(logits, labels, modality, nl, code)
    else:
        s = fused_modality_loss(hidden, weight, None, labels, modality, nl, code)
    (s.total_sum / s.total_count).backward()
    seconds = time.perf_counter() - t0
    extra = (_status_kb("VmHWM") - before) * 1024
    return {
        "extra": extra,
        "seconds": seconds,
        "loss": (s.total_sum / s.total_count).item(),
        "weight_grad": weight.grad.numel() * weight.grad.element_size(),
        "logits": a.batch * a.seq * v * torch.empty((), dtype=dtype).element_size(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--variant", choices=("stock", "fused"), help=argparse.SUPPRESS)  # the child's side
    a = p.parse_args()
    if a.variant:
        print(json.dumps(measure(a.variant, a)))
        return 0
    results = {}
    for variant in ("stock", "fused"):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k}={getattr(a, k)}" for k in ("batch", "seq", "vocab", "hidden", "dtype")
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if proc.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.splitlines()[-1])
    stock, fused = results["stock"], results["fused"]
    print(
        f"B={a.batch} N={a.seq} V={a.vocab:,} H={a.hidden} {a.dtype}: logits would be {stock['logits'] / GB:.2f} GB; "
        f"the weight gradient (both paths) is {stock['weight_grad'] / GB:.2f} GB"
    )
    for name, r in (("stock head + modality_loss", stock), ("fused head + loss", fused)):
        print(f"{name:28s} extra peak {r['extra'] / GB:6.2f} GB   {r['seconds']:6.1f} s   loss {r['loss']:.6f}")
    ratio = stock["extra"] / max(fused["extra"], 1)
    ok = fused["extra"] <= 0.6 * GB and ratio >= 10
    print(f"ratio stock / fused: {ratio:.1f}x less   (goal: fused <= 0.6 GB and >= 10x less: {'met' if ok else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
