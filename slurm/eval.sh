#!/bin/bash
# Evaluation under Slurm: generate on the allocation's GPUs (or CPUs), execute in the sandbox spread
# over all its tasks (srun + MPI), then pass@k.
#
#   sbatch [--nodes=N] [--gpus-per-node=G --ntasks-per-node=G] slurm/eval.sh --model runs/x/final \
#       --benchmark humaneval|mbpp [--incremental] [--limit N] --n 20 --temperature 0.8 --top-p 0.95 --out runs/x/eval/humaneval
#
# Writes OUT/samples.jsonl, OUT/results.jsonl and OUT/passk.json. `--out` belongs to this script;
# every other argument goes to `mmpt generate` (--benchmark and --data-file to `mmpt execute` too).
# A rerun with the same OUT resumes: generate and execute skip what is already on disk.
# Size: the header asks for one whole node and one task, which every node can give: generation
# then runs as one rank on the node's CPUs, execution as one task with a sandbox worker per CPU.
# On GPUs give --gpus-per-node=G and --ntasks-per-node=G together (one generation rank per GPU;
# execution then runs G tasks, each with its share of the node's CPUs).
# Settings: K (the ks of pass@k, default 1,10,100), EXECUTE_WORKERS (sandboxes per task, default
# the task's CPUs), PYTHON (the interpreter with mmpt installed, default python).
# Log: slurm-mmpt-eval-JOBID.out in the directory sbatch was run from.
#
#SBATCH --job-name=mmpt-eval
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail

out="" benchmark=""
generate=() execute=()
while (( $# )); do
    case $1 in
        --out) out=$2; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        --benchmark) benchmark=$2; generate+=("$1" "$2"); execute+=("$1" "$2"); shift 2 ;;
        --data-file) generate+=("$1" "$2"); execute+=("$1" "$2"); shift 2 ;;
        *) generate+=("$1"); shift ;;
    esac
done
if [[ -z $out || -z $benchmark ]]; then
    echo "usage: sbatch slurm/eval.sh --model DIR --benchmark humaneval|mbpp --n N --out DIR [mmpt generate options]" >&2
    exit 2
fi
mkdir -p "$out"
PYTHON=${PYTHON:-python}

# Generation: one rank per GPU, or per task on a CPU-only allocation.
gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-0}}
gpus=${gpus##*:}
ranks_per_node=$(( gpus > 0 ? gpus : ${SLURM_NTASKS_PER_NODE:-1} ))
# each task's CPUs: srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05)
cpus=${SLURM_CPUS_PER_TASK:-$(( SLURM_CPUS_ON_NODE / ${SLURM_NTASKS_PER_NODE:-1} ))}
cpus=$(( cpus > 0 ? cpus : 1 ))
workers=${EXECUTE_WORKERS:-$cpus}
echo "mmpt eval: job $SLURM_JOB_ID: generate on $SLURM_JOB_NUM_NODES node(s) x $ranks_per_node rank(s)" \
     "($gpus GPU(s) per node), execute on $SLURM_NTASKS task(s) x $workers sandbox worker(s)"

srun --kill-on-bad-exit=1 --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node="$ranks_per_node" \
     --ntasks=$(( SLURM_JOB_NUM_NODES * ranks_per_node )) --cpus-per-task="$cpus" \
     "$PYTHON" -m mmpt generate "${generate[@]}" --no-progress --out "$out/samples.jsonl"
# PMI-2 is what both Debian's Slurm and the MPICH that mpi4py loads speak.
srun --kill-on-bad-exit=1 --mpi=pmi2 --cpus-per-task="$cpus" \
     "$PYTHON" -m mmpt execute "${execute[@]}" --workers "$workers" --samples "$out/samples.jsonl" --out "$out/results.jsonl"
"$PYTHON" -m mmpt passk --results "$out/results.jsonl" --k "${K:-1,10,100}" > "$out/passk.json"
echo "mmpt eval: $benchmark pass@k -> $out/passk.json"
