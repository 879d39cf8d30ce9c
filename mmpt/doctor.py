"""`mmpt doctor`: preflight checks to run before a long job; one line per check, non-zero on failure.

    mmpt doctor                                   # tiny random gpt2, gpt_neo, llama; every verified attention
    mmpt doctor --arch gpt_neo --attn eager
    mmpt doctor --model path/to/checkpoint --attn sdpa
    mmpt doctor --vllm-python .venv-vllm/bin/python   # and the vLLM engine in its own venv

Each check is a small function `(DoctorConfig) -> Iterable[CheckResult]`, listed once in `CHECKS`:
model checks (sentinels, separation, packed attention), then the environment (Slurm, MPI, sandbox,
the vLLM engine, DeepSpeed). The tiny random models live in `mmpt.model.tiny`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from mmpt.cli import command_parser
from mmpt.data.instances import sentinel_ids
from mmpt.data.separation import SeparationMap
from mmpt.eval.sandbox.host import Sandbox, SandboxConfig
from mmpt.modality import CODE, COMMENTS, EOT, MASK, NL, OBJECTIVES, PYTHON
from mmpt.model.attention import SUPPORTED, attention_path, check_supported, mask_from_allowed, packed_forward
from mmpt.model.split_embeddings import extend_model
from mmpt.model.tiny import tiny_model, tiny_tokenizer
from mmpt.objectives import Collator

DEFAULT_ARCHS = ("gpt2", "gpt_neo", "llama", "mmpt_pangu")


@dataclass(frozen=True)
class DoctorConfig:
    """What to check."""

    model: str | None = None  # a Hugging Face name or checkpoint path; None = tiny random models of `archs`
    archs: tuple[str, ...] = DEFAULT_ARCHS  # model types of the tiny random models (without `model`)
    attn: tuple[str, ...] | None = None  # attention implementations to check; None = every verified one
    tol: float = 1e-5  # max abs logit difference accepted (fp32)
    seed: int = 0
    vllm_python: str | None = None  # the interpreter of the vLLM venv to check; None = this one (vLLM optional)


class CheckResult(NamedTuple):
    name: str
    ok: bool
    detail: str


Check = Callable[[DoctorConfig], Iterable[CheckResult]]


# ---------------------------------------------------------------------------- models to check


def _tokenizer(config: DoctorConfig):
    if config.model is None:
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(config.model)


def _load_model(config: DoctorConfig, arch: str, impl: str, vocab: int):
    if config.model is not None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(config.model, attn_implementation=impl, dtype=torch.float32)
    else:
        model = tiny_model(arch, impl, vocab=vocab, seed=config.seed)
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def _targets(config: DoctorConfig) -> list[tuple[str, str]]:
    """(model_type, attention implementation) pairs to check."""
    if config.model is not None:
        from transformers import AutoConfig

        archs = (AutoConfig.from_pretrained(config.model).model_type,)
    else:
        archs = config.archs
    return [(arch, impl) for arch in archs for impl in (config.attn or SUPPORTED.get(arch, ("sdpa",)))]


# ---------------------------------------------------------------------------- checks


def check_sentinels(config: DoctorConfig) -> Iterable[CheckResult]:
    """The tokenizer has every sentinel, each a single token that survives encoding."""
    tok = _tokenizer(config)
    ids = sentinel_ids(tok)
    split = [s for s in (COMMENTS, PYTHON, EOT, MASK) if len(tok(s, add_special_tokens=False)["input_ids"]) != 1]
    if split:
        yield CheckResult("sentinels", False, f"{split} do not encode to a single token")
        return
    yield CheckResult(
        "sentinels", True, f"comments={ids.comments} python={ids.python} eot={ids.eot} mask={ids.mask} pad={ids.pad}"
    )


def check_separation(config: DoctorConfig) -> Iterable[CheckResult]:
    """The separation map fits the tokenizer and model and round-trips; code copies start as originals."""
    tok = _tokenizer(config)
    if config.model is not None:
        from transformers import AutoConfig

        smap = SeparationMap.load_or_none(config.model, base_vocab_size=len(tok))
        rows = AutoConfig.from_pretrained(config.model).get_text_config().vocab_size
        problems = []
        if smap.base_vocab_size != len(tok):
            problems.append(f"map base_vocab_size {smap.base_vocab_size} != tokenizer length {len(tok)}")
        if rows < smap.vocab_size:
            problems.append(f"model has {rows} embedding rows, the map needs {smap.vocab_size}")
        problems += _round_trip_problems(smap)
        detail = "; ".join(problems) or f"{smap.separation}: {len(smap.separated)} separated, {rows} rows"
        yield CheckResult("separation", not problems, detail)
        return
    # Random models: extend one per separation and check the copies are initialised from the originals.
    base = len(tok)
    for separation, separated in (("partial", list(range(6, base, 3))), ("full", list(range(base)))):
        smap = SeparationMap(separation, base, separated)
        model = _load_model(config, "gpt2", "eager", base)
        extend_model(model, smap, mean_resizing=False)
        w = model.get_input_embeddings().weight
        diff = (w[base : smap.vocab_size] - w[torch.as_tensor(separated)]).abs().max().item()
        problems = _round_trip_problems(smap) + ([f"code copies differ from originals by {diff:.1e}"] if diff else [])
        yield CheckResult(
            f"separation {separation}", not problems, "; ".join(problems) or f"{len(separated)} code copies, diff {diff:.1e}"
        )


def _round_trip_problems(smap) -> list[str]:
    ids = torch.arange(smap.base_vocab_size)
    if not torch.equal(smap.to_original(smap.to_code(ids)), ids):
        return ["to_original(to_code(id)) != id"]
    return []


def _instances(nl_vocab: torch.Tensor, sentinels, gen: torch.Generator, count: int = 3) -> list[tuple[list[int], list[int]]]:
    """Random docstring-first instances: <comments> doc <python> code <eot>, with their modality."""
    out = []
    for _ in range(count):
        n_doc, n_code = (int(x) for x in torch.randint(2, 7, (2,), generator=gen))
        doc = nl_vocab[torch.randint(len(nl_vocab), (n_doc,), generator=gen)].tolist()
        code = nl_vocab[torch.randint(len(nl_vocab), (n_code,), generator=gen)].tolist()
        ids = [sentinels.comments, *doc, sentinels.python, *code, sentinels.eot]
        out.append((ids, [NL] * (n_doc + 2) + [CODE] * (n_code + 1)))
    return out


def _reference_allowed(lengths: list[int], prefix: torch.Tensor, n: int) -> torch.Tensor:
    """(1, n, n) bool built by hand, instance by instance: the dense mask packed attention must equal."""
    allowed = torch.zeros(1, n, n, dtype=torch.bool)
    start = 0
    for length in lengths + [1] * (n - sum(lengths)):  # each tail pad is its own instance
        for q in range(start, start + length):
            for k in range(start, start + length):
                allowed[0, q, k] = k <= q or bool(prefix[0, q] and prefix[0, k])
        start += length
    return allowed


def _packed_row(collator, sentinels, seed: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """A collated row of three random instances and two tail pads, and the instance lengths."""
    gen = torch.Generator().manual_seed(seed)
    instances = _instances(torch.as_tensor(collator.nl_vocab), sentinels, gen)
    lengths = [len(ids) for ids, _ in instances]
    row = {
        "input_ids": [i for ids, _ in instances for i in ids],
        "position_ids": [p for n in lengths for p in range(n)],
        "modality": [m for _, mod in instances for m in mod],
        "row": 0,
    }
    collator.pad_to = sum(lengths) + 2
    return collator([row]), lengths


@torch.no_grad()
def _max_diff(model, impl: str, batch: dict[str, torch.Tensor], lengths: list[int]) -> float:
    """Max |packed - reference| over the row: each instance alone (the stock model's own causal mask,
    or a hand-built dense mask when there is a prefix), and the whole row under a hand-built mask."""
    device = batch["input_ids"].device
    has_prefix = bool(batch["prefix"].any())
    packed = packed_forward(model, batch)[0]  # (N, V)
    if torch.isnan(packed).any():
        return float("nan")
    diffs, start = [], 0
    for n in lengths:
        one = {k: v[:, start : start + n] for k, v in batch.items() if v.dim() == 2}  # (B, N) columns, not loss_index
        mask = None
        if has_prefix:
            mask = mask_from_allowed(_reference_allowed([n], one["prefix"].cpu(), n).to(device), impl)
        alone = model(input_ids=one["input_ids"], attention_mask=mask).logits[0]
        diffs.append((packed[start : start + n] - alone).abs().max().item())
        start += n
    n = batch["input_ids"].shape[1]
    mask = mask_from_allowed(_reference_allowed(lengths, batch["prefix"].cpu(), n).to(device), impl)
    dense = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask).logits[0]
    diffs.append((packed - dense).abs().max().item())
    return max(diffs)


def _flex_diff(model, batch: dict[str, torch.Tensor]) -> float:
    """Max |flex + BlockMask - eager + dense mask| over a packed row, same weights (forward only:
    torch has no flex backward on CPU)."""
    with torch.no_grad():
        fast = packed_forward(model, batch)
        model.set_attn_implementation("eager")
        try:
            dense = packed_forward(model, batch)
        finally:
            model.set_attn_implementation("flex_attention")
    return (fast - dense).abs().max().item()


def check_packed(config: DoctorConfig) -> Iterable[CheckResult]:
    """For each objective: logits of a packed row equal each instance run alone and the row under a
    hand-built dense mask."""
    tok = _tokenizer(config)
    sentinels = sentinel_ids(tok)
    smap = SeparationMap("none", len(tok))
    for arch, impl in _targets(config):
        try:
            check_supported(arch, impl)
        except ValueError as e:
            yield CheckResult(f"packed {arch}/{impl}", False, str(e))
            continue
        model = _load_model(config, arch, impl, len(tok))
        device = next(model.parameters()).device
        for objective in OBJECTIVES:
            batch, lengths = _packed_row(Collator(objective, sentinels, smap, seed=config.seed), sentinels, config.seed)
            batch = {k: v.to(device) for k, v in batch.items()}
            diff = _flex_diff(model, batch) if impl == "flex_attention" else _max_diff(model, impl, batch, lengths)
            ok = diff <= config.tol  # False for NaN too
            yield CheckResult(
                f"packed {arch}/{impl}/{objective}",
                ok,
                f"max diff {diff:.1e} (tol {config.tol:.0e}); {attention_path(arch, impl)}",
            )


def check_compiler(config: DoctorConfig) -> Iterable[CheckResult]:
    """A C compiler and the Python headers, where flex_attention is checked: transformers runs flex
    under `torch.compile`, and on a GPU Triton builds a C helper against Python.h with the node's
    compiler (`$CC`, else gcc, else clang) at the first step ("Failed to find C compiler")."""
    if not any(impl == "flex_attention" for _, impl in _targets(config)):
        return
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    include = sysconfig.get_paths()["include"]
    if not cc or not shutil.which(cc.split()[0]):
        yield CheckResult(
            "compiler",
            False,
            f"no C compiler (CC={os.environ.get('CC', '')!r}, no gcc or clang): flex_attention cannot compile; install gcc or set CC",
        )
        return
    if not (Path(include) / "Python.h").is_file():
        yield CheckResult(
            "compiler",
            False,
            f"{cc}: no Python headers ({include}/Python.h): install the python3-dev package of this interpreter",
        )
        return
    with tempfile.TemporaryDirectory() as tmp:  # what Triton does: a shared object that includes Python.h
        source = Path(tmp) / "probe.c"
        source.write_text("#include <Python.h>\nint mmpt_probe(void) { return Py_IsInitialized(); }\n")
        cmd = [*cc.split(), str(source), "-O1", "-shared", "-fPIC", f"-I{include}", "-o", str(Path(tmp) / "probe.so")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        yield CheckResult("compiler", False, f"{cc} cannot build against {include}/Python.h: {tail}")
        return
    yield CheckResult("compiler", True, f"{cc} builds against {include}/Python.h (flex_attention's run-time compile)")


# ---------------------------------------------------------------------------- Slurm, MPI, sandbox, vLLM
# A component that is absent is reported, not failed (a laptop needs no Slurm); one that is present
# but broken fails.

_ABSENT = 3  # exit status of a probe child that found an optional component not installed


def _command(cmd: list[str], timeout: float = 60) -> tuple[int, str]:
    """(exit status, stdout+stderr stripped) of `cmd`; 127 when it cannot be started."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, f"{type(e).__name__}: {e}"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_slurm(config: DoctorConfig) -> Iterable[CheckResult]:
    """Slurm clients, the controller and the pmi2 MPI plugin that slurm/eval.sh uses.

    An unreachable controller fails only where a cluster is expected: inside a job or with
    SLURM_CONF set.
    """
    if shutil.which("sbatch") is None:
        yield CheckResult("slurm", True, "not installed (sbatch slurm/*.sh unavailable; other launchers work)")
        return
    status, version = _command(["sbatch", "--version"])  # even --version needs a Slurm config
    version = version if status == 0 else "Slurm"
    status, ping = _command(["scontrol", "ping"])
    expected = "SLURM_JOB_ID" in os.environ or "SLURM_CONF" in os.environ
    if status != 0 or "UP" not in ping:
        reason = ping.splitlines()[-1] if ping else f"exit {status}"
        note = "" if expected else " (no SLURM_CONF and not in a job: informational)"
        yield CheckResult("slurm", not expected, f"{version}; controller unreachable: {reason}{note}")
        return
    _, plugins = _command(["srun", "--mpi=list"])
    has_pmi2 = "pmi2" in plugins.split()
    detail = f"{version}; {ping.splitlines()[0]}; srun --mpi=pmi2 {'available' if has_pmi2 else 'MISSING'}"
    yield CheckResult("slurm", has_pmi2, detail)


