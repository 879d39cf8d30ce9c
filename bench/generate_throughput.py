"""New tokens/s of `mmpt generate` (batched, KV-cached) against a one-sample-at-a-time `generate` loop.

    python bench/generate_throughput.py                      # 4 HumanEval problems, n=20, tiny GPT-2
    python bench/generate_throughput.py --problems 8 --max-new-tokens 128 --hidden 256 --layers 6

Both run in this invocation on the same random checkpoint, the same prompts and the same device;
the line to read is the ratio. The checkpoint's head is biased toward indented code-like tokens
and never toward `<eot>` or a column-0 line, so every sample runs to --max-new-tokens on both
sides and the token counts agree. Not a test: numbers depend on the machine. On a CPU shared with
other jobs, `OMP_NUM_THREADS=1` keeps torch's thread pool from dominating both sides.
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
from mmpt.eval import generate
from mmpt.eval.generate import GenerateConfig, SamplingConfig, load_checkpoint, run
from mmpt.eval.problems import load_problems
from mmpt.model.split_embeddings import save_model

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


def bench_mmpt(c: BenchConfig, model_dir: Path, out: Path, sampling: SamplingConfig) -> tuple[int, float]:
    """(new tokens, seconds) of `mmpt generate`'s run, counted at its decoder; model load included."""
    problems = load_problems("humaneval", limit=c.problems)
    counted = [0]
    decode = generate.Decoder.__call__

    def counting(self, prompts, generators=None):
        rows = decode(self, prompts, generators)
        counted[0] += sum(map(len, rows))  # ids kept; a row ended by <eot> drew one more, which never happens here
        return rows

    config = GenerateConfig(
        model_dir, out, n=c.n, sampling=sampling, batch_size=c.batch_size, seed=c.seed, progress=False
    )
    generate.Decoder.__call__ = counting
    try:
        start = time.perf_counter()
        run(config, problems)
        seconds = time.perf_counter() - start
    finally:
        generate.Decoder.__call__ = decode
    return counted[0], seconds


def bench_loop(c: BenchConfig, model_dir: Path, sampling: SamplingConfig) -> tuple[int, float]:
    """(new tokens, seconds) of Hugging Face `generate`, one sample at a time, same prompts and model.

    The model load is left out here; `mmpt generate`'s seconds include its own (a fraction of a second).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, smap, meta = load_checkpoint(model_dir, device)
    ids = sentinel_ids(tokenizer)
    prompts = [
        encode_prompt(tokenizer, smap, meta.layout, p.docstring, p.signature, p.given)[0]
        for p in load_problems("humaneval", limit=c.problems)
    ]
    torch.manual_seed(c.seed)
    tokens = 0
    start = time.perf_counter()
    for prompt in prompts:
        x = torch.tensor([prompt], device=device)
        for _ in range(c.n):
            y = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=ids.eot,
                pad_token_id=ids.pad,
            )
            tokens += y.shape[1] - x.shape[1]
    return tokens, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in BenchConfig().__dict__.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=value)
    c = BenchConfig(**vars(ap.parse_args()))
    sampling = SamplingConfig(greedy=False, temperature=0.8, top_p=0.95, max_new_tokens=c.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_checkpoint(c, Path(tmp) / "hf")
        ours_tokens, ours_s = bench_mmpt(c, model_dir, Path(tmp) / "samples.jsonl", sampling)
        loop_tokens, loop_s = bench_loop(c, model_dir, sampling)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}; {c.problems} problems x n={c.n}, max_new_tokens {c.max_new_tokens}, batch {c.batch_size}")
    print(f"one-at-a-time generate: {loop_tokens} tokens in {loop_s:.2f}s = {loop_tokens / loop_s:.1f} tok/s")
    print(f"mmpt generate:          {ours_tokens} tokens in {ours_s:.2f}s = {ours_tokens / ours_s:.1f} tok/s")
    print(f"ratio (mmpt / loop): {ours_tokens / ours_s / (loop_tokens / loop_s):.2f}x")


if __name__ == "__main__":
    main()
