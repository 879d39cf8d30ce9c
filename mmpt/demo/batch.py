"""Several `mmpt` commands in the ranks of one launch, so that their start-up is paid once.

    deepspeed --num_gpus 2 mmpt/demo/batch.py PLAN.json          (training runs)
    torchrun --standalone --nproc-per-node 2 -m mmpt.demo.batch PLAN.json   (generate, score)

PLAN.json is {"done": DONE, "commands": [{"name": NAME, "argv": ["train", ...]}, ...]}. Every
rank runs the commands in order in one process, each as `mmpt ARGV` would (`mmpt.cli`): importing
torch, transformers and DeepSpeed, a launcher and its rendezvous cost about 15 CPU-seconds a rank,
several times what a demo-sized generate or score does. Training runs keep the process group for
the next one (`mmpt.train.main(leave_group=False)`) and the ranks meet after each, since rank 0's
export is the next run's model. Each rank appends {"name", "rank", "seconds", "cpu_seconds"} to
DONE.rank{r}.jsonl when it is through a command; rank 0's record marks the command done, and a rerun
of the plan skips it (the commands themselves also resume half-done work).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mmpt import cli, train
from mmpt.demo.timing import cpu_seconds, finished
from mmpt.distributed import detect, shutdown
from mmpt.eval.samples import rank_file
from mmpt.jsonl import JsonlAppender, read_json


def _command(argv: list[str]) -> int:
    if argv[0] == "train":  # keep the process group for the next run; left once at the end
        return train.main(argv[1:], leave_group=False)
    return cli.main(argv)


def _meet() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main(argv: list[str] | None = None) -> int:
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--local_rank")]  # deepspeed's
    if len(argv) != 1:
        print("usage: python -m mmpt.demo.batch PLAN.json (under a launcher)", file=sys.stderr)
        return 2
    plan = read_json(argv[0], dict)
    done = Path(plan["done"])
    rank = detect().rank
    skip = finished(done)
    for command in plan["commands"]:
        if command["name"] in skip:
            continue
        t0, c0 = time.monotonic(), cpu_seconds()
        status = _command(command["argv"])
        if status:
            print(
                f"mmpt demo: {command['name']} (`mmpt {' '.join(command['argv'][:3])} ...`) exited with {status}", file=sys.stderr
            )
            return status
        _meet()
        with JsonlAppender(rank_file(done, rank)) as out:
            out.write(
                {"name": command["name"], "rank": rank, "seconds": time.monotonic() - t0, "cpu_seconds": cpu_seconds() - c0}
            )
    shutdown()  # the training runs' process group, when there was one
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
