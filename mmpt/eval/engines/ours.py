"""Our sampling engine: batched decoding of a Hugging Face causal LM with explicit 4-D masks.

It serves every checkpoint, prefix-LM included: left-padded prompts need pads masked and position
ids counted from each first real token, and the prefix-LM objective needs the NL prefix
bidirectional, which `model.generate`'s 2-D mask cannot say. What makes it fast:

- the n samples of one problem share one prefill of its prompt (its cache rows are copied);
- the KV cache is preallocated for the whole run (`RowCache`) instead of grown by concatenation;
- each sample's uniforms are drawn from its own generator once, up front (one (B, steps) tensor);
- per step the only host work is reading the chosen ids; the end-of-function check decodes only
  rows that just wrote a newline, and finished rows are dropped from the batch in bulk.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.cache_utils import Cache, DynamicLayer

from mmpt.eval.engines import SamplingConfig, ServedModel
from mmpt.model import folder
from mmpt.model.attention import (
    attn_implementation,
    check_supported,
    mask_from_allowed,
    packed_allowed,
    prepare_model,
)
from mmpt.model.split_embeddings import restrict_to_code


def choose_next(logits: torch.Tensor, sampling: SamplingConfig, u: torch.Tensor | None) -> torch.Tensor:
    """(b,) next token ids from (b, V) logits (disallowed entries -inf) and (b,) uniforms in [0, 1).

    Sampling is by inverse CDF with one uniform per row and step, over the probabilities sorted
    row by row (the nucleus needs the order), so a row's choice depends only on its own logits and uniform.
    """
    if sampling.greedy:
        return logits.argmax(dim=-1)
    if u is None or u.shape != logits.shape[:1]:
        raise ValueError("sampling needs one uniform per row")
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (b, V)
    sorted_p, order = probs.sort(dim=-1, descending=True)  # (b, V)
    if sampling.top_p < 1:
        # nucleus: keep a token while the mass before it is below top_p (the first one always stays)
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= sampling.top_p, 0.0)
    cdf = sorted_p.cumsum(-1)  # (b, V)
    u = u.to(cdf.device, cdf.dtype) * cdf[:, -1]
    pick = (cdf < u[:, None]).sum(-1)  # (b,) first index with cdf >= u
    # a zero-probability slot can only be picked through rounding at the very top; step back to the last kept
    pick = torch.minimum(pick, (sorted_p > 0).sum(-1) - 1)
    return order.gather(-1, pick[:, None]).squeeze(-1)


def context_length(config) -> int | None:
    """Longest sequence the model's positions allow, when its config says."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _PreallocatedLayer(DynamicLayer):
    """A cache layer whose keys/values are views of a buffer allocated once: (B, H, capacity, D)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            b, h, _, d = key_states.shape
            self.device = key_states.device
            self._k = key_states.new_zeros((b, h, self.capacity, d))
            self._v = value_states.new_zeros((b, h, self.capacity, value_states.shape[-1]))
            self.is_initialized = True
        q = key_states.shape[-2]
        if self.length + q > self.capacity:
            raise RuntimeError(f"cache of {self.capacity} positions is full")
        self._k[:, :, self.length : self.length + q] = key_states
        self._v[:, :, self.length : self.length + q] = value_states
        self.length += q
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]


class RowCache(Cache):
    """A KV cache with room for `capacity` positions in every row, allocated at the first update."""

    def __init__(self, layers: int, capacity: int) -> None:
        super().__init__(layers=[_PreallocatedLayer(capacity) for _ in range(layers)])

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (or repeat) the rows `indices`, in that order."""
        for layer in self.layers:
            layer.batch_select_indices(indices)


