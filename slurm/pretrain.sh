#!/bin/bash
# Further pre-training under Slurm: one `srun` task per rank, no ssh, no hostfile.
#
#   sbatch [--nodes=N] [--gpus-per-node=G] slurm/pretrain.sh --config configs/X.yaml [--field value]...
#   sbatch --ntasks-per-node=2 slurm/pretrain.sh --config configs/tiny-cpu.yaml     # CPU-only nodes
#
# Arguments after the script go to mmpt/train.py. Ranks per node: the GPUs Slurm gave each node,
# or on a CPU-only allocation the tasks per node (then DS_ACCELERATOR=cpu). srun is the per-node
# launcher: it starts every rank itself, and train.py reads its rank from SLURM_PROCID/SLURM_LOCALID/
# SLURM_NTASKS, so no torchrun/deepspeed launcher sits in between (those need ssh or a hostfile
# across nodes, and would not pass USR1 on). Rendezvous: the allocation's first node, on a port
# derived from the job id so that two jobs sharing a node do not collide.
#
# Preemption: Slurm sends USR1 to this script 600 s before the time limit (--signal below: leave
# room for one step and a checkpoint save); the script passes it to the ranks, which finish the
# step, save a checkpoint and exit 0; the script then requeues the job, which resumes from that
# checkpoint (--resume auto). `scancel --batch --signal=USR1 JOBID` does the same by hand.
# Output is appended across restarts. A failing run exits non-zero.
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
threads=$(( SLURM_CPUS_ON_NODE / ranks_per_node ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}
# Not overridable: a value exported in the submitting shell would reach the job and be wrong.
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))
PYTHON=${PYTHON:-python}  # the interpreter with mmpt installed
# A requeued run continues from the newest checkpoint, whatever --resume the first run was given.
resume=()
[[ ${SLURM_RESTART_COUNT:-0} -gt 0 ]] && resume=(--resume auto)

echo "mmpt pretrain: job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}: $SLURM_JOB_NUM_NODES node(s) x $ranks_per_node rank(s)," \
     "rendezvous $MASTER_ADDR:$MASTER_PORT, ${DS_ACCELERATOR:-gpu}"

preempted=0 step=""
trap 'preempted=1; echo "mmpt pretrain: USR1 (time limit near): saving"; kill -USR1 "$step" 2>/dev/null' USR1

srun --kill-on-bad-exit=1 --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node="$ranks_per_node" \
     --ntasks=$(( SLURM_JOB_NUM_NODES * ranks_per_node )) \
     "$PYTHON" -u -m mmpt.train --save_signal SIGUSR1 "$@" "${resume[@]}" &
step=$!
# A trapped signal interrupts `wait`; wait again until srun itself has exited, then take its status.
while kill -0 "$step" 2>/dev/null; do wait "$step"; done
wait "$step"; status=$?

if [[ $preempted == 1 ]]; then
    echo "mmpt pretrain: requeueing job $SLURM_JOB_ID to resume from the last checkpoint"
    scontrol requeue "$SLURM_JOB_ID" && exit 0
fi
exit "$status"
