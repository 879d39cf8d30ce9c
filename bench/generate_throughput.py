"""New tokens/s of `mmpt generate`'s engines against Hugging Face `generate`, side by side in one run.

    python bench/generate_throughput.py                      # 4 HumanEval problems, n=20, tiny GPT-2
    python bench/generate_throughput.py --problems 8 --max-new-tokens 128 --hidden 256 --layers 6

The baseline is what a user would pick instead: `model.generate` batched per problem with
`num_return_sequences=n` (its prompt prefilled once and expanded), the same sampling (T=0.8,
top-p 0.95) and stopping (`<eot>`, --max-new-tokens). A one-sample-at-a-time `generate` loop is an
extra line, and the vLLM engine's rate is printed when vLLM is installed in this interpreter.
All run in this invocation on the same random checkpoint, prompts and device; the line to read is
the ratio. The checkpoint's head is biased toward indented code-like tokens and never toward
`<eot>` or a column-0 line, so every sample runs to --max-new-tokens on every side and the token
counts agree. Model loads are left out of every side. Not a test: numbers depend on the machine.
On a CPU shared with other jobs, `OMP_NUM_THREADS=1` keeps torch's thread pool from dominating.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from mmpt.data.instances import encode_prompt, sentinel_ids
from mmpt.data.separation import SeparationMap
from mmpt.eval.benchmarks.registry import load_problems
from mmpt.eval.completion import CodeText
from mmpt.eval.engines import SamplingConfig, sample_seed
from mmpt.eval.engines.ours import load_checkpoint
from mmpt.eval.generate import GenerateConfig, open_checkpoint, open_engine, vllm_installed
from mmpt.model.folder import save_model

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "assets" / "tokenizer"
# tokens the head favours: lines stay indented, so no sample ends before --max-new-tokens
FAVOURED = ("ĠĠĠ", "Ġreturn", "Ġa", "Ġ+", "Ġb", "ĊĠĠĠ", "ĊĠĠĠĠĠĠĠ", "Ġif", "Ġ=")


@dataclass(frozen=True)
class BenchConfig:
    problems: int = 4  # HumanEval problems
    n: int = 20  # samples per problem
    max_new_tokens: int = 64
    batch_size: int = 20
    hidden: int = 128  # GPT-2 width
    layers: int = 4
    seed: int = 0
    repeats: int = 3  # rounds; each side's fastest is reported
    loop: int = 1  # 1: also time the one-sample-at-a-time generate loop (slow), once


def build_checkpoint(c: BenchConfig, directory: Path) -> Path:
    """A random GPT-2 with the test tokenizer, causal and unseparated, saved as `mmpt export` would."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    smap = SeparationMap("none", len(tokenizer))
    torch.manual_seed(c.seed)
    config = AutoConfig.for_model(
        "gpt2",
        vocab_size=len(tokenizer),
        n_embd=c.hidden,
        n_layer=c.layers,
        n_head=4,
        n_positions=2048,
        tie_word_embeddings=False,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        # the final norm adds a constant direction that the favoured output rows point along
        model.transformer.ln_f.bias.fill_(1.0)
        for token_id in tokenizer.convert_tokens_to_ids(list(FAVOURED)):
            model.lm_head.weight[token_id] = 6.0 / c.hidden
    save_model(model, smap, directory, tokenizer)
    (directory / "mmpt.json").write_text(json.dumps({"layout": "docstring-first", "objective": "code-clm"}))
    return directory


def load_prompts(c: BenchConfig, model_dir: Path) -> tuple[list[list[int]], list[int]]:
    """(one prompt per sample, its seed): the n samples of a problem are adjacent, as `mmpt generate` orders them."""
    checkpoint = open_checkpoint(model_dir)
    problems = load_problems("humaneval", limit=c.problems)
    prompts, seeds = [], []
    for p in problems:
        ids = encode_prompt(checkpoint.tokenizer, checkpoint.smap, checkpoint.meta.layout, p.docstring, p.signature, p.given)[0]
        for k in range(c.n):
            prompts.append(ids)
            seeds.append(sample_seed(c.seed, p.task_id, k))
    return prompts, seeds


def timed(engines: dict, prompts: list[list[int]], seeds: list[int], repeats: int) -> dict[str, tuple[int, float]]:
    """(new tokens, seconds) of one call of each engine over every sample: the fastest of `repeats`
    rounds, the engines taking turns in each round (a shared machine's load hits every side alike),
    after a warm-up call on two samples."""
    best: dict[str, tuple[int, float]] = {}
    for engine in engines.values():
        engine.generate(prompts[:2], seeds[:2])
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            tokens = sum(map(len, engine.generate(prompts, seeds)))
            seconds = time.perf_counter() - start
            if name not in best or seconds < best[name][1]:
                best[name] = (tokens, seconds)
    return best


def mmpt_engine(name: str, c: BenchConfig, model_dir: Path, sampling: SamplingConfig):
    """An engine as `mmpt generate --engine NAME` runs it: our engine in batches of --batch-size."""
    checkpoint = open_checkpoint(model_dir)
    config = GenerateConfig(model_dir, model_dir / "unused.jsonl", n=c.n, sampling=sampling, batch_size=c.batch_size)
    return open_engine(name, config, checkpoint, CodeText(checkpoint.tokenizer, checkpoint.smap))


class HFGenerate:
    """Hugging Face `generate` with the same sampling and stopping; `per_call` samples of one prompt per call."""

    def __init__(self, model_dir: Path, sampling: SamplingConfig, per_call: int) -> None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, tokenizer, _, _ = load_checkpoint(model_dir, device)
        self.ids = sentinel_ids(tokenizer)
        self.sampling, self.per_call, self.device = sampling, per_call, device

    def generate(self, prompts: list[list[int]], seeds: list[int]) -> list[list[int]]:
        torch.manual_seed(seeds[0])
        rows = []
        start = 0
        while start < len(prompts):
            k = 1  # samples of this prompt in this call: consecutive equal prompts, up to per_call
            while k < self.per_call and start + k < len(prompts) and prompts[start + k] == prompts[start]:
                k += 1
            x = torch.tensor([prompts[start]], device=self.device)
            y = self.model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=True,
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                max_new_tokens=self.sampling.max_new_tokens,
                num_return_sequences=k,
                eos_token_id=self.ids.eot,
                pad_token_id=self.ids.pad,
            )
            for row in y[:, x.shape[1] :].tolist():
                rows.append(row[: row.index(self.ids.eot)] if self.ids.eot in row else row)
            start += k
        return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in BenchConfig().__dict__.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=value)
    c = BenchConfig(**vars(ap.parse_args()))
    sampling = SamplingConfig(greedy=False, temperature=0.8, top_p=0.95, max_new_tokens=c.max_new_tokens)
    baseline = "HF generate, batched (num_return_sequences=n)"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_checkpoint(c, Path(tmp) / "hf")
        prompts, seeds = load_prompts(c, model_dir)
        engines = {
            baseline: HFGenerate(model_dir, sampling, c.n),
            "mmpt generate, our engine": mmpt_engine("ours", c, model_dir, sampling),
        }
        rates = timed(engines, prompts, seeds, c.repeats)
        if c.loop:
            loop = {"HF generate, one sample at a time": HFGenerate(model_dir, sampling, 1)}
            rates.update(timed(loop, prompts, seeds, 1))  # an extra line: slow, measured once
        if vllm_installed():
            rates.update(
                timed(
                    {"mmpt generate --engine vllm": mmpt_engine("vllm", c, model_dir, sampling)},
                    prompts,
                    seeds,
                    c.repeats,
                )
            )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}; {c.problems} problems x n={c.n}, max_new_tokens {c.max_new_tokens}, batch {c.batch_size}")
    for name, (tokens, seconds) in rates.items():
        print(f"{name:50s} {tokens:6d} tokens in {seconds:6.2f}s = {tokens / seconds:8.1f} tok/s")
    for name, (tokens, seconds) in rates.items():
        if name != baseline:
            print(f"ratio ({name} / HF batched): {tokens / seconds / (rates[baseline][0] / rates[baseline][1]):.2f}x")
    if not vllm_installed():
        print("vLLM is not installed here: run this from the vLLM venv (docs/evaluation.md) to add its line")


if __name__ == "__main__":
    main()
