"""What remains between prompt style `paper` and the official evaluation, measured on a tiny imported checkpoint.

    python bench/paper_eval.py [--problems 16] [--steps 300]

Builds a checkpoint in the authors' released layout (the tiny BPE of tests/assets with the sentinels
and `[_DUP_]` copies of a partial list, a tiny GPT-Neo), imports it with `mmpt import-checkpoint`,
trains the imported model for a few steps on the official instances of the first N HumanEval
problems (so that it passes some), then:

- generates greedily with `mmpt generate` under `--prompt-style paper` and `mmpt`, executes both
  in the sandbox, and reports pass@1 and how many samples lost their last character;
- drives the same model the official way (Hugging Face `generate`, prompts left-padded in batches
  of 16, `max_length` 1024, `<eot>` as eos, the code vocabulary only, then the official decoding)
  and counts the completions that equal ours (what batching and padding change);
- counts completions that use numpy (guarded in the helper block: the sandbox may lack it) and
  samples judged in one process (mode shared; 0 expected).

    python bench/paper_eval.py --parity OFFICIAL --official-python PY [--limit N]

Verdict parity with the official evaluation, per benchmark: the canonical solutions and mutated ones
(the last line dropped, the first `return` negated, the first `<` turned to `>`; a few that sleep
3.6 s or 6 s, for the 5 s rule) are judged by `mmpt execute` under prompt style `paper` and by the
official evaluators themselves (OFFICIAL: the `NLP/text2code_mrpt` folder of a noah-research
checkout; its codegeex_changes scripts for HumanEval-X and MBPP, at 5 s), run with PY: a Python
with CodeGeeX's package (`pip install --no-deps codegeex==1.0`, plus torch, numpy, fire, regex,
tqdm; the official harness imports them). The official harness runs the programs unsandboxed:
only trusted solutions and these mutations are given to it. Prints the verdicts that agree and
those that do not, per benchmark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the authors' layout, shared with the tests

from authors_layout import official_tokenizer  # noqa: E402

ENTRIES = ["return", "if", "for", "in", "(", ")", ":", "=", "+", "==", "not", "else", "len", "range"]


def build(tmp: Path, problems, steps: int) -> Path:
    """A tiny authors'-layout GPT-Neo, imported, then trained on the problems' official instances."""
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoConfig

    from mmpt.eval.engines.ours import load_checkpoint
    from mmpt.eval.styles.paper import scored_instance
    from mmpt.import_checkpoint import import_checkpoint

    src = tmp / "src"
    tok, _ = official_tokenizer(src, ENTRIES)
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=len(tok), hidden_size=96, num_layers=2, num_heads=4, max_position_embeddings=1024,
                          attention_types=[[["global"], 2]], bos_token_id=None, eos_token_id=None)  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    out = import_checkpoint(src, tmp / "imported")

    model, tokenizer, smap, meta = load_checkpoint(out, torch.device("cpu"))
    data = [torch.tensor([scored_instance(tokenizer, smap, meta.layout, p)[0]]) for p in problems]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        ids = data[step % len(data)]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(out)
    print(f"trained {steps} steps on {len(data)} official instances; last loss {loss.item():.3f}", file=sys.stderr)
    return out


def official_way(model_dir: Path, problems) -> list[str]:
    """Completions of the model driven as generation.py drives it (Hugging Face generate, batches of 16)."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from mmpt.eval.engines.ours import load_checkpoint
    from mmpt.eval.styles import paper

    model, tok, smap, meta = load_checkpoint(model_dir, torch.device("cpu"))
    code = smap.vocab_masks(model.get_output_embeddings().weight.shape[0])[1]  # (V,) bool: the code vocabulary

    class CodeOnly(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores.masked_fill(~code[: scores.shape[-1]], float("-inf"))

    eot, pad = tok.convert_tokens_to_ids("<eot>"), tok.convert_tokens_to_ids("<pad>")
    eot_code = smap.to_code([eot])[0]
    out = []
    encoded = [paper.prompt_ids(tok, smap, meta.layout, p) for p in problems]
    for start in range(0, len(encoded), paper.BATCH_SIZE):
        batch = encoded[start : start + paper.BATCH_SIZE]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in batch])  # left-padded
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in batch])
        with torch.no_grad():
            seqs = model.generate(input_ids=input_ids, attention_mask=mask, max_length=paper.TOTAL_LENGTH, do_sample=False,
                                  eos_token_id=eot_code, pad_token_id=pad, logits_processor=LogitsProcessorList([CodeOnly()]))  # fmt: skip
        for (ids, given_at), row in zip(batch, seqs.tolist()):
            # the official: tokens from the prompt's GIVEN on, joined, cut at the first <eot> (or -1)
            tail = [t for t in row[width - len(ids) + given_at :]]
            tokens = tok.convert_ids_to_tokens(smap.to_original(tail))
            text = tok.convert_tokens_to_string(tokens)
            text = text[: text.find("<eot>")]
            out.append(paper.program_code(paper.post_process(text)))
    return out


def mutations(problem, slow: bool) -> list[tuple[str, str]]:
    """(name, generation) of the canonical solution and its mutations (module doc)."""
    canonical = problem.reference
    lines = canonical.rstrip("\n").split("\n")
    out = [("canonical", canonical), ("drop-last-line", "\n".join(lines[:-1]) + "\n")]
    if "return " in canonical:
        out.append(("negate-return", canonical.replace("return ", "return not ", 1)))
    if "<" in canonical:
        out.append(("less-to-greater", canonical.replace("<", ">", 1)))
    if slow:  # the first call sleeps: the program takes about that long, once
        for seconds in (3.6, 6):
            sleep = f"\n    import time\n    if not hasattr(time, 'slept'):\n        time.slept = time.sleep({seconds})"
            out.append((f"sleep-{seconds}", sleep + canonical))
    return out