@dataclass
class Decoder:
    """Batched, KV-cached decoding of a Hugging Face causal LM with explicit 4-D masks.

    `prefix_id` (prefix-LM only): the prompt's tokens up to and including its first `prefix_id`
    (`<python>`) attend bidirectionally among themselves; everything else is causal.
    `code_mask` (V,) bool restricts every choice to the code vocabulary. `ended(prompt, generated)`
    says when a row's text has ended (end of function); it is asked only after a token for which
    `newline` (V,) bool is True, or its successor, when `newline` is given, else after every token.
    `stop_id` (`<eot>`'s code id) ends a row and is not returned.
    """

    model: torch.nn.Module
    sampling: SamplingConfig
    stop_id: int
    pad_id: int
    prefix_id: int | None = None
    code_mask: torch.Tensor | None = None
    ended: Callable[[list[int], list[int]], bool] | None = None
    newline: torch.Tensor | None = None

    def __post_init__(self) -> None:
        model_type, self._impl = attn_implementation(self.model)
        check_supported(model_type, self._impl)
        prepare_model(self.model)  # GPT-Neo's built-in causal buffer would otherwise keep the prefix causal
        self._max_len = context_length(self.model.config)
        self._device = next(self.model.parameters()).device
        # a model with a layer outside its blocks (PanGu's top-query layer) says how many its cache needs
        self._layers = getattr(self.model, "cache_layers", self.model.config.get_text_config().num_hidden_layers)
        # transformers 5.2x calls the cache argument `cache`, earlier 5.x `past_key_values`
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _prefill(self, prompts: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, positions, allowed) of the left-padded batch: (U, T), (U, T), (U, T, T)."""
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
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # (U, T)
        return ids, positions, packed_allowed(positions, prefix)

    def _forward(self, cache: Cache, **inputs) -> torch.Tensor:
        out = self.model(**inputs, **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()  # (b, V)

    @torch.inference_mode()
    def __call__(self, prompts: list[list[int]], generators: list[torch.Generator] | None = None) -> list[list[int]]:
        """The generated code ids of each prompt (without the stop id)."""
        if not prompts or any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if not self.sampling.greedy and (generators is None or len(generators) != len(prompts)):
            raise ValueError("sampling needs one generator per prompt")
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        if self._max_len is not None and width >= self._max_len:
            raise ValueError(f"a prompt of {width} tokens leaves no room in the model's context of {self._max_len}")
        steps = self.sampling.max_new_tokens
        if self._max_len is not None:
            steps = min(steps, self._max_len - min(lengths))
        dev = self._device
        # each sample's uniforms, all steps at once: (B, steps), drawn in order from its own generator
        u = None
        if not self.sampling.greedy:
            u = torch.stack([torch.rand(steps, generator=g, dtype=torch.float64) for g in generators]).to(dev)

        # n samples of one problem share their prompt: prefill each distinct prompt once (U rows),
        # then give every sample its own copy of that prompt's cache rows
        unique: dict[tuple[int, ...], int] = {}
        of_row = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        ids, positions, allowed = self._prefill([list(p) for p in unique], width)
        cache = RowCache(self._layers, width + steps)
        logits = self._forward(
            cache,
            input_ids=ids.to(dev),
            position_ids=positions.to(dev),
            attention_mask=mask_from_allowed(allowed.to(dev)[:, None], self._impl, self.model.dtype),
        )
        expand = torch.as_tensor(of_row, device=dev)  # (B,) row -> its prompt's prefill row
        cache.batch_select_indices(expand)
        logits = logits[expand]  # (B, V)
        # keys each row may see, for every step at once: the prompt's real tokens, then all generated
        valid = torch.ones((len(prompts), width + steps), dtype=torch.bool, device=dev)  # (B, T + steps)
        valid[:, :width] = allowed[:, -1, :].to(dev)[expand]  # the last (real) token sees every real token
        mask = mask_from_allowed(valid[:, None, None, :], self._impl, self.model.dtype)  # (B, 1, 1, T + steps)
        next_pos = torch.as_tensor(lengths, dtype=torch.long, device=dev)  # (B,) position of the next token
        limit = torch.full_like(next_pos, steps)  # (B,) new tokens each row may write
        if self._max_len is not None:
            limit = torch.minimum(limit, self._max_len - next_pos)
        bias = None  # (V,) 0 for code ids, -inf elsewhere
        if self.code_mask is not None:
            bias = restrict_to_code(torch.zeros(self.code_mask.shape, device=dev), self.code_mask)
        newline = None if self.newline is None else self.newline.to(dev)
        tokens = torch.full((len(prompts), steps), self.stop_id, dtype=torch.long, device=dev)  # (B, steps)
        written = torch.zeros(len(prompts), dtype=torch.long)  # (B,) tokens kept per row, host
        rows = torch.arange(len(prompts), device=dev)  # batch slot -> prompt index
        alive = torch.ones(len(prompts), dtype=torch.bool, device=dev)  # (b,) slots still writing
        # (b,) the last token had a newline; True before the first token, whose text is always checked
        prev_nl = torch.ones(len(prompts), dtype=torch.bool, device=dev)
        for step in range(steps):
            if bias is not None:
                logits = logits + bias
            chosen = choose_next(logits, self.sampling, None if u is None else u[rows, step])  # (b,)
            tokens[rows, step] = chosen
            done = (chosen == self.stop_id) | ~alive  # a stop token ends a row and is not kept
            kept = ~done
            full = kept & (step + 1 >= limit[rows])
            ask = kept & ~full
            if newline is not None:
                nl = newline[chosen]
                ask, prev_nl = ask & (nl | prev_nl), nl
            # the one host read per step: which rows just ended, and which must be asked about their text
            done_h, kept_h, full_h, ask_h = torch.stack([done, kept, full, ask]).cpu()
            rows_h = rows.cpu()
            written[rows_h[kept_h]] = step + 1
            ended = full_h.clone()
            if self.ended is not None:
                for slot in ask_h.nonzero().flatten().tolist():
                    r = int(rows_h[slot])
                    if self.ended(prompts[r], tokens[r, : step + 1].tolist()):
                        ended[slot] = True
            finished = done_h | ended
            if bool(finished.all()) or step + 1 == steps:
                break
            alive = alive & ~finished.to(dev)
            # drop finished rows in bulk (a copy of the cache each time), before they are a quarter of the batch
            if int(finished.sum()) * 4 >= len(rows_h):
                index = (~finished).nonzero().flatten().to(dev)
                cache.batch_select_indices(index)
                rows, mask, next_pos, alive, prev_nl = (
                    rows[index],
                    mask[index],
                    next_pos[index],
                    alive[index],
                    prev_nl[index],
                )
                chosen = chosen[index]
            step_len = width + step + 1  # keys after this step: the prompt width and the generated tokens
            logits = self._forward(
                cache,
                input_ids=chosen[:, None],
                position_ids=next_pos[:, None],
                attention_mask=mask[..., :step_len],
            )
            next_pos = next_pos + 1
        tokens_h = tokens.cpu()
        return [tokens_h[r, : int(written[r])].tolist() for r in range(len(prompts))]


def load_checkpoint(model_dir: Path, device: torch.device):
    """(model, tokenizer, smap, meta) of a checkpoint folder, the model in eval mode on `device`
    (its saved dtype on CUDA, fp32 on CPU)."""
    dtype = "auto" if device.type == "cuda" else torch.float32
    model, tokenizer, smap, meta = folder.load_folder(model_dir, dtype=dtype)
    return model.to(device).eval(), tokenizer, smap, meta


class OursEngine:
    """The `Engine` of our decoder: loads the checkpoint's weights on `device`, decodes `batch_size` at a time."""

    def __init__(
        self,
        checkpoint: ServedModel,
        sampling: SamplingConfig,
        batch_size: int,
        device: torch.device,
        ended: Callable[[list[int], list[int]], bool] | None = None,
        newline: torch.Tensor | None = None,
    ) -> None:
        self.model, _, _, _ = load_checkpoint(checkpoint.directory, device)
        self.sampling = sampling
        self.batch_size = batch_size
        self.context = context_length(self.model.config)
        self.decoder = Decoder(
            self.model,
            sampling,
            stop_id=checkpoint.stop_id,
            pad_id=checkpoint.pad_id,
            prefix_id=checkpoint.prefix_id,
            # with `none` this still keeps out the model's padding rows, which are no tokens at all
            code_mask=checkpoint.smap.vocab_masks(self.model.get_output_embeddings().weight.shape[0])[1],
            ended=ended,
            newline=newline,
        )

    def generate(self, prompts: list[list[int]], seeds: list[int]) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            generators = None
            if not self.sampling.greedy:
                generators = [torch.Generator().manual_seed(s) for s in seeds[start : start + self.batch_size]]
            out.extend(self.decoder(batch, generators))
        return out
