"""Extra peak memory of building one flex_attention BlockMask of packed rows: ours vs eager `create_block_mask`.

    python bench/block_mask.py [--batch 8] [--seq 8192] [--limit-gb 12]

The rows are packed as training packs them: instances of 20 to 1500 tokens (seeded) and tail
pads, with an NL prefix per instance (prefix-code-clm, the mask with the most partial blocks).
Each variant runs in a fresh process: it builds the (B, N) position ids and prefix flags, builds
one mask at a tiny size (lazy imports and first-call set-up are not counted), resets the kernel's
resident-memory high-water mark (`echo 5 > /proc/self/clear_refs`), builds the mask, and reports
VmHWM - VmRSS-before. `ours` is `mmpt.model.attention.block_mask` (from instance boundaries and
prefix lengths); `eager` is torch's `create_block_mask` over the same rule (what mmpt used before),
which evaluates it at every (q, k). The eager child is capped at --limit-gb of address space beyond
its start, so that a size it cannot build fails instead of exhausting a shared machine; it then
reports "> limit". Both masks are checked equal block for block when both are built.
Goal: ours <= 64 MB at B=8, N=8192.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from loss_memory import _status_kb  # bench/: the same /proc/self/status reader

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


def packed(batch: int, seq: int, seed: int = 0):
    """(position_ids, prefix) (B, N) of rows packed with instances of 20..1500 tokens and tail pads."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    pos, prefix = np.zeros((batch, seq), np.int64), np.zeros((batch, seq), bool)
    for r in range(batch):
        start = 0
        while True:
            k = int(rng.integers(20, 1500))
            if start + k > seq:
                break  # the rest of the row stays pads: one instance each at position 0
            pos[r, start : start + k] = np.arange(k)
            prefix[r, start : start + int(rng.integers(1, k // 2 + 2))] = True
            start += k
    return torch.from_numpy(pos), torch.from_numpy(prefix)


def build(variant: str, pos, prefix):
    from torch.nn.attention.flex_attention import create_block_mask

    from mmpt.model.attention import block_mask, instance_ids

    if variant == "ours":
        return block_mask(pos, prefix)
    seg = instance_ids(pos)  # the rule as mmpt's mask_mod wrote it before, evaluated densely

    def mask_mod(b, h, q, k):
        return (seg[b, q] == seg[b, k]) & ((k <= q) | (prefix[b, q] & prefix[b, k]))

    return create_block_mask(mask_mod, pos.shape[0], None, pos.shape[1], pos.shape[1], device="cpu")


def measure(variant: str, a: argparse.Namespace) -> dict:
    """One variant in this process: extra resident peak (bytes) and seconds of one build."""
    import torch

    torch.set_num_threads(1)
    build(variant, *packed(1, 256, seed=1))  # warm-up: imports, first-call set-up
    pos, prefix = packed(a.batch, a.seq)
    if variant == "eager":
        vm_kb = _status_kb("VmSize")
        limit = vm_kb * 1024 + int(a.limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    try:
        mask = build(variant, pos, prefix)
    except (MemoryError, RuntimeError) as e:
        return {"failed": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    seconds = time.perf_counter() - t0
    extra = (_status_kb("VmHWM") - before) * 1024
    blocks = {
        name: torch.cat([getattr(mask, f"{name}_num_blocks").flatten(), getattr(mask, f"{name}_indices").flatten()]).tolist()
        for name in ("kv", "full_kv")
    }
    return {"extra": extra, "seconds": seconds, "blocks": blocks, "sparsity": mask.sparsity()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--limit-gb", type=float, default=12.0, help="address space the eager build may take")
    p.add_argument("--variant", choices=("ours", "eager"), help=argparse.SUPPRESS)  # the child's side
    a = p.parse_args()
    if a.variant:
        print(json.dumps(measure(a.variant, a)))
        return 0
    results = {}
    for variant in ("ours", "eager"):
        cmd = [sys.executable, __file__, "--variant", variant, f"--batch={a.batch}", f"--seq={a.seq}", f"--limit-gb={a.limit_gb}"]
        env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'bench'}", OMP_NUM_THREADS="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if proc.returncode != 0 and variant == "ours":
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        out = proc.stdout.strip().splitlines()
        results[variant] = json.loads(out[-1]) if proc.returncode == 0 and out else {"failed": proc.stderr[-300:]}
    ours, eager = results["ours"], results["eager"]
    print(
        f"B={a.batch} N={a.seq}: one BlockMask of 128x128 blocks, prefix-code-clm rows ({ours['sparsity']:.1f}% of blocks skipped)"
    )
    print(f"{'ours (instance boundaries)':32s} extra peak {ours['extra'] / MB:9.1f} MB   {ours['seconds']:7.2f} s")
    if "failed" in eager:
        print(f"{'eager create_block_mask':32s} extra peak > {a.limit_gb:.0f} GB limit ({eager['failed']})")
    else:
        print(f"{'eager create_block_mask':32s} extra peak {eager['extra'] / MB:9.1f} MB   {eager['seconds']:7.2f} s")
        same = ours["blocks"] == eager["blocks"] or a.seq % 128 != 0  # a ragged last block: torch may call it full
        print(f"ratio eager / ours: {eager['extra'] / max(ours['extra'], 1):.0f}x less; same blocks: {same}")
    ok = ours["extra"] <= 64 * MB
    print(f"goal: ours <= 64 MB at B=8, N=8192: {'met' if ok else 'NOT met'} ({ours['extra'] / MB:.1f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
