"""What a run reports: TensorBoard scalars, metrics.jsonl, MFU, peak memory, NL/code row similarity.

Watch a run with `tensorboard --logdir OUTPUT_DIR`. Only rank 0 writes; the similarity needs the
separated tokens' rows, which the ranks reduce to rank 0 under ZeRO-3 (a collective). When a
record is written is `LogWindow`'s to say (every `logging_steps` steps, the last, each validation).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mmpt.distributed import to_device
from mmpt.jsonl import JsonlAppender

# Dense bf16 tensor-core peaks (FLOP/s) by substring of the device name; first match wins, so a
# variant comes before its family: NVIDIA's datasheets give bf16 with sparsity, twice the dense rate
# (SXM 1,979, NVL 1,671, PCIe 1,513 TFLOP/s), and the NVL cards (H100 NVL, H200 NVL; PCIe form
# factor, lower clocks) report names such as "NVIDIA H100 NVL" that also contain "H100".
GPU_BF16_PEAK = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 NVL", 835e12),
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


def gather_rows(weight: torch.nn.Parameter, rows: torch.Tensor) -> torch.Tensor | None:
    """(R, H) fp32 copy of rows `rows` of a (V, H) matrix on rank 0; None on the other ranks.

    Under ZeRO-3 each rank of the parameter's group holds one contiguous slice (`ds_tensor`, the
    same length on every rank, the last one padded) of the flattened matrix. Each rank writes the
    elements of the wanted rows that fall in its slice into an (R·H,) buffer of zeros, and one sum
    reduce to rank 0 assembles them: R·H elements travel instead of the whole V·H matrix being
    gathered on every rank. A whole parameter (no ZeRO-3, or one kept whole) is read directly.
    """
    import torch.distributed as torch_dist
    from deepspeed.accelerator import get_accelerator

    distributed = torch_dist.is_available() and torch_dist.is_initialized()
    partitioned = hasattr(weight, "ds_id") and weight.ds_status.name != "AVAILABLE"
    if not partitioned:
        if distributed and torch_dist.get_rank() != 0:
            return None
        return weight.detach()[rows.to(weight.device)].float().cpu()
    group = getattr(weight, "ds_process_group", None)
    part = weight.ds_tensor  # (P,) this rank's slice; on CPU when parameters are offloaded
    size, h = part.ds_numel, weight.ds_shape[-1]
    start = torch_dist.get_rank(group) * size
    flat = (rows[:, None] * h + torch.arange(h)[None, :]).reshape(-1)  # (R·H,) indices into the flat matrix
    mine = (flat >= start) & (flat < start + size)
    device = torch.device(get_accelerator().current_device_name())  # NCCL reduces device tensors only
    buf = torch.zeros(flat.numel(), dtype=torch.float32, device=device)
    # the index tensors go over without the host waiting; the rows' one read is the `.cpu()` below
    buf[to_device(mine, device)] = part.detach()[to_device(flat[mine] - start, part.device)].float().to(device)
    dst = torch_dist.get_global_rank(group, 0) if group is not None else 0
    torch_dist.reduce(buf, dst=dst, group=group)  # slices are disjoint: the sum is the rows
    if torch_dist.get_rank() != dst:
        return None
    return buf.view(len(rows), h).cpu()


def _separated_index(separated: list[int], base_vocab_size: int) -> torch.Tensor:
    """(2S,) rows: the separated tokens' NL rows, then their code copies (appended after the base vocabulary)."""
    nl = torch.as_tensor(separated, dtype=torch.long)
    return torch.cat([nl, torch.arange(base_vocab_size, base_vocab_size + len(separated))])


def code_row_similarity(model: torch.nn.Module, separated: list[int], base_vocab_size: int) -> torch.Tensor:
    """(S,) cosine similarity of each separated token's NL row and its code copy, on rank 0 (a
    collective under ZeRO-3); an empty tensor on the other ranks."""
    rows = separated_rows(model, separated, base_vocab_size)
    if rows.numel() == 0:
        return rows
    nl, code = rows.chunk(2)  # (S, H) each
    return torch.nn.functional.cosine_similarity(nl, code, dim=-1)


def separated_rows(model: torch.nn.Module, separated: list[int], base_vocab_size: int) -> torch.Tensor:
    """(2S, H): the NL rows then the code rows of the separated tokens, on rank 0 (a collective
    under ZeRO-3); an empty tensor on the other ranks."""
    rows = gather_rows(_embedding_weight(model), _separated_index(separated, base_vocab_size))
    return torch.empty(0) if rows is None else rows


TENSORBOARD_DIR, METRICS_FILE = "tensorboard", "metrics.jsonl"  # in OUTPUT_DIR


def where_to_look(output_dir: str | Path) -> str:
    """The lines a run prints at its start: where its output, TensorBoard and metrics are."""
    out = Path(output_dir)
    return (
        f"mmpt train: output      {out}  (checkpoints/, final/, run_state.json)\n"
        f"mmpt train: tensorboard tensorboard --logdir {out / TENSORBOARD_DIR}\n"
        f"mmpt train: metrics     {out / METRICS_FILE}"
    )


class LogWindow:
    """The steps since the last log line: their sums, and when the next line is due (every
    `logging_steps` steps, at the last step, and with every validation). A line's losses and rates
    are means over its window, less noisy than the last step's."""

    def __init__(self, logging_steps: int, total_steps: int) -> None:
        self.logging_steps, self.total_steps = logging_steps, total_steps
        self.sums = np.zeros(7)  # code_sum, code_count, nl_sum, nl_count, tokens, rows, seconds

    def should_log(self, step: int, validating: bool) -> bool:
        return step % self.logging_steps == 0 or step == self.total_steps or validating

    def add(self, code_sum: float, code_count: float, nl_sum: float, nl_count: float, tokens: float, rows: float,
            seconds: float) -> None:  # fmt: skip
        self.sums += [code_sum, code_count, nl_sum, nl_count, tokens, rows, seconds]

    def take(self) -> tuple[float, ...]:
        """The window's sums (code_sum, code_count, nl_sum, nl_count, tokens, rows, seconds); it starts afresh."""
        sums = tuple(self.sums)
        self.sums[:] = 0
        return sums


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
            self.writer = SummaryWriter(str(out / TENSORBOARD_DIR))
            self.jsonl = JsonlAppender(out / METRICS_FILE, durable=False)

    def log(self, step: int, scalars: dict[str, float], validation: dict[str, float] | None = None) -> None:
        """One record: training scalars as train/NAME, held-out ones as validation/NAME (TensorBoard)
        and validation_NAME (metrics.jsonl, in the same line as the step's training scalars)."""
        if not self.enabled:
            return
        validation = validation or {}
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        for name, value in validation.items():
            self.writer.add_scalar(f"validation/{name}", value, step)
        record = {"step": step, **scalars, **{f"validation_{k}": v for k, v in validation.items()}}
        self.jsonl.write(record)
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
        self.writer.add_embedding(
            rows, metadata=meta, metadata_header=["token", "modality"], global_step=step, tag="separated_rows"
        )
        self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()
