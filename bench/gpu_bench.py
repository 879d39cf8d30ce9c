"""The Python side of bench/gpu.sh: synthetic data of a real vocabulary size, parity checks, summary lines.

    python bench/gpu_bench.py data    --model NAME --out DIR [--tiny]
    python bench/gpu_bench.py check   --model NAME --data DIR --out FILE [--tiny]
    python bench/gpu_bench.py summary --model NAME --metrics FILE --check FILE --attn IMPL [--warmup 5]

`MODELS` holds the two shapes of the bench: PyCodeGPT (GPT-Neo 125M with its local attention
layers and 32k vocabulary) and a ~1.5B Qwen2 (151,646 tokens, tied head); `--tiny` shrinks the
layers (not the vocabulary's role) for the CPU dry run that CI runs. The tokenizer is synthetic:
a word-level vocabulary of the real size (Python keywords and punctuation, then identifiers
w0, w1, ...), so that embeddings, head and loss have their real cost without any hub access.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (HF architecture, attention implementation of the fast path, tokenizer words, tiny overrides)
MODELS: dict[str, dict] = {
    "pycodegpt-125m": {
        "arch": dict(
            model_type="gpt_neo",
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            window_size=256,
            attention_types=[[["global", "local"], 6]],
            max_position_embeddings=2048,
        ),
        "fast": "eager",  # transformers has only eager attention for GPT-Neo (no sdpa, no flex)
        "words": 32_000,
        "tiny": dict(hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=8),
    },
    "qwen2-1.5b": {
        "arch": dict(
            model_type="qwen2",
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            rope_theta=1_000_000.0,
        ),
        "fast": "flex_attention",
        "words": 151_646,
        "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    },
}
TINY_WORDS = 3000
KEYWORDS = [
    "def",
    "return",
    "a",
    "b",
    "Compute",
    "the",
    "value",
    "from",
    "and",
    "of",
    "number",
    "(",
    ")",
    ":",
    ",",
    "=",
    "+",
    "-",
    "*",
    ".",
    "0",
    "1",
]


def arch(name: str, tiny: bool) -> dict:
    spec = MODELS[name]
    return spec["arch"] | (spec["tiny"] if tiny else {})


def make_tokenizer(words: int, out: Path):
    """A word-level tokenizer of `words` entries (sentinels included), saved to `out`."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    from mmpt.modality import COMMENTS, EOT, MASK, PAD, PYTHON

    specials = [PAD, COMMENTS, PYTHON, EOT, MASK, "<unk>"]
    vocab = specials + KEYWORDS
    vocab += [f"w{i}" for i in range(words - len(vocab))]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token="<unk>", additional_special_tokens=[COMMENTS, PYTHON, EOT, MASK]
    )
    fast.save_pretrained(out)
    return fast


def cmd_data(a: argparse.Namespace) -> None:
    """Synthetic pairs of ~400 tokens over the whole vocabulary, prepared (partial separation) for 2048."""
    from mmpt.data.prepare import PrepareConfig, prepare

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    words = TINY_WORDS if a.tiny else MODELS[a.model]["words"]
    make_tokenizer(words, out / "tokenizer")
    rng = random.Random(0)
    ident = lambda: f"w{rng.randrange(words - 40)}"  # noqa: E731
    n_pairs, lines = (60, (3, 6)) if a.tiny else (4000, (20, 40))
    with (out / "pairs.jsonl").open("w") as f:
        for _i in range(n_pairs):
            body = "\n".join(f"    {ident()} = a * {ident()} + b - {ident()}" for _ in range(rng.randint(*lines)))
            doc = f"Compute the value {ident()} of {ident()} from a and b."
            f.write(json.dumps({"docstring": doc, "code": f"def {ident()}(a, b):\n{body}\n    return a\n"}) + "\n")
    seq = 256 if a.tiny else 2048
    prepare(PrepareConfig(str(out / "pairs.jsonl"), str(out / "tokenizer"), str(out / "data"), "partial", max_seq_length=seq))


def _batch(data_dir: Path, rows: int, objective: str, device: torch.device) -> tuple[dict, object, object]:
    from mmpt.data.instances import sentinel_ids
    from mmpt.data.prepare import load_prepared
    from mmpt.data.separation import SeparationMap
    from mmpt.data.tokenizer import load_tokenizer
    from mmpt.objectives import Collator

    prepared, _ = load_prepared(data_dir)
    smap = SeparationMap.load(data_dir)
    collator = Collator(objective, sentinel_ids(load_tokenizer(str(data_dir / "tokenizer"))), smap, seed=0)
    got = prepared[list(range(rows))]
    keys = ("input_ids", "position_ids", "modality")
    batch = collator([{k: got[k][j] for k in keys} | {"row": j} for j in range(rows)])
    return {k: v.to(device) for k, v in batch.items()}, smap, prepared


