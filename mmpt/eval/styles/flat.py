"""Prompt style `mmpt` for a checkpoint trained on the paper's flattened code (`code_format: flat`, `mmpt import-checkpoint`).

The same problems and programs as `own`; prompts and scored instances in the flattened format
(`mmpt.data.codeformat`), and a sample's text has no line breaks until its markers are decoded to
indentation, so it ends at `<eot>` only.
"""

from __future__ import annotations

from mmpt.data.codeformat import encode_flat_instance, encode_flat_prompt
from mmpt.eval.benchmarks.problem import Problem
from mmpt.eval.samples import sample_record
from mmpt.eval.styles.own import Own, common_prefix


class Flat(Own):
    """mmpt's prompts, flattened."""

    flat = True

    def prompt(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], object]:
        """(ids, level): the flattened prompt and the indentation level the completion continues from."""
        ids, _, level = encode_flat_prompt(tokenizer, smap, layout, problem.docstring, problem.signature, problem.given)
        return ids, level

    def sample(self, text, problem, completion_id, prompt, state, ids, budget, settings) -> dict:
        return sample_record(problem, completion_id, text.flat_completion(prompt, ids, state), settings)

    def scored_instance(self, tokenizer, smap, layout: str, problem: Problem) -> tuple[list[int], int]:
        body = problem.given + problem.reference
        ids, _ = encode_flat_instance(tokenizer, smap, layout, problem.docstring, problem.signature, body)
        prompt, _, _ = encode_flat_prompt(tokenizer, smap, layout, problem.docstring, problem.signature, problem.given)
        return ids, common_prefix(ids, prompt)
