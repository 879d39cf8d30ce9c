#!/usr/bin/env bash
# One GPU, ZeRO-3, bf16, packed rows of 2048 tokens, the fused loss and the fast attention path, two
# shapes with a real vocabulary size (synthetic word-level tokenizer, random init, no hub access):
#   pycodegpt-125m  GPT-Neo 125M, local attention layers, 32k vocabulary (eager: GPT-Neo has no other)
#   qwen2-1.5b      Qwen2 1.5B, 151,646-token vocabulary, tied head, flex_attention + BlockMask
# and one summary line per model: tokens/s, MFU, peak memory, the attention path, and the parity of
# loss and gradients of the fast path against the reference path (dense mask + modality_loss, fp32).
# Budget: <= 8 minutes on one H100/H200. Every step is teed to $OUT/gpu.log (a crash keeps its
# traceback there and on the terminal); the exit status is non-zero if any model fails or mismatches.
#
#   bash bench/gpu.sh [WHEEL_DIR]          (default WHEEL_DIR: bench/wheels)
#   DRY_RUN=1 bash bench/gpu.sh            tiny layers, 2 CPU ranks (DS_ACCELERATOR=cpu), a few steps:
#                                          what CI runs (tests/test_bench_gpu.py) so that the script cannot rot
#
# Installing: the GPU host has PyTorch (with CUDA) and nothing from the hub. deepspeed ships only an
# sdist on PyPI; built with DS_BUILD_OPS=0 it is pure Python (ops would JIT-compile on first use, and
# this bench uses torch's AdamW instead of DeepSpeed's fused one, so none is ever built). Fill the
# wheel dir on a machine with network, for the GPU host's Python:
#   DS_BUILD_OPS=0 pip wheel deepspeed==0.19.8 --no-deps -w bench/wheels
#   pip download datasets transformers pyyaml tensorboard -d bench/wheels --only-binary=:all: \
#       --python-version 3.11 --platform manylinux2014_x86_64
# or let the script install from PyPI when the host can reach it (the sdist is built with DS_BUILD_OPS=0).
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
  RANKS=1; STEPS=${STEPS:-25}; BATCH=${BATCH:-4}; WARMUP=5; TINY=; PRECISION=bf16; TIMEOUT=200
  python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
fi

# ---- install what is missing (never JIT-built DeepSpeed ops) ----------------------------------
export DS_BUILD_OPS=0
if ! python -c "import deepspeed, datasets, transformers, yaml" 2>/dev/null; then
  if [ -d "$WHEELS" ]; then
    pip install --no-index --find-links "$WHEELS" --no-build-isolation deepspeed datasets transformers pyyaml tensorboard
  else
    pip install --no-build-isolation deepspeed datasets transformers pyyaml tensorboard
  fi
fi
python -c "import mmpt" 2>/dev/null || pip install --no-deps --no-build-isolation -e . >/dev/null

# torch's AdamW (torch_adam): DeepSpeed's FusedAdam would be JIT-compiled on first use
python - "$OUT/zero3.json" <<'EOF'
import json, sys
ds = json.load(open("mmpt/ds_configs/zero3.json"))
ds["optimizer"]["params"]["torch_adam"] = True
json.dump(ds, open(sys.argv[1], "w"))
EOF

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
         "save_steps": 0, "export": "false", "logging_steps": 1, "deepspeed": "$OUT/zero3.json"}
open(sys.argv[2], "w").write("".join(f"{k}: {v}\n" for k, v in lines.items()))
EOF
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