def parity(official: Path, python: str, limit: int | None) -> dict:
    """Verdicts of `mmpt execute` (prompt style paper) and the official evaluators on the same generations."""
    from mmpt.eval import data
    from mmpt.eval.sandbox.execute import main as execute_main
    from mmpt.eval.styles import paper
    from mmpt.eval.styles.registry import load_problems
    from mmpt.jsonl import read_jsonl, write_jsonl

    scripts = {
        "humaneval": (
            official / "codegeex_changes/codegeex/benchmark/humaneval-x/evaluate_humaneval_x.py",
            data.HUMANEVAL_X_PYTHON,
        ),
        "mbpp": (official / "codegeex_changes/codegeex/benchmark/mbpp/evaluate_mbpp.py", data.MBPP),
    }
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for bench, (script, problem_file) in scripts.items():
            if not script.exists():
                raise SystemExit(f"{script}: missing; --parity takes the NLP/text2code_mrpt folder of a noah-research checkout")
            problems = load_problems("paper", bench, limit=limit)
            ours, theirs, names = [], [], {}
            for i, p in enumerate(problems):
                number = p.task_id.split("/")[1]
                official_id = f"Python/{number}" if bench == "humaneval" else int(number)
                for cid, (name, generation) in enumerate(mutations(p, slow=i < 2)):
                    ours.append({"task_id": p.task_id, "completion_id": cid, "completion": paper.program_code(generation),
                                 "settings": {"prompt_style": "paper"}})  # fmt: skip
                    theirs.append({"task_id": official_id, "completion_id": cid, "prompt": p.signature, "generation": generation})
                    names[(p.task_id, cid)] = name
            write_jsonl(tmp / f"{bench}.ours.jsonl", ours)
            write_jsonl(tmp / f"{bench}.official.jsonl", theirs)
            rc = execute_main(["--benchmark", bench, "--samples", str(tmp / f"{bench}.ours.jsonl"),
                               "--out", str(tmp / f"{bench}.ours.results.jsonl"), "--workers", "2"])  # fmt: skip
            if rc != 0:
                raise SystemExit(f"mmpt execute failed on {bench}")
            command = [python, str(script), "--input_file", str(tmp / f"{bench}.official.jsonl"), "--problem_file",
                       str(problem_file), "--timeout", "5", "--n_workers", "2", "--tmp_dir", str(tmp)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
            if done.returncode != 0:
                raise SystemExit(f"the official evaluator failed: {done.stderr[-2000:]}")
            mine = {(r["task_id"], r["completion_id"]): r["passed"] for _, r in read_jsonl(tmp / f"{bench}.ours.results.jsonl")}
            official_results = tmp / f"{bench}.official_results.jsonl"
            prefix = "HumanEval/" if bench == "humaneval" else "MBPP/"
            other = {
                (prefix + str(r["task_id"]).split("/")[-1], r["completion_id"]): r["passed"]
                for _, r in read_jsonl(official_results)
            }
            assert mine.keys() == other.keys(), "both judged every generation once"
            differ = sorted(k for k in mine if mine[k] != other[k])
            report[bench] = {
                "generations": len(mine),
                "canonical": sum(1 for k in mine if names[k] == "canonical"),
                "agree": len(mine) - len(differ),
                "passed_both": sum(mine[k] and other[k] for k in mine),
                "differ": [f"{t} {names[(t, c)]}: ours {mine[(t, c)]}, official {other[(t, c)]}" for t, c in differ],
            }
    return report


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--parity", type=Path, default=None, help="the official code folder: verdict parity instead")
    ap.add_argument("--official-python", default=sys.executable, help="a Python with CodeGeeX's package (--parity)")
    ap.add_argument("--limit", type=int, default=None, help="--parity: first N problems of each benchmark")
    args = ap.parse_args()
    if args.parity is not None:
        print(json.dumps(parity(args.parity, args.official_python, args.limit), indent=1))
        return 0

    from mmpt.eval.generate import main as generate_main
    from mmpt.eval.passk import pass_at_k_metrics
    from mmpt.eval.sandbox.execute import main as execute_main
    from mmpt.eval.styles.registry import load_problems

    problems = load_problems("paper", "humaneval", limit=args.problems)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build(tmp, problems, args.steps)
        for style in ("paper", "mmpt"):
            samples, results = tmp / f"{style}.samples.jsonl", tmp / f"{style}.results.jsonl"
            generate_main(["--model", str(model), "--benchmark", "humaneval", "--limit", str(args.problems), "--greedy",
                           "--prompt-style", style, "--no-progress", "--out", str(samples)])  # fmt: skip
            execute_main(["--benchmark", "humaneval", "--samples", str(samples), "--out", str(results), "--workers", "2"])
            rows = [json.loads(line) for line in results.open()]
            report[style] = {
                "pass@1": pass_at_k_metrics(rows, [1])["pass@1"],
                "dropped_last_char": sum(bool(r.get("dropped_last_char")) for r in rows),
                "judged_in_one_process": sum(r["mode"] == "shared" for r in rows),
                "uses_numpy": sum("np." in r["completion"] or "numpy" in r["completion"] for r in rows),
            }
            if style == "paper":
                ours = {r["task_id"]: r["completion"] for r in rows}
        theirs = official_way(model, problems)
        same = sum(ours[p.task_id] == c for p, c in zip(problems, theirs))
        report["official_way_equal_completions"] = f"{same}/{len(problems)}"
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
