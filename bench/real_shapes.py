"""Benchmark: 2-rank ZeRO-3 on CPU at PyCodeGPT's real shape with a ~150k vocabulary and split embeddings.

    python bench/real_shapes.py                                     # partial and full, 3 steps of 256 tokens
    python bench/real_shapes.py --separation full --steps 5 --max-seq-length 512

So that shape bugs show up before a GPU does: the model is GPT-Neo 125M as PyCodeGPT has it (12
layers, hidden 768, 12 heads, attention layers alternating global/local with a 256-token window,
2048 positions), randomly initialised from that config (no hub access); the tokenizer is a
synthetic byte-level BPE of Qwen2.5's size (151,665 ids, `mmpt.data.tokenizer.synthetic_tokenizer`),
to which prepare appends the sentinels, and the separation splits its rows (partial: the
tokenizer's code keywords and symbols; full: every id, ~303k embedding rows). Each separation is one
`deepspeed --num_gpus 2 mmpt/train.py` launch (DS_ACCELERATOR=cpu, fp32 or `--precision bf16`,
ZeRO-3, the last step saved and exported). Reported per launch: embedding rows, parameters, the peak RSS (VmHWM) of each
rank, seconds, and the losses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mmpt.distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 151_665  # Qwen2.5's tokenizer: the size of a current code LM's vocabulary
PYCODEGPT = {  # GPT-Neo 125M, the architecture of PyCodeGPT (Daoguang/PyCodeGPT)
    "model_type": "gpt_neo",
    "hidden_size": 768,
    "num_layers": 12,
    "num_heads": 12,
    "attention_types": [[["global", "local"], 6]],
    "window_size": 256,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def _rank_peaks(config: Path, peaks: dict[int, int]) -> None:
    """Update rank -> peak RSS (KiB) from the VmHWM of every `--local_rank=R` process of this launch.

    Found by command line: each rank is a process of its own with `--local_rank=R` in it.
    """
    mine = str(config).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        ranks = [a.split(b"=", 1)[1] for a in cmdline if a.startswith(b"--local_rank=")]
        hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
        if ranks and hwm and mine in cmdline:
            rank = int(ranks[0])
            peaks[rank] = max(peaks.get(rank, 0), hwm[0])


def launch(config: Path, log: Path, timeout_s: float) -> tuple[int, dict[int, float], float]:
    """One 2-rank `deepspeed` launch of mmpt/train.py: (exit code, rank -> peak RSS in MB, seconds)."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
           str(ROOT / "mmpt" / "train.py"), "--config", str(config)]  # fmt: skip
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    peaks: dict[int, int] = {}
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            _rank_peaks(config, peaks)
            if time.perf_counter() - t0 > timeout_s:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.2)
    return proc.returncode, {r: kib / 1024 for r, kib in sorted(peaks.items())}, time.perf_counter() - t0


def run(separation: str, work: Path, pairs: Path, tokenizer: Path, steps: int, max_len: int, batch: int,
        precision: str = "fp32", timeout_s: float = 1800) -> dict:  # fmt: skip
    """Prepare the pairs with `separation`, train `steps` steps on 2 ranks; the launch's figures."""
    from mmpt.data.prepare import PrepareConfig, prepare

    data = work / f"data-{separation}"
    meta = prepare(PrepareConfig(str(pairs), str(tokenizer), str(data), separation, max_seq_length=max_len))
    out = work / f"train-{separation}"
    config = {
        "model": PYCODEGPT, "attn_implementation": "eager", "data_dir": str(data), "output_dir": str(out),
        "objective": "code-clm", "max_steps": steps, "learning_rate": 1.0e-4, "warmup_ratio": 0.0,
        "per_device_batch_size": batch, "precision": precision, "gradient_checkpointing": True,
        "save_steps": 0, "logging_steps": 1, "deepspeed": "ds_configs/zero3.json",
        "resume": "never", "export": True, "hang_timeout_s": 600,
    }  # fmt: skip
    (work / f"{separation}.yaml").write_text(yaml.safe_dump(config))
    log = work / f"{separation}.log"
    rc, peaks, seconds = launch(work / f"{separation}.yaml", log, timeout_s)
    if rc != 0:
        raise RuntimeError(
            f"the {separation} launch exited {rc} after {seconds:.0f} s, peak RSS per rank so far {peaks} MB; "
            f"its log {log} ends:\n{log.read_text()[-4000:]}"
        )
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    final = json.loads((out / "final" / "config.json").read_text())
    return {
        "separation": separation, "base_vocab": meta["tokenizer"]["vocab_size"], "separated": meta["separated_tokens"],
        "embedding_rows": final["vocab_size"], "rows": meta["rows"], "peak_rss_mb": peaks, "seconds": seconds,
        "losses": losses, "export_dtype": final.get("dtype"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--separation", nargs="+", default=["partial", "full"], choices=["none", "partial", "full"])
    parser.add_argument("--pairs", default=str(ROOT / "tests" / "assets" / "pairs.jsonl"))
    parser.add_argument("--vocab-size", type=int, default=VOCAB)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1, help="rows per rank per step")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--work", default="runs/bench/real_shapes")
    args = parser.parse_args(argv)
    from mmpt.data.tokenizer import synthetic_tokenizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = work / f"tokenizer-{args.vocab_size}"
    if not (tokenizer / "tokenizer.json").exists():
        synthetic_tokenizer(args.vocab_size, tokenizer)
    print(f"GPT-Neo 125M shape (12 layers, hidden 768, global/local window 256), synthetic {args.vocab_size:,}-id "
          f"tokenizer, 2 ranks ZeRO-3 on CPU, {args.precision}, {args.steps} steps of {args.batch}×{args.max_seq_length} tokens per rank")  # fmt: skip
    print(f"{'separation':<12}{'emb rows':>10}{'separated':>11}{'rank0 MB':>10}{'rank1 MB':>10}{'s':>7}  losses")
    for separation in args.separation:
        r = run(separation, work, Path(args.pairs), tokenizer, args.steps, args.max_seq_length, args.batch, args.precision)
        rss = [f"{r['peak_rss_mb'].get(k, float('nan')):>10.0f}" for k in (0, 1)]
        print(f"{separation:<12}{r['embedding_rows']:>10,}{r['separated']:>11,}{''.join(rss)}{r['seconds']:>7.0f}  "
              + " ".join(f"{x:.3f}" for x in r["losses"]), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