def check_mpi(config: DoctorConfig) -> Iterable[CheckResult]:
    """mpi4py loads an MPI library (in a child: MPI_Init stays out of this process) and mpiexec exists.

    No MPI library at all is optional, not a failure: only `mpiexec -n K mmpt execute` and
    slurm/eval.sh's execution step need one (the `mpi` extra brings MPICH)."""
    probe = (
        "import sys\n"
        "try:\n"
        "    from mpi4py import MPI\n"
        "except RuntimeError as e:\n"  # mpi4py's own message when it finds no libmpi to load
        "    if not str(e).startswith('cannot load MPI library'): raise\n"
        f"    sys.exit({_ABSENT})\n"
        "print(' '.join(MPI.Get_library_version().splitlines()[0].split()))"
    )
    status, out = _command([sys.executable, "-c", probe])
    if status == _ABSENT:
        yield CheckResult(
            "mpi",
            True,
            "optional, not installed: mpi4py finds no MPI library (`mpiexec -n K mmpt execute` and slurm/eval.sh "
            "need one: pip install 'mmpt[mpi]', or the site's MPI)",
        )
        return
    if status != 0:
        tail = out.splitlines()[-1] if out else f"exit {status}"
        yield CheckResult("mpi", False, f"mpi4py cannot load its MPI library: {tail}")
        return
    mpiexec = shutil.which("mpiexec") or "no mpiexec on PATH (srun --mpi=pmi2 still works)"
    yield CheckResult("mpi", True, f"mpi4py with {out.splitlines()[-1]}; {mpiexec}")


