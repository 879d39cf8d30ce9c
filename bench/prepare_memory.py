"""Benchmark: peak memory of `mmpt prepare` at 1× and 4× the stdlib corpus, chunked vs whole-corpus packing.

    python bench/prepare_memory.py                         # stdlib pairs, 2048 tokens, chunks of 2^18 tokens
    python bench/prepare_memory.py --scales 1 4 --chunk-tokens 262144

Each run is `python -m mmpt prepare` in a child process with its own `datasets` cache (so every run
encodes from scratch), sampled every 10 ms from /proc: the peak of its anonymous memory (RssAnon:
what it allocated itself) and the kernel's peak RSS (VmHWM: that plus the pages of memory-mapped
Arrow files it touched, which are page cache the kernel can drop). The N× corpus is the 1× pairs
file repeated N times.

Baseline in the same invocation: the same command with `--chunk-tokens` above the corpus size, so
all instances are packed and laid out in one chunk; that is how prepare worked before it streamed
(the whole token stream, its gather arrays and every row held at once). The fill column shows what
packing per chunk costs: best-fit decreasing leaves a partly filled row or two at each chunk's end.
The pairs (`mmpt extract stdlib`) and a byte-level BPE trained on them are cached under runs/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmpt.data.extract import extract_pairs
from mmpt.data.tokenizer import train_tokenizer

WHOLE_CORPUS = (1 << 30) - 1  # --chunk-tokens for the baseline: one chunk, whatever the corpus


def _status_kib(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/PID/status in KiB ({} once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            values[name] = int(rest.split()[0])
    return values


def run_prepare(pairs: Path, tokenizer: Path, max_len: int, chunk_tokens: int, work: Path) -> dict:
    """One `mmpt prepare` child: its summary line, seconds, peak RssAnon and VmHWM in MB."""
    out, cache = work / "out", work / "cache"
    cmd = [sys.executable, "-m", "mmpt", "prepare", "--pairs", str(pairs), "--tokenizer", str(tokenizer),
           "--max-seq-length", str(max_len), "--chunk-tokens", str(chunk_tokens), "--out", str(out)]  # fmt: skip
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache), HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_anon, hwm = 0, 0
    while proc.poll() is None:
        got = _status_kib(proc.pid, ("RssAnon", "VmHWM"))
        peak_anon = max(peak_anon, got.get("RssAnon", 0))
        hwm = max(hwm, got.get("VmHWM", 0))
        time.sleep(0.01)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr[-3000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {**summary, "seconds": time.perf_counter() - t0, "anon_mb": peak_anon / 1024, "hwm_mb": hwm / 1024}


def repeated(pairs: Path, times: int, dest: Path) -> Path:
    """The pairs file repeated `times` times (the N× corpus)."""
    text = pairs.read_text()
    dest.write_text(text * times)
    return dest


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="runs/bench/stdlib.jsonl", help="extracted from stdlib when missing")
    parser.add_argument("--tokenizer", default="runs/bench/tokenizer", help="trained on the pairs when missing")
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--chunk-tokens", type=int, default=1 << 18, help="ours: tokens packed at once")
    parser.add_argument("--scales", type=int, nargs=2, default=[1, 4], help="corpus sizes, in copies of the pairs")
    args = parser.parse_args(argv)
    pairs, tokenizer = Path(args.pairs), Path(args.tokenizer)
    if not pairs.exists():
        print(extract_pairs(["stdlib"], pairs).render())
    if not (tokenizer / "tokenizer.json").exists():
        train_tokenizer(pairs, args.vocab_size, tokenizer)

    results = {}
    with tempfile.TemporaryDirectory(prefix="prepare_memory_") as tmp:
        for scale in args.scales:
            corpus = repeated(pairs, scale, Path(tmp) / f"pairs_{scale}x.jsonl")
            for mode, chunk in (("whole corpus (baseline)", WHOLE_CORPUS), (f"chunks of {args.chunk_tokens}", args.chunk_tokens)):
                work = Path(tmp) / f"{scale}x-{chunk}"
                results[mode, scale] = run_prepare(corpus, tokenizer, args.max_seq_length, chunk, work)

    small, large = args.scales
    print(f"\n== mmpt prepare, N = {args.max_seq_length}, {pairs} ×{small} and ×{large}")
    print(f"{'packing':<28}{'corpus':>8}{'tokens':>11}{'rows':>7}{'fill':>9}{'RssAnon MB':>12}{'VmHWM MB':>10}{'s':>7}")
    for (mode, scale), r in results.items():
        print(f"{mode:<28}{f'{scale}x':>8}{r['tokens']:>11,}{r['rows']:>7}{r['fill_ratio']:>9.4%}"
              f"{r['anon_mb']:>12.0f}{r['hwm_mb']:>10.0f}{r['seconds']:>7.1f}")  # fmt: skip
    for mode in dict.fromkeys(m for m, _ in results):
        a, b = results[mode, small], results[mode, large]
        print(f"{mode}: peak RssAnon {large}x/{small}x = {b['anon_mb'] / a['anon_mb']:.2f}, "
              f"extra over {small}x {b['anon_mb'] - a['anon_mb']:+.0f} MB; VmHWM {b['hwm_mb'] / a['hwm_mb']:.2f}")  # fmt: skip
    base, ours = results[next(iter(results))[0], large], results[list(results)[-1]]
    print(
        f"at {large}x: ours/baseline peak RssAnon = {ours['anon_mb'] / base['anon_mb']:.2f}; "
        f"fill {ours['fill_ratio']:.4%} vs {base['fill_ratio']:.4%} ({ours['rows'] - base['rows']:+d} rows)"
    )
    return results


if __name__ == "__main__":
    main()
