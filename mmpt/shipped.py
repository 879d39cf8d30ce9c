"""The configs shipped inside the package (mmpt/configs/*.yaml, the DeepSpeed JSONs) and the one
way a user's path or a shipped name is resolved to a file.

    find_file("configs/tiny-cpu.yaml", "configs")   # ./configs/tiny-cpu.yaml if it exists, else the shipped one
    find_file("tiny-cpu", "configs")                # the shipped mmpt/configs/tiny-cpu.yaml
    find_file("my/run.yaml", "configs")             # a file of the user's own

A path that exists (relative to the working directory, or absolute) always wins, so a user's own
`configs/X.yaml` shadows the shipped X. Otherwise the name is looked up among the shipped files,
with or without its folder prefix (`configs/`, `ds_configs/`) and suffix; this keeps the docs'
and the Slurm scripts' `configs/X.yaml` working from any directory and from an installed wheel.

The DeepSpeed JSONs live at the repository's root, `ds_configs/`, the one copy a user edits;
`mmpt/ds_configs` is a link to it, so that a checkout, an editable install and the wheel (which
setuptools builds by copying the files the link points to) all find them as package data.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
FOLDERS = {"configs": ".yaml", "ds_configs": ".json"}  # shipped folder -> the suffix of its files


def names(folder: str) -> list[str]:
    """The shipped files of `folder` ("configs" or "ds_configs"), by file name."""
    return sorted(p.name for p in (PACKAGE / folder).glob(f"*{FOLDERS[folder]}"))


def find_file(name: str | Path, folder: str) -> Path:
    """The file `name` names: the path itself if it exists, else the shipped file of that name in
    `folder`; FileNotFoundError saying where it looked and what is shipped."""
    path = Path(name)
    if path.is_file():
        return path
    parts = path.parts[1:] if path.parts[:1] == (folder,) else path.parts  # "configs/X.yaml" -> "X.yaml"
    if parts and not path.is_absolute():
        shipped = PACKAGE.joinpath(folder, *parts)
        for candidate in (shipped, shipped.with_name(shipped.name + FOLDERS[folder])):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{name}: not found (looked in {Path.cwd()} and among the shipped {folder}: {', '.join(names(folder))})"
    )
