"""Benchmark: row fill of best-fit-decreasing packing, and mask memory per batch vs dense masks.

    python bench/packing.py                      # stdlib pairs, 2048 tokens, batch 8
    python bench/packing.py --max-seq-length 1024 2048 --batch 8
    python bench/packing.py --repeat 16 --chunk-tokens 262144 16777216   # fill of per-chunk packing

Baselines run in the same invocation: next-fit packing in corpus order (fill, rows, time), and the
dense B×N×N attention masks that the paper's reference code builds. The pairs (`mmpt extract
stdlib`) and a byte-level BPE trained on them are cached under runs/bench/.

Mask data compared per batch of B rows of N tokens (the collator pads rows to N):
  ours   position ids (int64, what HF models take) + modality (int8) per token = 9 B × B × N;
         block-causal masks are built from them on the device, inside the step
  dense  one (B, N, N) mask; bool = 1 B/element, float32 additive mask = 4 B/element, and the
         paper's reference as measured (100.7 MB per 8×1024, 402.7 MB per 8×2048), which is
         exactly 12 B/element, e.g. an int64 mask plus its float32 additive form
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mmpt.data.extract import extract_pairs
from mmpt.data.instances import sentinel_ids
from mmpt.data.packing import fill_ratio, pack
from mmpt.data.pairs import load_pairs
from mmpt.data.prepare import encode_batch
from mmpt.data.separation import build_separation_map
from mmpt.data.tokenizer import load_tokenizer, train_tokenizer

SHIPPED_BYTES_PER_TOKEN = 8 + 1  # int64 position id + int8 modality
DENSE_BYTES = {"dense bool": 1, "dense float32": 4, "paper reference (measured)": 12}


def next_fit(lengths: np.ndarray, max_len: int) -> list[list[int]]:
    """Baseline: fill rows in corpus order, opening a new row when the next instance does not fit."""
    rows: list[list[int]] = []
    used = max_len
    for i, n in enumerate(lengths.tolist()):
        if used + n > max_len:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def chunked_fill(lengths: np.ndarray, max_len: int, repeat: int, chunk_tokens: list[int]) -> None:
    """Fill of best-fit decreasing per chunk of about `chunk_tokens` tokens (as `mmpt prepare` streams)
    vs over the whole corpus, on the instances repeated `repeat` times."""
    lengths = np.tile(lengths, repeat)
    whole = pack(lengths, max_len)
    print(f"\nper-chunk packing, corpus ×{repeat} ({int(lengths.sum()):,} tokens): whole corpus "
          f"{fill_ratio(lengths, whole, max_len):.4%} ({len(whole)} rows)")  # fmt: skip
    ends = np.cumsum(lengths)
    for budget in chunk_tokens:
        # a chunk ends at the instance that brings it to the budget, as mmpt.data.prepare.corpus_chunks cuts
        cuts, start = [], 0
        while start < len(lengths):
            stop = int(np.searchsorted(ends, budget + (ends[start - 1] if start else 0), side="left")) + 1
            cuts.append((start, min(stop, len(lengths))))
            start = stop
        rows = [r + a for a, b in cuts for r in pack(lengths[a:b], max_len)]
        print(f"  chunks of {budget:>10,} tokens ({len(cuts):>4} chunks): {fill_ratio(lengths, rows, max_len):.4%} "
              f"({len(rows) - len(whole):+d} rows)")  # fmt: skip


def instance_lengths(pairs_path: Path, tokenizer_dir: Path) -> np.ndarray:
    tokenizer = load_tokenizer(str(tokenizer_dir))
    smap, _ = build_separation_map(tokenizer, "none")
    ids = sentinel_ids(tokenizer)
    pairs = load_pairs(pairs_path)
    lengths = []
    for batch in pairs.iter(batch_size=1000):
        encoded = encode_batch(batch, tokenizer, smap, "docstring-first", ids)
        lengths += [len(x) for x in encoded["input_ids"]]
    return np.asarray(lengths, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="runs/bench/stdlib.jsonl", help="extracted from stdlib when missing")
    parser.add_argument("--tokenizer", default="runs/bench/tokenizer", help="trained on the pairs when missing")
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--max-seq-length", type=int, nargs="+", default=[2048])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=16, help="corpus copies for the per-chunk fill")
    parser.add_argument("--chunk-tokens", type=int, nargs="+", default=[1 << 18, 1 << 20, 1 << 22, 1 << 24])
    args = parser.parse_args()
    pairs, tokenizer = Path(args.pairs), Path(args.tokenizer)
    if not pairs.exists():
        print(extract_pairs(["stdlib"], pairs).render())
    if not (tokenizer / "tokenizer.json").exists():
        train_tokenizer(pairs, args.vocab_size, tokenizer)
    lengths_all = instance_lengths(pairs, tokenizer)
    print(f"\n{len(lengths_all)} instances, median {int(np.median(lengths_all))} tokens, tokenizer {tokenizer}")

    for max_len in args.max_seq_length:
        lengths = lengths_all[lengths_all <= max_len]
        t0 = time.perf_counter()
        base_rows = next_fit(lengths, max_len)
        t1 = time.perf_counter()
        rows = pack(lengths, max_len)
        t2 = time.perf_counter()
        base_fill = fill_ratio(lengths, [np.asarray(r) for r in base_rows], max_len)
        fill = fill_ratio(lengths, rows, max_len)
        print(f"\n== N = {max_len}, B = {args.batch}: {len(lengths)} instances kept, "
              f"{len(lengths_all) - len(lengths)} dropped as too long")  # fmt: skip
        print(f"{'packing':<28}{'rows':>8}{'fill':>9}{'seconds':>9}")
        print(f"{'next-fit, corpus order':<28}{len(base_rows):>8}{base_fill:>9.2%}{t1 - t0:>9.3f}")
        print(f"{'best-fit decreasing':<28}{len(rows):>8}{fill:>9.2%}{t2 - t1:>9.3f}")
        print(f"fill ratio vs next-fit: {fill / base_fill:.3f}x; rows: {len(rows) / len(base_rows):.3f}x")
        chunked_fill(lengths, max_len, args.repeat, args.chunk_tokens)

        shipped = args.batch * max_len * SHIPPED_BYTES_PER_TOKEN
        print(f"\n{'mask data per batch':<34}{'bytes':>14}{'MB':>10}{'vs ours':>10}")
        print(f"{'ours: position ids + modality':<34}{shipped:>14,}{shipped / 1e6:>10.3f}{1:>9.0f}x")
        for name, per_element in DENSE_BYTES.items():
            dense = args.batch * max_len * max_len * per_element
            print(f"{name:<34}{dense:>14,}{dense / 1e6:>10.1f}{dense / shipped:>9.0f}x")


if __name__ == "__main__":
    main()
