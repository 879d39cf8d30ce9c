"""Non-pad tokens/s and peak RSS of `deepspeed mmpt/train.py` vs the Hugging Face Trainer, same ZeRO-3 config.

    python bench/train_throughput.py [--steps 30] [--seq 256] [--batch 4]

Both run 2 ranks on CPU (DS_ACCELERATOR=cpu), the same tiny Llama and the same tokens. mmpt trains
packed rows (several instances per row, attention blocked between them); the baseline is how most
projects do it: the Trainer with one instance per row padded to the sequence length. The figure of
merit is the ratio of non-pad tokens per second (goal >= 1.5x); the first steps are warm-up and left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCH = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4)

BASELINE = textwrap.dedent(
    """
    import json, resource, sys, time
    import datasets, torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments
    spec = json.loads(open(sys.argv[-1]).read())
    rows = datasets.load_from_disk(spec["rows"])
    # one padded instance per row: cut every packed row back into its instances
    instances = []
    for ids, pos in zip(rows["input_ids"], rows["position_ids"]):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(ids)]
        instances += [ids[a:b] for a, b in zip(starts, starts[1:])]
    seq, pad = spec["seq"], spec["pad"]
    data = datasets.Dataset.from_dict({
        "input_ids": [x + [pad] * (seq - len(x)) for x in instances],
        "attention_mask": [[1] * len(x) + [0] * (seq - len(x)) for x in instances],
        "labels": [x + [-100] * (seq - len(x)) for x in instances],
    })
    mean_len = sum(map(len, instances)) / len(instances)
    times = []
    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())
    model = AutoModelForCausalLM.from_pretrained(spec["model"], attn_implementation="sdpa")
    args = TrainingArguments(output_dir=spec["out"], per_device_train_batch_size=spec["batch"], max_steps=spec["steps"],
                             learning_rate=1e-3, logging_steps=1000, save_strategy="no", report_to=[],
                             deepspeed=spec["ds"], use_cpu=True, dataloader_drop_last=True, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[Clock()]).train()
    if torch.distributed.get_rank() == 0:
        warm = spec["warmup"]
        dt = times[-1] - times[warm - 1]
        tokens = (len(times) - warm) * spec["batch"] * spec["world"] * mean_len
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        json.dump({"tokens_per_s": tokens / dt, "peak_rss_gib": rss}, open(spec["result"], "w"))
    """
)


def make_data(root: Path, seq: int) -> tuple[Path, Path, int]:
    """Prepared rows from synthetic pairs of varied length, and a tiny Llama saved for both runs."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.data.prepare import PrepareConfig, prepare
    from mmpt.data.tokenizer import load_tokenizer

    rng = np.random.default_rng(0)
    with (root / "pairs.jsonl").open("w") as f:
        for i in range(1500):
            lines = [f"    x{j} = a * {int(rng.integers(1, 99))} + b" for j in range(int(rng.integers(1, 8)))]
            code = f"def f{i}(a, b):\n" + "\n".join(lines) + "\n    return a\n"
            f.write(json.dumps({"docstring": f"Compute value number {i} from a and b.", "code": code}) + "\n")
    prepare(
        PrepareConfig(
            str(root / "pairs.jsonl"), str(ROOT / "tests/assets/tokenizer"), str(root / "data"), "none", max_seq_length=seq
        )
    )
    tokenizer = load_tokenizer(str(root / "data/tokenizer"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **ARCH, vocab_size=len(tokenizer))).save_pretrained(
        root / "model"
    )
    return root / "data", root / "model", tokenizer.pad_token_id


def launch(script: str, args: list[str], port: int) -> None:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port), script, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, model, pad = make_data(root, a.seq)
        ds = json.loads((ROOT / "ds_configs/zero3.json").read_text())
        ds["optimizer"]["params"]["torch_adam"] = True  # the same optimizer as mmpt picks on CPU
        (root / "zero3.json").write_text(json.dumps(ds))

        # mmpt: packed rows
        out = root / "mmpt"
        launch(
            "mmpt/train.py",
            [
                "--model",
                str(model),
                "--data_dir",
                str(data),
                "--output_dir",
                str(out),
                "--objective",
                "text-code-clm",
                "--max_steps",
                str(a.steps),
                "--per_device_batch_size",
                str(a.batch),
                "--learning_rate",
                "1e-3",
                "--precision",
                "fp32",
                "--logging_steps",
                "1",
                "--gradient_checkpointing",
                "false",
                "--save_steps",
                "0",
                "--export",
                "false",
                "--deepspeed",
                str(root / "zero3.json"),
                "--attn_implementation",
                "sdpa",
            ],
            29701,
        )
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][a.warmup :]
        ours = {
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records),
            "peak_rss_gib": max(r["peak_memory_gib"] for r in records),
        }

        # baseline: HF Trainer, one padded instance per row
        spec = {
            "rows": str(data / "rows"),
            "model": str(model),
            "seq": a.seq,
            "pad": pad,
            "batch": a.batch,
            "steps": a.steps,
            "warmup": a.warmup,
            "world": 2,
            "ds": str(root / "zero3.json"),
            "out": str(root / "hf"),
            "result": str(root / "hf.json"),
        }
        (root / "spec.json").write_text(json.dumps(spec))
        (root / "baseline.py").write_text(BASELINE)
        launch(str(root / "baseline.py"), [str(root / "spec.json")], 29702)
        base = json.loads((root / "hf.json").read_text())

    print(f"packed rows of {a.seq} tokens, {a.batch} rows per rank, 2 ranks, ZeRO-3, CPU; steps {a.warmup + 1}..{a.steps}")
    print(f"mmpt    non-pad tokens/s {ours['tokens_per_s']:10.0f}   peak RSS rank 0 {ours['peak_rss_gib']:.2f} GiB")
    print(f"Trainer non-pad tokens/s {base['tokens_per_s']:10.0f}   peak RSS rank 0 {base['peak_rss_gib']:.2f} GiB")
    print(
        f"ratio (mmpt / Trainer): tokens/s {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x   "
        f"peak RSS {ours['peak_rss_gib'] / base['peak_rss_gib']:.2f}x   (goal: tokens/s >= 1.5x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
