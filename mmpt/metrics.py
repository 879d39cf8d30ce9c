"""What a run reports: TensorBoard scalars, metrics.jsonl, MFU, peak memory, NL/code row similarity.

Watch a run with `tensorboard --logdir OUTPUT_DIR`. Only rank 0 writes; the similarity needs the
full embedding matrix, which every rank gathers together under ZeRO-3 (a collective).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

# Dense bf16 tensor-core peaks (FLOP/s) by substring of the device name; first match wins.
GPU_BF16_PEAK = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
    ("V100", 125e12),  # fp16: V100 has no bf16
)


def measure_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of this process's fp32 matmul (best of `repeats`): the CPU's practical peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def peak_flops(device: torch.device, override_tflops: float = 0.0) -> float:
    """FLOP/s per device for MFU: the override, the card's bf16 peak, or a measured CPU peak."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_BF16_PEAK:
            if key in name:
                return flops
        print(f"mmpt: unknown GPU {name!r}; MFU uses a measured matmul peak", file=sys.stderr)
        return _measure_gpu_peak(device)
    return measure_cpu_peak()


def _measure_gpu_peak(device: torch.device, size: int = 8192) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    torch.mm(a, a)
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(10):
        torch.mm(a, a)
    torch.cuda.synchronize(device)
    return 10 * 2 * size**3 / (time.perf_counter() - t)


def mfu(n_params: int, tokens_per_s: float, peak: float, world_size: int) -> float:
    """Model FLOPs utilisation: 6·N FLOPs per trained token (forward + backward), attention ignored."""
    return 6.0 * n_params * tokens_per_s / (peak * world_size)


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this rank: allocated accelerator memory on GPU, max resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _embedding_weight(model: torch.nn.Module) -> torch.nn.Parameter:
    return getattr(model, "module", model).get_input_embeddings().weight


def code_row_similarity(model: torch.nn.Module, separated: list[int], base_vocab_size: int) -> torch.Tensor:
    """(S,) cosine similarity of each separated token's NL row and its code copy (collective under ZeRO-3)."""
    import deepspeed

    weight = _embedding_weight(model)
    copies = torch.arange(base_vocab_size, base_vocab_size + len(separated))
    with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
        w = weight.detach().float().cpu()  # (V, H), whole on every rank while gathered
        nl, code = w[torch.as_tensor(separated, dtype=torch.long)], w[copies]  # (S, H) each
    return torch.nn.functional.cosine_similarity(nl, code, dim=-1)


def separated_rows(model: torch.nn.Module, separated: list[int], base_vocab_size: int) -> torch.Tensor:
    """(2S, H): the NL rows then the code rows of the separated tokens (collective under ZeRO-3)."""
    import deepspeed

    weight = _embedding_weight(model)
    idx = torch.cat([torch.as_tensor(separated, dtype=torch.long), torch.arange(base_vocab_size, base_vocab_size + len(separated))])
    with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
        return weight.detach().float().cpu()[idx]


class MetricsLog:
    """Rank 0's TensorBoard writer (OUTPUT_DIR/tensorboard) and OUTPUT_DIR/metrics.jsonl; no-op elsewhere."""

    def __init__(self, output_dir: str | Path, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        self.jsonl = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(out / "tensorboard"))
            self.jsonl = (out / "metrics.jsonl").open("a")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        self.writer.flush()

    def similarity(self, step: int, sims: torch.Tensor, tokens: list[str]) -> None:
        """Mean and histogram of the NL/code cosine, and the first few tokens by name."""
        if not self.enabled or sims.numel() == 0:
            return
        self.writer.add_scalar("embeddings/nl_code_cosine_mean", sims.mean().item(), step)
        self.writer.add_histogram("embeddings/nl_code_cosine", sims, step)
        for tok, sim in list(zip(tokens, sims.tolist()))[:8]:
            self.writer.add_scalar(f"embeddings/cosine/{tok!r}", sim, step)

    def projector(self, step: int, rows: torch.Tensor, tokens: list[str]) -> None:
        """Both rows of every separated token in TensorBoard's projector, labelled token and modality."""
        if not self.enabled or rows.numel() == 0:
            return
        meta = [[repr(t), "nl"] for t in tokens] + [[repr(t), "code"] for t in tokens]
        self.writer.add_embedding(rows, metadata=meta, metadata_header=["token", "modality"], global_step=step, tag="separated_rows")
        self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()