def check_sandbox(config: DoctorConfig) -> Iterable[CheckResult]:
    """The execution sandbox runs a passing program as passed and a failing one as failed."""
    if shutil.which("bwrap") is None:
        yield CheckResult("sandbox", True, "bubblewrap not installed: `mmpt execute` will refuse (apt-get install bubblewrap)")
        return
    with Sandbox(SandboxConfig(mode="bwrap")) as box:
        good = box.run("assert sum(range(4)) == 6", timeout=10.0)
        bad = box.run("assert sum(range(4)) == 7", timeout=10.0)
    ok = good.status == "passed" and bad.status == "failed"
    yield CheckResult(
        "sandbox",
        ok,
        f"bwrap: passing program {good.status}, failing program {bad.status}" + ("" if ok else f" ({good.detail or bad.detail})"),
    )


def check_vllm(config: DoctorConfig) -> Iterable[CheckResult]:
    """The vLLM engine (`mmpt generate --engine vllm`) imports in `config.vllm_python`: vLLM, then
    mmpt's engine module on top of it (the API it uses). vLLM pins its own torch and transformers,
    so it lives in a venv of its own; absent from this interpreter it is optional, absent from an
    interpreter named with --vllm-python it fails."""
    python = config.vllm_python or sys.executable
    probe = (
        "import importlib.util, sys\n"
        f"if importlib.util.find_spec('vllm') is None: sys.exit({_ABSENT})\n"
        "import torch, transformers, vllm, mmpt.eval.engines.vllm\n"
        "print('mmpt-vllm', vllm.__version__, torch.__version__, transformers.__version__)"
    )
    status, out = _command([python, "-c", probe], timeout=600)  # vLLM's import takes seconds to a minute
    found = [line.split()[1:] for line in out.splitlines() if line.startswith("mmpt-vllm ")]
    if status == _ABSENT and config.vllm_python is None:
        yield CheckResult(
            "vllm",
            True,
            "optional, not installed here: `--engine vllm` runs from a venv of its own (docs/evaluation.md); "
            "`mmpt doctor --vllm-python VENV/bin/python` checks one",
        )
    elif status == 0 and found:
        vllm, torch_version, transformers = found[-1]
        yield CheckResult("vllm", True, f"vllm {vllm} (torch {torch_version}, transformers {transformers}) in {python}")
    else:
        reason = "no vLLM installed" if status == _ABSENT else (out.splitlines()[-1] if out else f"exit {status}")
        yield CheckResult("vllm", False, f"{python}: the vLLM engine cannot load: {reason}")


