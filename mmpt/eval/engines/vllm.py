"""The vLLM engine (`mmpt generate --engine vllm`, from a venv with vLLM: docs/evaluation.md): causal checkpoints only.

vLLM gets the prompts as token ids, encoded exactly as training did (`encode_prompt`: code tokens,
the signature's separated ones included, use their code rows), and never a tokenizer: it returns
code ids, which `mmpt.eval.completion` maps back and decodes like our engine's. Sampling matches
ours: temperature, nucleus, `<eot>`'s code id as the stop token, --max-new-tokens bounded by the
context, and a seed per sample. `EndOfFunction`, a vLLM logits processor, does the rest in vLLM's
engine process: it restricts every choice to the code vocabulary and, once a sample's text has
left its function (`CodeText.ended`, the check our engine makes), forces `<eot>`, so both engines
stop after the same token. prefix-code-clm checkpoints are refused (`pick_engine`): vLLM's
attention cannot make the NL prefix bidirectional.

vLLM starts worker processes: a script that calls this engine needs an `if __name__ == "__main__":`
guard. One engine per rank: under a launcher with several ranks on a GPU node, each rank's engine
sees only its own GPU (`CUDA_VISIBLE_DEVICES` = its local rank) unless tensor parallelism is asked for.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, AutoTokenizer
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from mmpt.data.separation import SeparationMap
from mmpt.eval.completion import CodeText
from mmpt.eval.engines import SamplingConfig, ServedModel
from mmpt.eval.engines.ours import context_length

STOP = "mmpt_stop"  # SamplingParams.extra_args key: the stop id; its presence turns `EndOfFunction` on


class EndOfFunction(LogitsProcessor):
    """Per request that asks for it: only code ids, and `<eot>` alone once the function has ended.

    Runs in vLLM's engine process, built from the checkpoint folder (tokenizer, separation.json).
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        model_dir = vllm_config.model_config.model
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        smap = SeparationMap.load_or_none(model_dir, base_vocab_size=len(tokenizer))
        rows = AutoConfig.from_pretrained(model_dir).get_text_config().vocab_size
        self.text = CodeText(tokenizer, smap)
        self.newline = self.text.newline_ids(rows).tolist()  # (V,) the end check runs only next to these
        code = smap.vocab_masks(rows)[1]
        self.bias = torch.zeros(rows, device=device).masked_fill(~code.to(device), float("-inf"))  # (V,)
        self.requests: dict[int, tuple[list[int], list[int], int]] = {}  # batch index -> (prompt, output, stop)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes greedy choices too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.requests.pop(index, None)
        for index, params, prompt, output in batch_update.added:
            extra = params.extra_args or {}
            if STOP in extra:
                self.requests[index] = (list(prompt or []), output, int(extra[STOP]))  # `output` grows in place
            else:
                self.requests.pop(index, None)
        for a, b, direction in batch_update.moved:
            ra, rb = self.requests.pop(a, None), self.requests.pop(b, None)
            if ra is not None:
                self.requests[b] = ra
            if direction == MoveDirectionality.SWAP and rb is not None:
                self.requests[a] = rb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.requests:
            return logits
        index = torch.as_tensor(list(self.requests), device=logits.device)
        width = min(logits.shape[-1], self.bias.shape[0])
        logits[index, :width] += self.bias[:width]
        logits[index, width:] = float("-inf")  # rows past the model's vocabulary, if vLLM pads
        for i, (prompt, output, stop) in self.requests.items():
            n = len(output)
            if n == 0 or not (n == 1 or self.newline[output[-1]] or self.newline[output[-2]]):
                continue  # as our engine: the text is checked only next to a newline
            if self.text.ended(prompt, list(output)):
                logits[i] = float("-inf")
                logits[i, stop] = 0.0
        return logits


class VllmEngine:
    """The `Engine` of vLLM's offline `LLM` on this rank's device(s)."""

    def __init__(self, checkpoint: ServedModel, sampling: SamplingConfig, local_rank: int = 0, tensor_parallel: int = 1) -> None:
        if checkpoint.meta.prefix_lm:
            raise ValueError("vLLM cannot serve a prefix-code-clm checkpoint (bidirectional NL prefix)")
        if AutoConfig.from_pretrained(checkpoint.directory).model_type == "mmpt_pangu":
            raise ValueError("vLLM has no PanGu-α (top-query layer): use --engine ours")
        if torch.cuda.is_available() and tensor_parallel == 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(local_rank)  # one engine per rank, on its own GPU
        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default is far more
        self.checkpoint = checkpoint
        self.sampling = sampling
        self.context = context_length(AutoConfig.from_pretrained(checkpoint.directory).get_text_config())
        self.llm = LLM(
            model=str(checkpoint.directory),
            skip_tokenizer_init=True,  # prompts are ids; outputs are code ids, which its tokenizer cannot decode
            dtype="float32" if on_cpu else "auto",
            tensor_parallel_size=tensor_parallel,
            max_model_len=self.context,
            logits_processors=[f"{__name__}:EndOfFunction"],
            async_scheduling=False,  # the processor must see every request's latest token
            enforce_eager=on_cpu,
            # vLLM 0.32 on CPU crashes when a seeded request's prefill is split over steps (it rewinds
            # the request's generator, which CPU generators cannot): schedule whole prompts only
            enable_chunked_prefill=not on_cpu,
            max_num_batched_tokens=max(8192, self.context or 0) if on_cpu else None,
            seed=0,
        )

    def _params(self, prompt: list[int], seed: int) -> SamplingParams:
        max_tokens = self.sampling.max_new_tokens
        if self.context is not None:
            max_tokens = min(max_tokens, self.context - len(prompt))
        return SamplingParams(
            n=1,
            temperature=0.0 if self.sampling.greedy else self.sampling.temperature,
            top_p=1.0 if self.sampling.greedy else self.sampling.top_p,
            max_tokens=max_tokens,
            seed=None if self.sampling.greedy else seed,
            stop_token_ids=[self.checkpoint.stop_id],
            ignore_eos=True,  # the model config's eos is no stop of ours; `<eot>`'s code id is
            detokenize=False,
            extra_args={STOP: self.checkpoint.stop_id},
        )

    def generate(self, prompts: list[list[int]], seeds: list[int]) -> list[list[int]]:
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            [self._params(p, s) for p, s in zip(prompts, seeds)],
            use_tqdm=False,
        )
        rows = []
        for out in outputs:
            ids = list(out.outputs[0].token_ids)
            rows.append(ids[:-1] if ids and ids[-1] == self.checkpoint.stop_id else ids)
        return rows
