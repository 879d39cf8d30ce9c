"""Names of Hugging Face hub repositories: the one-line error when the hub cannot give one.

A model, tokenizer or pairs dataset is named by a local path or by a hub repository. When the
name is no local path and the hub cannot give it (offline, `HF_HUB_OFFLINE=1` or no network, with
no cached copy; no such repository), transformers, huggingface_hub and datasets raise errors of
their own, tracebacks or several lines that never say what to do. `from_hub` turns each into a
`HubMiss`: one line naming the repository, the option it was given as, and how to give a local
copy instead.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from mmpt.config import ConfigError

# a hub repository id: `name` or `namespace/name` (letters, digits, `-`, `_`, `.`; no leading dot)
REPO_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")


class HubMiss(ConfigError):
    """A hub repository that could not be had; the message is one line."""


def offline() -> bool:
    """Whether the hub is switched off here (huggingface_hub's and the libraries' own variables)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in ("1", "on", "yes", "true") for n in names)


def download_hint(name: str, *, dataset: bool = False) -> str:
    """How to get a local copy of repository `name`."""
    kind = " --repo-type dataset" if dataset else ""
    return f"download it where there is network (`hf download {name}{kind} --local-dir DIR`)"


def miss_message(name: str, option: str, cause: BaseException | str, *, dataset: bool = False) -> str:
    """One line: `option`'s value `name` is no local path and the hub cannot give it, why, and what to do."""
    if offline():
        why = "HF_HUB_OFFLINE is set and it is not in the cache"
    else:
        first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
        why = f"{type(cause).__name__}: {first[:200]}" if isinstance(cause, BaseException) else first[:200]
    local = "file or folder" if dataset else "folder"
    return (
        f"{option}: {name!r} is not a local {local}, and the Hugging Face hub cannot give it ({why}); "
        f"{download_hint(name, dataset=dataset)} and give DIR as {option}"
    )


@contextlib.contextmanager
def from_hub(name: str, option: str, *, dataset: bool = False) -> Iterator[None]:
    """Run the body, which loads `name`; its failure to get `name` from the hub becomes one `HubMiss` line.

    `option` is how the user gave the name (`--tokenizer`, `config field 'model'`). A name that is a
    local path is left to the loader's own errors, which name the file.
    """
    if Path(name).exists():
        yield
        return
    if not REPO_ID.fullmatch(name):  # a path (`runs/x/final`, `/data/tok`, `./tok`), not a repository
        raise HubMiss(f"{option}: no such file or folder {name!r}")
    from huggingface_hub.errors import EntryNotFoundError

    try:
        yield
    except HubMiss:
        raise
    except (OSError, ValueError, EntryNotFoundError) as e:  # what the three libraries raise for a repository they cannot get
        raise HubMiss(miss_message(name, option, e, dataset=dataset)) from None
