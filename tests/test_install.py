"""What a user's clone and install get (pyproject.toml, package data): every extra resolves, the
wheel ships the benchmark data, and nothing in the repository reads a folder outside it.

The resolution test asks the package index (PyPI, as a user's `pip install` does): without one it
is skipped, which CI counts as a failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
EXTRAS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
# What only that extra brings: the resolution must hold it, so an extra that resolves to nothing fails.
BRINGS = {"demo": "matplotlib", "mpi": "mpich", "dev": "pytest"}
# A path outside the repository: the development machine's shared folder, which a user's clone lacks.
OUTSIDE = re.compile(r"\.\./shared|shared/data|/work/shared")


def tracked_files() -> list[Path]:
    """The repository's files as a clone has them (git's index; without git, the tree minus ignored folders)."""
    if (REPO / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        return [REPO / name for name in out.decode().split("\0") if name]
    ignored = {".git", ".venv", ".venv-vllm", "runs", "build", "__pycache__", ".pytest_cache"}
    return [p for p in REPO.rglob("*") if p.is_file() and not ignored & set(p.relative_to(REPO).parts)]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the tracked files: builds leave no build/ or egg-info in the checkout, and see only what a clone has."""
    root = tmp_path_factory.mktemp("clone")
    for path in tracked_files():
        target = root / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target, follow_symlinks=False)  # mmpt/ds_configs stays a link to ds_configs/
    return root


def test_no_tracked_file_reads_outside_the_repository():
    readers = []
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary package data
        readers += [
            f"{path.relative_to(REPO)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)
        ]
    assert not readers, "files that name a folder outside the repository:\n" + "\n".join(readers)


def test_the_wheel_ships_the_package_data(clone, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path), str(clone)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("mmpt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(clone).as_posix() for d in ("mmpt/eval/data", "mmpt/configs") for p in (clone / d).iterdir()]
    # the DeepSpeed JSONs: their one copy is the root's ds_configs/, shipped as mmpt/ds_configs/
    shipped += [f"mmpt/ds_configs/{p.name}" for p in (clone / "ds_configs").glob("*.json")]
    missing = sorted(set(shipped) - names)
    assert not missing, f"{wheel.name} lacks {missing}"
    assert "mmpt/ds_configs/zero3.json" in names
    assert {"mmpt/eval/data/mbpp.jsonl", "mmpt/eval/data/humaneval_x_python.jsonl.gz", "mmpt/eval/data/README.md"} <= names


def _index_reachable() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pip"], capture_output=True, timeout=120)
    return probe.returncode == 0


def test_every_extra_resolves(clone, tmp_path):
    """`pip install '.[extra]'` of each extra, resolved from scratch (--ignore-installed), one pip call each."""
    if not _index_reachable():
        pytest.skip("no package index reachable (PyPI)")
    assert set(BRINGS) == set(EXTRAS), f"pyproject.toml's extras are {EXTRAS}: say what each brings in BRINGS"
    runs = {
        extra: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(tmp_path / f"{extra}.json"),
                f"{clone}[{extra}]",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for extra in EXTRAS
    }
    for extra, run in runs.items():
        out, _ = run.communicate(timeout=900)
        errors = [line for line in out.splitlines() if line.startswith("ERROR")]
        assert run.returncode == 0, f"pip install '.[{extra}]' does not resolve:\n" + "\n".join(errors or out.splitlines()[-20:])
        report = json.loads((tmp_path / f"{extra}.json").read_text())
        names = {item["metadata"]["name"].lower() for item in report["install"]}
        assert {"mmpt", "torch", "transformers", "deepspeed", BRINGS[extra]} <= names, (extra, sorted(names))