# ---------------------------------------------------------------------------- DeepSpeed (training)


def check_deepspeed(config: DoctorConfig) -> Iterable[CheckResult]:
    """DeepSpeed's version, the accelerator it picked, and which of its ops can be built here."""
    try:
        import deepspeed
        from deepspeed.accelerator import get_accelerator
        from deepspeed.ops.op_builder.all_ops import ALL_OPS
    except ImportError as e:
        yield CheckResult("deepspeed", False, f"cannot import deepspeed: {e} (pip install deepspeed)")
        return
    ops = sorted(n for n, b in ALL_OPS.items() if b is not None and n != "deepspeed_not_implemented" and b.is_compatible(False))
    accelerator = get_accelerator().device_name()
    yield CheckResult(
        "deepspeed", True, f"{deepspeed.__version__} on {accelerator}; ops that can build: {', '.join(ops) or 'none'}"
    )


CHECKS: list[Check] = [
    check_sentinels,
    check_separation,
    check_packed,
    check_compiler,
    check_slurm,
    check_mpi,
    check_sandbox,
    check_vllm,
    check_deepspeed,
]


# ---------------------------------------------------------------------------- running


def run_checks(config: DoctorConfig, checks: list[Check] | None = None) -> list[CheckResult]:
    """Run `checks` (default `CHECKS`); an exception inside a check becomes its failed result."""
    results = []
    for check in checks if checks is not None else CHECKS:
        try:
            got = check(config)
            results += [got] if isinstance(got, CheckResult) else list(got)
        except Exception as e:  # a check that crashes is a failed check, reported in one line
            results.append(CheckResult(check.__name__.removeprefix("check_"), False, f"{type(e).__name__}: {e}"))
    return results


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def parse_args(argv: list[str] | None) -> DoctorConfig:
    p = command_parser("mmpt doctor", "preflight checks before a long job")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="Hugging Face name or checkpoint path to check")
    which.add_argument("--arch", type=_csv, default=DEFAULT_ARCHS, help="tiny random models of these model types")
    p.add_argument("--attn", type=_csv, default=None, help="attention implementations (default: every verified one)")
    p.add_argument("--tol", type=float, default=1e-5, help="max abs logit difference accepted")
    p.add_argument("--vllm-python", metavar="PY", help="check the vLLM engine in this interpreter (its own venv's python)")
    a = p.parse_args(argv)
    return DoctorConfig(model=a.model, archs=a.arch, attn=a.attn, tol=a.tol, vllm_python=a.vllm_python)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    results = run_checks(config)
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed}/{len(results)} checks passed", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
