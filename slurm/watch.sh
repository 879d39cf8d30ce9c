#!/bin/bash
# pass@k of every checkpoint of a training run as it appears: `mmpt watch` as a job of its own beside
# slurm/pretrain.sh, so that evaluation never takes the training's GPUs, cores or memory.
#
#   sbatch slurm/pretrain.sh --config configs/X.yaml --output_dir runs/x
#   sbatch slurm/watch.sh runs/x --benchmark humaneval --greedy [--limit N] [--incremental] [mmpt generate options]
#   sbatch slurm/watch.sh runs/x --benchmark humaneval --n 20 --temperature 0.8 --top-p 0.95
#
# Arguments go to `mmpt watch` (OUTPUT_DIR, then `mmpt generate`'s options and its own: --k, --poll-s,
# --name, --device ...). It exports each complete checkpoint, generates on the job's GPU (the CPU
# in an allocation without one), executes in the sandbox with EXECUTE_WORKERS sandboxes (default:
# the job's cores), and writes eval/BENCHMARK/pass@k into OUTPUT_DIR/tensorboard/watch-BENCHMARK and
# OUTPUT_DIR/watch/BENCHMARK/passk.jsonl. The job ends when the run has finished and every
# checkpoint is scored. FOLLOW=1 (default): a run that stopped on a save request is waited for,
# since pretrain.sh requeues it; FOLLOW=0 ends with it. Resubmitting resumes: scored checkpoints are
# skipped. pretrain.sh's header asks for whole nodes (--exclusive), so this job runs on another
# node; edit the header below for the GPU and cores it needs (generation is one process).
#
#SBATCH --job-name=mmpt-watch
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%j.out

set -uo pipefail

cpus=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cpus}
PYTHON=${PYTHON:-python}  # the interpreter with mmpt installed
follow=()
[[ ${FOLLOW:-1} == 1 ]] && follow=(--follow)

echo "mmpt watch: job $SLURM_JOB_ID on $(hostname): ${SLURM_GPUS_ON_NODE:-0} GPU(s), $cpus cpu(s); watching $*"
srun --ntasks=1 --cpus-per-task="$cpus" \
     "$PYTHON" -u -m mmpt watch --workers "${EXECUTE_WORKERS:-$cpus}" "${follow[@]}" "$@"
