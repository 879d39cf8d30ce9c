#!/usr/bin/env bash
# One-GPU ZeRO-3 bf16 training of a ~1.1B Llama-style model (random init, TinyLlama shape) on packed
# rows of 2048 tokens; prints non-pad tokens/s and MFU (6·N·tokens/s over the card's bf16 peak).
# Goal: MFU >= 40% on one H100/H200. Runs in under 5 minutes with no network.
#
#   bash bench/gpu.sh [WHEEL_DIR]        (default WHEEL_DIR: bench/wheels)
#
# The machine has PyTorch and transformers; deepspeed and datasets (and their pure-Python deps)
# travel as wheels. Fill the wheel dir on a machine with network, for the GPU host's Python:
#   pip download deepspeed datasets pyyaml tensorboard -d bench/wheels \
#       --python-version 3.11 --only-binary=:all: --platform manylinux2014_x86_64
#   (deepspeed ships an sdist: also `pip wheel deepspeed -w bench/wheels --no-deps` with
#    DS_BUILD_OPS=0, so that nothing compiles at install time)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-bench/wheels}
STEPS=${STEPS:-30}
BATCH=${BATCH:-8}         # rows of 2048 tokens per step
CKPT=${CKPT:-false}       # gradient checkpointing: off is faster while activations fit (80 GB holds 8x2048 for 1.1B)
OUT=${OUT:-/tmp/mmpt-gpu-bench}

if ! python -c "import deepspeed, datasets" 2>/dev/null; then
  [ -d "$WHEELS" ] || { echo "no $WHEELS: see the header of $0 for how to fill it"; exit 2; }
  pip install --no-index --find-links "$WHEELS" deepspeed datasets pyyaml tensorboard
fi
python -c "import mmpt" 2>/dev/null || pip install --no-deps --no-build-isolation -e . >/dev/null

rm -rf "$OUT" && mkdir -p "$OUT"
# synthetic pairs of ~400 tokens (about 5 per 2048-token row), the tiny test tokenizer
python - "$OUT" <<'EOF'
import json, sys, random
from pathlib import Path
from mmpt.data.prepare import PrepareConfig, prepare
out = Path(sys.argv[1]); rng = random.Random(0)
with (out / "pairs.jsonl").open("w") as f:
    for i in range(4000):
        body = "\n".join(f"    v{j} = a * {rng.randint(1, 999)} + b - {rng.randint(1, 99)}" for j in range(rng.randint(20, 40)))
        f.write(json.dumps({"docstring": f"Compute the value number {i} from a and b.", "code": f"def f{i}(a, b):\n{body}\n    return v0\n"}) + "\n")
prepare(PrepareConfig(str(out / "pairs.jsonl"), "tests/assets/tokenizer", str(out / "data"), "partial", max_seq_length=2048))
EOF

cat > "$OUT/bench.yaml" <<EOF
model: {model_type: llama, hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22,
        num_attention_heads: 32, num_key_value_heads: 4, max_position_embeddings: 2048, tie_word_embeddings: false}
attn_implementation: sdpa
data_dir: $OUT/data
output_dir: $OUT/run
objective: code-clm
max_steps: $STEPS
learning_rate: 1.0e-4
min_learning_rate: 1.0e-5
per_device_batch_size: $BATCH
precision: bf16
gradient_checkpointing: $CKPT
save_steps: 0
export: false
logging_steps: 1
deepspeed: ds_configs/zero3.json
EOF

timeout 270 deepspeed --num_gpus 1 mmpt/train.py --config "$OUT/bench.yaml" 2>&1 | grep -E "^(mmpt|step)" || true
python - "$OUT/run/metrics.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][5:]  # steps 1-5 are warm-up
if not rows:
    raise SystemExit("no steps after warm-up were logged")
tps, mfu = statistics.median(r["tokens_per_s"] for r in rows), statistics.median(r["mfu"] for r in rows)
print(f"1 GPU, ZeRO-3 bf16, ~1.1B Llama, 2048-token packed rows: {tps:,.0f} non-pad tokens/s, "
      f"MFU {100 * mfu:.1f}% (goal >= 40%), peak memory {max(r['peak_memory_gib'] for r in rows):.1f} GiB")
EOF