def cmd_check(a: argparse.Namespace) -> None:
    """Loss and gradients of the fast path (its attention + fused loss) against the reference path
    (dense-mask attention + `modality_loss` on the stock logits), same weights, fp32, one batch.

    On CPU torch has no flex backward: there the fused loss is checked with the dense mask
    (gradients included) and flex's forward on its own (logits)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mmpt.model.attention import attention_path, packed_forward
    from mmpt.model.fused_loss import packed_loss
    from mmpt.model.loss import modality_loss
    from mmpt.model.split_embeddings import extend_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity: no TF32 rounding on either side
    torch.backends.cudnn.allow_tf32 = False
    data_dir = Path(a.data) / "data"
    fast = MODELS[a.model]["fast"]
    objective = "prefix-code-clm"  # the bidirectional NL prefix: the hardest mask
    batch, smap, _ = _batch(data_dir, 2, objective, device)
    spec = dict(arch(a.model, a.tiny))
    model_type = spec.pop("model_type")
    ref_impl = "eager" if model_type == "gpt_neo" else "sdpa"
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **spec, vocab_size=smap.base_vocab_size)
    with torch.device(device):  # built on the GPU: a CPU init of 1.5B parameters would take a minute
        model = AutoModelForCausalLM.from_config(config, attn_implementation=ref_impl, dtype=torch.float32)
    model.eval()  # no dropout: both paths must compute the same function
    nl, code = smap.vocab_masks(extend_model(model, smap))

    def grads() -> dict[str, torch.Tensor]:
        out = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return out

    ref = modality_loss(packed_forward(model, batch), batch["labels"], batch["modality"], nl, code)
    (ref.total_sum / ref.total_count).backward()
    want = grads()
    result = {"attention": attention_path(model_type, fast), "tokens": int(ref.total_count)}
    backward_here = not (fast == "flex_attention" and device.type == "cpu")
    model.set_attn_implementation(fast)
    if backward_here:
        got = packed_loss(model, batch, nl, code)
        (got.total_sum / got.total_count).backward()
        have = grads()
    else:
        with torch.no_grad():
            got = packed_loss(model, batch, nl, code)  # flex forward + fused loss forward
            logits_fast = packed_forward(model, batch)
        model.set_attn_implementation(ref_impl)
        with torch.no_grad():
            result["logits_max_diff"] = (logits_fast - packed_forward(model, batch)).abs().max().item()
        fused = packed_loss(model, batch, nl, code)  # the fused loss's gradients with the dense mask
        (fused.total_sum / fused.total_count).backward()
        have = grads()
    result["loss_ref"] = (ref.total_sum / ref.total_count).item()
    result["loss_fast"] = (got.total_sum / got.total_count).item()
    result["loss_rel_diff"] = abs(result["loss_fast"] - result["loss_ref"]) / abs(result["loss_ref"])
    # the worst parameter by relative L2 error of its gradient
    result["grad_rel_diff"] = max(
        ((have[n] - g).norm() / g.norm().clamp_min(1e-12)).item() for n, g in want.items() if g.norm() > 0
    )
    result["grad_path"] = "fast path" if backward_here else "fused loss with the dense mask (no flex backward on CPU)"
    result["ok"] = (
        result["loss_rel_diff"] <= 1e-5 and result["grad_rel_diff"] <= 1e-4 and result.get("logits_max_diff", 0) <= 1e-4
    )
    Path(a.out).write_text(json.dumps(result))
    print(json.dumps(result))


def cmd_summary(a: argparse.Namespace) -> int:
    """One line per model from the run's metrics.jsonl and the check's JSON; non-zero if anything is off."""
    check = json.loads(Path(a.check).read_text()) if Path(a.check).exists() else None
    metrics = Path(a.metrics)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    timed = rows[a.warmup :] or rows[-1:]  # the first steps warm up kernels and compile flex
    line = [f"{a.model}:"]
    if timed:
        tps, mfu = statistics.median(r["tokens_per_s"] for r in timed), statistics.median(r["mfu"] for r in timed)
        peak = max(r["peak_memory_gib"] for r in rows)
        line.append(f"{tps:,.0f} tok/s, MFU {100 * mfu:.1f}%, peak {peak:.1f} GiB, {len(rows)} steps;")
    else:
        line.append("TRAINING FAILED (see its log);")
    from mmpt.model.attention import attention_path

    line.append(f"trained with {attention_path(MODELS[a.model]['arch']['model_type'], a.attn)};")
    if check:
        line.append(
            f"parity of {check['attention'].split(' + ')[0]} + fused loss vs reference: loss rel {check['loss_rel_diff']:.1e}, grad rel {check['grad_rel_diff']:.1e}"
            + (f", flex logits {check['logits_max_diff']:.1e}" if "logits_max_diff" in check else "")
            + f" ({check['grad_path']}): {'ok' if check['ok'] else 'MISMATCH'}"
        )
    else:
        line.append("PARITY CHECK FAILED (see its log)")
    print("SUMMARY " + " ".join(line))
    return 0 if timed and check and check["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("data", "check", "summary"):
        s = sub.add_parser(name)
        s.add_argument("--model", choices=MODELS, required=True)
        s.add_argument("--tiny", action="store_true")
        if name in ("data", "check"):
            s.add_argument("--out", required=True)
        if name == "check":
            s.add_argument("--data", required=True)
        if name == "summary":
            s.add_argument("--metrics", required=True)
            s.add_argument("--check", required=True)
            s.add_argument("--attn", required=True, help="the attention implementation training used")
            s.add_argument("--warmup", type=int, default=5)
    a = p.parse_args(argv)
    if a.cmd == "data":
        cmd_data(a)
    elif a.cmd == "check":
        cmd_check(a)
    else:
        return cmd_summary(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
