"""Run by tests/eval/engines/test_vllm.py inside a Python that has vLLM: both engines on tiny checkpoints.

    python tests/eval/engines/vllm_agreement.py OUT.json

Writes, per checkpoint (gpt2/llama, separated or not), the greedy code ids of our engine and of
vLLM for plain and incremental prompts, and for one prompt the first tokens drawn by each engine
at T=0.8, top-p 0.9 together with the exact nucleus distribution from the Hugging Face model's
logits (gpt2-full: separated, so the law is over the code vocabulary). The test compares them;
this script only generates (one vLLM start per checkpoint).
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from unittest.mock import patch

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from mmpt.data.instances import encode_prompt
from mmpt.data.separation import build_separation_map
from mmpt.eval import generate
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.completion import CodeText
from mmpt.eval.engines import SamplingConfig, sample_seed
from mmpt.eval.engines.ours import OursEngine, load_checkpoint
from mmpt.eval.engines.vllm import VllmEngine
from mmpt.eval.generate import GenerateConfig, open_checkpoint
from mmpt.model.folder import save_model
from mmpt.model.split_embeddings import restrict_to_code

REPO = Path(__file__).resolve().parents[3]
# head sizes of 32: vLLM's CPU attention supports no smaller
CONFIGS = {
    "gpt2": dict(n_embd=64, n_layer=2, n_head=2, n_positions=512),
    "llama": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    ),
}
# (arch, separation, layout, seed, scale, boost): weights drawn N(0, scale^2), then code-like tokens
# output rows pushed along random directions (`boost`); the draws were picked so that greedy
# samples of gpt2-none and llama-partial end at the end of the function part-way, others run to the limit
CASES = [
    ("gpt2", "none", "docstring-first", 1, 0.1, 1.0),
    ("gpt2", "full", "signature-first", 0, 0.15, 0.5),
    ("llama", "partial", "signature-first", 5, 0.15, 0.5),
    ("llama", "none", "docstring-first", 0, 0.15, 0.5),
]
FAVOURED = {
    "ĠĠĠ": 1.0,
    "Ġreturn": 1.2,
    "Ġa": 0.8,
    "Ġ+": 0.9,
    "Ċ": 0.9,
    "ĊĠĠĠ": 1.4,
    "def": 1.1,
    "Ġ=": 0.7,
    "Ġx": 0.6,
    "ĊĠĠĠĠĠĠĠ": 1.0,
}
MAX_NEW = 40
SAMPLED = "gpt2-full"  # its next-token law at T=0.8, top-p 0.9 is broad (~200 code ids), the others' are peaked
PLAIN = [
    Problem("T/0", "T/0", "Add two numbers.", "def add(a, b):", "", "add", "", ""),
    Problem("T/1", "T/1", "Count the vowels in s.", "def vowels(s):", "", "vowels", "", ""),
    Problem("T/2", "T/2", "Return the largest item of a list.", "def largest(xs):", "", "largest", "", ""),
]
INCREMENTAL = [
    Problem("T/1#1", "T/1", "Count the vowels in s.", "def vowels(s):", "    n = 0\n", "vowels", "", "", 1, 3),
    Problem(
        "T/2#2",
        "T/2",
        "Return the largest item.",
        "def largest(xs):",
        "    best = xs[0]\n    for x in xs:\n",
        "largest",
        "",
        "",
        2,
        4,
    ),
]
DRAWS = 3000


def build(arch: str, separation: str, layout: str, directory: Path, seed: int, scale: float, boost: float) -> Path:
    """A tiny checkpoint written as `mmpt export` would, that writes code-like tokens and follows its context."""
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "assets" / "tokenizer")
    smap, _ = build_separation_map(tokenizer, separation)
    config = AutoConfig.for_model(arch, vocab_size=smap.vocab_size, tie_word_embeddings=False, **CONFIGS[arch])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * scale)
        norm = model.transformer.ln_f if arch == "gpt2" else model.model.norm
        norm.weight.fill_(1.0)
        if arch == "gpt2":
            norm.bias.fill_(0.0)
        for token, weight in FAVOURED.items():
            row = smap.to_code(tokenizer.convert_tokens_to_ids([token]))[0]
            model.lm_head.weight[row] += boost * weight * torch.randn(config.get_text_config().hidden_size, generator=g)
    save_model(model, smap, directory, tokenizer)
    meta = {"layout": layout, "objective": "code-clm", "attn_implementation": "sdpa", "separation": separation}
    (directory / "mmpt.json").write_text(json.dumps(meta))
    return directory


def nucleus(model_dir: Path, prompt: list[int], temperature: float, top_p: float) -> list[float]:
    """The exact next-token distribution of `prompt`: code ids only, temperature, nucleus (float64)."""
    model, _, smap, _ = load_checkpoint(model_dir, torch.device("cpu"))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    logits = restrict_to_code(logits, smap.vocab_masks(logits.shape[0])[1])
    p = torch.softmax(logits / temperature, -1)
    order = p.argsort(descending=True)
    before = p[order].cumsum(0) - p[order]
    q = torch.zeros_like(p)
    q[order[before < top_p]] = p[order[before < top_p]]
    return (q / q.sum()).tolist()


def main(out: Path, cases: int) -> None:
    results = {}
    import tempfile

    root = Path(tempfile.mkdtemp())
    for k, (arch, separation, layout, seed, scale, boost) in enumerate(CASES[:cases]):
        name = f"{arch}-{separation}"
        model_dir = build(arch, separation, layout, root / name, seed, scale, boost)
        checkpoint = open_checkpoint(model_dir)
        text = CodeText(checkpoint.tokenizer, checkpoint.smap)
        case = {}
        greedy = SamplingConfig(greedy=True, max_new_tokens=MAX_NEW)
        ours = OursEngine(
            checkpoint,
            greedy,
            8,
            torch.device("cpu"),
            ended=text.ended,
            newline=text.newline_ids(AutoConfig.from_pretrained(model_dir).vocab_size),
        )
        engine = VllmEngine(checkpoint, greedy)
        for kind, problems in (("plain", PLAIN), ("incremental", INCREMENTAL)):
            prompts = [
                encode_prompt(checkpoint.tokenizer, checkpoint.smap, layout, p.docstring, p.signature, p.given)[0]
                for p in problems
            ]
            seeds = [sample_seed(0, p.task_id, 0) for p in problems]
            case[kind] = {
                "prompts": prompts,
                "ours": ours.generate(prompts, seeds),
                "vllm": engine.generate(prompts, seeds),
                "texts": [text.completion(p, g) for p, g in zip(prompts, ours.generate(prompts, seeds))],
                "base_vocab_size": checkpoint.smap.base_vocab_size,
            }
        if k == 0:
            # `mmpt generate --engine vllm` end to end (records, settings), on the engine already started
            samples = root / "samples.jsonl"
            config = GenerateConfig(model_dir, samples, n=2, sampling=greedy, engine="vllm", progress=False)
            with patch.object(generate, "open_engine", lambda *args, started=engine, **kwargs: started):
                generate.run(config, PLAIN)
            case["run"] = [json.loads(line) for line in samples.read_text().splitlines()]
        if name == SAMPLED:
            # sampling statistics: DRAWS first tokens of one prompt from each engine, and the exact law
            sampling = SamplingConfig(greedy=False, temperature=0.8, top_p=0.9, max_new_tokens=1)
            prompt = case["plain"]["prompts"][0]
            seeds = [sample_seed(1, "stats", i) for i in range(DRAWS)]
            engine.sampling = ours.sampling = ours.decoder.sampling = sampling
            ours.batch_size = 500

            def first(generated: list[int], stop_id: int = checkpoint.stop_id) -> int:
                return generated[0] if generated else stop_id  # the stop id is not returned

            case["sampling"] = {
                "vllm": [first(g) for g in engine.generate([prompt] * DRAWS, seeds)],
                "ours": [first(g) for g in ours.generate([prompt] * DRAWS, seeds)],
                "exact": nucleus(model_dir, prompt, 0.8, 0.9),
                # the same seeds in another batch give the same samples
                "vllm_again": [first(g) for g in engine.generate([prompt] * 50, seeds[:50])],
            }
        # whole samples of every prompt (twice each), in one batch and then alone: the seed decides
        engine.sampling = SamplingConfig(greedy=False, temperature=0.8, top_p=0.9, max_new_tokens=30)
        several = [p for kind in ("plain", "incremental") for p in case[kind]["prompts"] for _ in range(2)]
        seeds = [sample_seed(2, name, i) for i in range(len(several))]
        case["sampled"] = {
            "batch": engine.generate(several, seeds),
            "alone": [engine.generate([p], [s])[0] for p, s in zip(several[-3:], seeds[-3:])],
        }
        results[name] = case
        engine.llm.llm_engine.engine_core.shutdown()
        del engine
        gc.collect()
        print(f"{name}: done", flush=True)
    out.write_text(json.dumps(results))


if __name__ == "__main__":  # vLLM's engine starts processes: the guard is required
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else len(CASES))
