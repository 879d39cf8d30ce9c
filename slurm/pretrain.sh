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
# save), `scancel --signal=SIG JOBID` by hand, and the SIGTERM of a plain `scancel`, of the time
# limit or of preemption (then the save has the site's KillWait, 30 s by default; under
# PreemptMode with a GraceTime, Slurm signals the steps alone and the grace time bounds the save).
# Any signal to this script (`scancel --batch --signal=SIG`, `--signal=B:SIG@T`, and the SIGTERM a
# plain `scancel` sends it too) goes on to srun as USR1, the save signal of the ranks: srun would
# turn a SIGTERM into SIGKILL for every task. The ranks finish the step, save a checkpoint, write
# "stopped" in OUTPUT_DIR/run_state.json and exit 0. The script then requeues the job, which
# resumes from that checkpoint (--resume auto), unless Slurm is ending it (its JobState in
# `scontrol show job` is no longer RUNNING: cancelled, timed out, preempted): then it is saved and
# submitting it again resumes. A finished run ("finished") is never requeued, nor a run that
# failed, except where a node of the job is DOWN or NOT_RESPONDING: such a job is requeued up to
# MMPT_NODE_FAILURE_REQUEUES times (default 3; the count is "node_failure_requeues" in
# run_state.json) and resumes from its last checkpoint.
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

step="" asked=""
# Every signal to this script becomes the ranks' save request (USR1, which srun forwards as it is).
ask_save() {
    asked=$1
    echo "mmpt pretrain: $1: asking the ranks to save"
    kill -USR1 "$step" 2>/dev/null
}
for sig in TERM INT HUP USR1 USR2; do trap "ask_save $sig" "$sig"; done

srun --kill-on-bad-exit=1 --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node="$ranks_per_node" \
     --ntasks=$(( SLURM_JOB_NUM_NODES * ranks_per_node )) --cpus-per-task="$cpus" \
     "$PYTHON" -u -m mmpt.train --save_signal SIGUSR1 "$@" "${resume[@]}" &
step=$!
# A trapped signal interrupts `wait`; wait again until srun itself has exited, then take its status.
while kill -0 "$step" 2>/dev/null; do wait "$step"; done
wait "$step"; status=$?

# The nodes of this job that Slurm sees DOWN or NOT_RESPONDING (a node that died under the run).
down_nodes() {
    scontrol show node -o "$SLURM_JOB_NODELIST" 2>/dev/null |
        awk '/State=[^ ]*(DOWN|NOT_RESPONDING)/ { sub("NodeName=", "", $1); print $1 }'
}
if [[ $status != 0 ]]; then
    # the survivors of a dead node exit non-zero after hang_timeout_s; Slurm may mark the node a little later
    down=$(down_nodes)
    for (( i = 0; i < ${MMPT_NODE_CHECK_S:-30} && status != 2 && -z $down; i += 5 )); do sleep 5; down=$(down_nodes); done
    if [[ -n $down ]]; then
        count=$("$PYTHON" -m mmpt.run_dir node-failure-requeue "$@")
        if [[ $count -le ${MMPT_NODE_FAILURE_REQUEUES:-3} ]]; then
            echo "mmpt pretrain: the run failed (status $status) with node(s) $(echo $down) down;" \
                 "requeueing job $SLURM_JOB_ID (node failure requeue $count of ${MMPT_NODE_FAILURE_REQUEUES:-3})" >&2
            scontrol requeue "$SLURM_JOB_ID" && exit 0
        fi
        echo "mmpt pretrain: node(s) $(echo $down) down and $(( count - 1 )) node-failure requeue(s) done already" >&2
    fi
    echo "mmpt pretrain: the run failed (status $status); not requeueing" >&2
    exit "$status"
fi
# How the run ended, as rank 0 recorded it in OUTPUT_DIR/run_state.json: stopped | finished
state=$("$PYTHON" -m mmpt.run_dir run-state "$@")
[[ $state == stopped ]] || exit 0
job_state=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
if [[ -n $job_state && $job_state != RUNNING ]]; then
    echo "mmpt pretrain: the ranks saved; job $SLURM_JOB_ID is $job_state (scancel, time limit, preemption):" \
         "not requeueing it myself (the same sbatch command resumes it)"
    exit 0
fi
echo "mmpt pretrain: the ranks saved on request${asked:+ ($asked to this script)}; requeueing job $SLURM_JOB_ID to resume from that checkpoint"
scontrol requeue "$SLURM_JOB_ID" && exit 0
echo "mmpt pretrain: Slurm did not requeue job $SLURM_JOB_ID; the same sbatch command resumes it" >&2
exit 0
