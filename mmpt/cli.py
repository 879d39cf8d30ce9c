"""The `mmpt` console script: one subcommand per stage of the pipeline."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys

from mmpt import stopping

# subcommand -> (module with `main(argv) -> int`, one-line help). Modules are imported lazily so
# that `mmpt --help` does not pay for torch.
COMMANDS = {
    "extract": ("mmpt.data.extract", "mine docstring/code pairs from Python sources"),
    "tokenizer": ("mmpt.data.tokenizer", "train a byte-level BPE with the sentinels on pairs"),
    "prepare": ("mmpt.data.prepare", "tokenize, separate and pack pairs into training rows"),
    "train": ("mmpt.train", "further pre-train (same as `deepspeed mmpt/train.py`)"),
    "export": ("mmpt.export", "write a Hugging Face checkpoint from a DeepSpeed checkpoint"),
    "generate": ("mmpt.eval.generate", "sample completions for HumanEval/MBPP problems"),
    "prompts": ("mmpt.eval.prompts", "write the prompt ids each task gives the engine (to diff harnesses)"),
    "execute": ("mmpt.eval.sandbox.execute", "run samples against the tests in a sandbox"),
    "passk": ("mmpt.eval.passk", "pass@k and incremental pass@k from execution results"),
    "watch": ("mmpt.eval.watch", "pass@k of each checkpoint of a training run as it appears, into its TensorBoard"),
    "import-checkpoint": ("mmpt.import_checkpoint", "an mmpt checkpoint from the paper's released ones"),
    "paper-table": ("mmpt.eval.paper_table", "the paper's table of pass@k from the authors' released checkpoints"),
    "score": ("mmpt.eval.score", "NLL per code token of the reference solutions"),
    "doctor": ("mmpt.doctor", "preflight checks before a long job"),
    "demo": ("mmpt.demo.stages", "the whole pipeline on a laptop CPU"),
    "report": ("mmpt.demo.report", "(re)write a demo run's report.md and plots"),
}


class OneLineHelp(argparse.HelpFormatter):
    """`--help` with each option on one line: its help text beside the flag, not under it."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=50, width=max(120, shutil.get_terminal_size().columns))


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The ArgumentParser of a subcommand: `prog` is "mmpt NAME"; options are listed one line each."""
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=OneLineHelp)


def _usage() -> str:
    lines = ["usage: mmpt COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`mmpt COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mmpt: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name == "train":  # a rank started as `mmpt train`: a save request during the imports is caught too
        stopping.catch_early(rest)
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
