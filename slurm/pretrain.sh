#!/bin/bash
# Further pre-training under Slurm: one `srun` task per rank, no ssh, no hostfile.
#
#   sbatch [--nodes=N] [--gpus-per-node=G] slurm/pretrain.sh --config configs/X.yaml [--field value]...
#   sbatch --ntasks-per-node=2 slurm/pretrain.sh --config configs/tiny-cpu.yaml     # CPU-only nodes
#
# Arguments after the script go to mmpt/train.py. Ranks per node: the GPUs Slurm gave each node,
# or on a CPU-only allocation the tasks per node (then DS_ACCELERATOR=cpu). srun is the launcher:
# every task runs train.py, which reads its rank from SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS;
# rendezvous is the first node of the allocation on a port derived from the job id.
#
# Preemption: Slurm sends USR1 to this script SAVE_BEFORE seconds before the time limit
# (--signal below); the script passes it to the ranks, which finish the step, save a checkpoint and
# exit; the script then requeues the job, which resumes from that checkpoint (--resume auto).
# The same happens for `scancel --batch --signal=USR1 JOBID`. A failing run exits non-zero.
#
#SBATCH --job-name=mmpt-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -uo pipefail

# GPUs per node as Slurm reports them ("4" or "a100:4"); none means a CPU-only allocation.
gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-0}}
gpus=${gpus##*:}
if [[ $gpus -gt 0 ]]; then
    ranks_per_node=$gpus
else
    ranks_per_node=${SLURM_NTASKS_PER_NODE:-1}
    export DS_ACCELERATOR=cpu
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( SLURM_CPUS_ON_NODE / ranks_per_node > 0 ? SLURM_CPUS_ON_NODE / ranks_per_node : 1 ))}
export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
PYTHON=${PYTHON:-python}

echo "mmpt pretrain: job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}: $SLURM_JOB_NUM_NODES node(s) x $ranks_per_node rank(s)," \
     "rendezvous $MASTER_ADDR:$MASTER_PORT, ${DS_ACCELERATOR:-gpu}"

preempted=0
trap 'preempted=1; echo "mmpt pretrain: USR1 (time limit near): saving"; kill -USR1 "$step" 2>/dev/null' USR1

srun --kill-on-bad-exit=1 --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node="$ranks_per_node" \
     --ntasks=$(( SLURM_JOB_NUM_NODES * ranks_per_node )) \
     "$PYTHON" -u -m mmpt.train --save_signal SIGUSR1 "$@" &
step=$!
# A trapped signal interrupts `wait`; wait again until srun itself has exited, then take its status.
while kill -0 "$step" 2>/dev/null; do wait "$step"; done
wait "$step"; status=$?

if [[ $preempted == 1 ]]; then
    echo "mmpt pretrain: requeueing job $SLURM_JOB_ID to resume from the last checkpoint"
    scontrol requeue "$SLURM_JOB_ID" && exit 0
fi
exit "$status"
