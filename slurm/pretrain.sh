#!/bin/bash
# Further pre-training under Slurm: one `srun` task per rank, no ssh, no hostfile.
#
#   sbatch [--nodes=N] [--gpus-per-node=G --ntasks-per-node=G] slurm/pretrain.sh --config configs/X.yaml [--field value]...
#   MMPT_DEVICE=cpu sbatch --gpus-per-node=0 --ntasks-per-node=2 --cpus-per-task=1 slurm/pretrain.sh --config configs/tiny-cpu.yaml
#
# Arguments after the script go to mmpt/train.py. One rank per GPU: the GPUs Slurm gave each node
# (edit --gpus-per-node and --ntasks-per-node below together). An allocation without GPUs is an
# error, unless CPU training is asked for explicitly (MMPT_DEVICE=cpu: then ranks per node = tasks
# per node, DS_ACCELERATOR=cpu). Each rank gets --cpus-per-task cores (srun does not inherit it
# from sbatch since Slurm 22.05, so it is passed on) and as many OpenMP threads. Where the site
# binds one GPU per task (--gpus-per-task=1, --gpu-bind, cgroup device constraints), a rank sees
# its GPU as device 0 and the trainer uses that one. srun is the per-node launcher: it starts
# every rank itself, and train.py reads its rank from SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS,
# so no torchrun/deepspeed launcher sits in between (those need ssh or a hostfile across nodes).
# Rendezvous: the allocation's first node, on a port derived from the job id so that two jobs
# sharing a node do not collide.
#
# Preemption: a save request is a signal to the ranks. srun delivers to them what the job's steps
# get: USR1 600 s before the time limit (--signal below: leave room for one step and a checkpoint
# save), `scancel --signal=USR1 JOBID` by hand, and the SIGTERM of a plain `scancel`, of
# preemption or of the time limit itself (then the save has the site's KillWait, 30 s by
# default); a signal to this script alone (`scancel --batch --signal=USR1`, `--signal=B:USR1@T`)
# is passed on to srun, which passes it to the ranks. The ranks finish the step, save a
# checkpoint, write "stopped" in OUTPUT_DIR/run_state.json and exit 0. Whoever sent the request,
# the script then requeues the job, which resumes from that checkpoint (--resume auto), unless
# Slurm is ending the job itself (SIGTERM to this script too: plain `scancel`, the time limit,
# preemption, whose PreemptMode decides on a requeue): then it is saved, not requeued, and
# submitting it again resumes. A finished run ("finished" in run_state.json) and a run that failed,
# before or after a request, are never requeued: the job ends with its status.
# Output is appended across restarts.
#
#SBATCH --job-name=mmpt-pretrain
#SBATCH --nodes=1
#SBATCH --gpus-per-node=8
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -uo pipefail

# GPUs per node as Slurm reports them ("4" or "a100:4"); none means a CPU-only allocation.
gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-0}}
gpus=${gpus##*:}
device=${MMPT_DEVICE:-gpu}  # gpu | cpu
if [[ $gpus -gt 0 ]]; then
    ranks_per_node=$gpus
elif [[ $device == cpu ]]; then
    ranks_per_node=${SLURM_NTASKS_PER_NODE:-1}
    export DS_ACCELERATOR=cpu
else
    echo "mmpt pretrain: job ${SLURM_JOB_ID:-?} has no GPU on its node(s); submit with --gpus-per-node=G," \
         "or ask for CPU training explicitly: MMPT_DEVICE=cpu sbatch --gpus-per-node=0 ..." >&2
    exit 2
fi
cpus=${SLURM_CPUS_PER_TASK:-$(( SLURM_CPUS_ON_NODE / ranks_per_node ))}
cpus=$(( cpus > 0 ? cpus : 1 ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cpus}
# Not overridable: a value exported in the submitting shell would reach the job and be wrong.
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))
PYTHON=${PYTHON:-python}  # the interpreter with mmpt installed
# A requeued run continues from the newest checkpoint, whatever --resume the first run was given.
resume=()
[[ ${SLURM_RESTART_COUNT:-0} -gt 0 ]] && resume=(--resume auto)

echo "mmpt pretrain: job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}: $SLURM_JOB_NUM_NODES node(s) x $ranks_per_node rank(s)" \
     "x $cpus cpu(s), rendezvous $MASTER_ADDR:$MASTER_PORT, ${DS_ACCELERATOR:-gpu}"

step="" ending=0
# A request to this script alone goes on to srun, which signals the ranks. SIGTERM reaches this
# script only when Slurm ends the job (plain `scancel`, the time limit, preemption): save, but
# leave the job's fate to Slurm (bash would die of it, and srun with it, before the save).
trap 'echo "mmpt pretrain: USR1: asking the ranks to save"; kill -USR1 "$step" 2>/dev/null' USR1
trap 'ending=1; echo "mmpt pretrain: TERM: the job is ending; asking the ranks to save"; kill -TERM "$step" 2>/dev/null' TERM

srun --kill-on-bad-exit=1 --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node="$ranks_per_node" \
     --ntasks=$(( SLURM_JOB_NUM_NODES * ranks_per_node )) --cpus-per-task="$cpus" \
     "$PYTHON" -u -m mmpt.train --save_signal SIGUSR1 "$@" "${resume[@]}" &
step=$!
# A trapped signal interrupts `wait`; wait again until srun itself has exited, then take its status.
while kill -0 "$step" 2>/dev/null; do wait "$step"; done
wait "$step"; status=$?

if [[ $status != 0 ]]; then
    echo "mmpt pretrain: the run failed (status $status); not requeueing" >&2
    exit "$status"
fi
# How the run ended, as rank 0 recorded it in OUTPUT_DIR/run_state.json: stopped | finished
state=$("$PYTHON" -m mmpt.checkpoint run-state "$@")
[[ $state == stopped ]] || exit 0
if [[ $ending == 1 ]]; then
    echo "mmpt pretrain: the ranks saved; job $SLURM_JOB_ID was ended by Slurm (scancel, time limit, preemption):" \
         "not requeueing it myself (the same sbatch command resumes it)"
    exit 0
fi
echo "mmpt pretrain: the ranks saved on request; requeueing job $SLURM_JOB_ID to resume from that checkpoint"
scontrol requeue "$SLURM_JOB_ID" && exit 0
echo "mmpt pretrain: Slurm did not requeue job $SLURM_JOB_ID; the same sbatch command resumes it" >&2
exit 0
