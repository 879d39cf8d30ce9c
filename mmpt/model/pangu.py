"""PanGu-α (PanGu-Coder's architecture) as a transformers model of ours: GPT-2 plus a top-query layer.

PanGu-α is GPT-2 (token and position embeddings, pre-LN blocks, final LayerNorm) with one more
block on top, the *top-query layer*. It is a pre-LN transformer block whose attention takes its
keys and values from LayerNorm(h) of the backbone's output h (one Conv1D of 2·d outputs), but its
queries from a learned embedding of the *position* of the token to be predicted
(`top_query_embedding`, n_positions × d, through its own Conv1D `q_attn`, no LayerNorm):

    a = h + c_proj(attend(q_attn(E_q[pos]), c_attn(ln_1(h))))      # keys and values split in two
    y = a + mlp(ln_2(a))
    logits = y @ wte.T                                              # tied head, no final LayerNorm

Module names follow the authors' checkpoints (`transformer.*`, `top_query_embedding`,
`top_query_layer.{ln_1,attn.{q_attn,c_attn,c_proj},ln_2,mlp.{c_fc,c_proj}}`), so their state dict
loads key for key; their checkpoints are tagged `gpt2`, which `mmpt import-checkpoint` re-tags as
`mmpt_pangu`. The backbone is transformers' own GPT-2; the top layer uses transformers' attention
functions (eager/sdpa) with the same 4-D mask as the backbone, so packed rows, prefix-LM and our
decoder's masks reach it unchanged. Its KV cache is one more cache layer (index n_layer):
`cache_layers` says how many a cache needs.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.gpt2.configuration_gpt2 import GPT2Config
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Model, GPT2PreTrainedModel, eager_attention_forward
from transformers.pytorch_utils import Conv1D

MODEL_TYPE = "mmpt_pangu"


class PanguConfig(GPT2Config):
    """GPT-2's configuration (same fields); the top-query layer has the blocks' shape."""

    model_type = MODEL_TYPE


class TopQueryAttention(nn.Module):
    """Multi-head attention whose queries come from a separate input (the query embedding)."""

    def __init__(self, config: PanguConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # its slot in the KV cache: after the n_layer backbone blocks
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        if self.head_dim * self.num_heads != d:
            raise ValueError(f"hidden size {d} is not a multiple of {self.num_heads} heads")
        self.scaling = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        self.q_attn = Conv1D(d, d)
        self.c_attn = Conv1D(2 * d, d)  # keys and values
        self.c_proj = Conv1D(d, d)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.is_causal = True  # read by sdpa when no mask is given

    def forward(self, hidden: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None) -> torch.Tensor:
        """(B, T, d) output from keys/values of `hidden` (B, T, d) and queries of `query` (B, T, d)."""
        b, t, _ = hidden.shape
        q = self.q_attn(query).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        k, v = self.c_attn(hidden).split(self.num_heads * self.head_dim, dim=2)
        k = k.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, h, past + T, hd)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = attend(
            self, q, k, v, mask, dropout=self.attn_dropout.p if self.training else 0.0, scaling=self.scaling
        )  # (B, T, h, hd)
        return self.resid_dropout(self.c_proj(out.reshape(b, t, -1)))


class TopQueryLayer(nn.Module):
    """The pre-LN block on top of the backbone; only its attention differs from a GPT-2 block."""

    def __init__(self, config: PanguConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.ln_1 = nn.LayerNorm(d, eps=config.layer_norm_epsilon)
        self.attn = TopQueryAttention(config, layer_idx=config.num_hidden_layers)
        self.ln_2 = nn.LayerNorm(d, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config.n_inner if config.n_inner is not None else 4 * d, config)

    def forward(self, hidden: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None) -> torch.Tensor:
        hidden = hidden + self.attn(self.ln_1(hidden), query, mask, cache)
        return hidden + self.mlp(self.ln_2(hidden))


class PanguForCausalLM(GPT2PreTrainedModel, GenerationMixin):
    """PanGu-α: transformers' GPT-2 backbone, the top-query layer, a head tied to the token embedding."""

    config_class = PanguConfig
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    _no_split_modules = ["GPT2Block", "TopQueryLayer"]

    def __init__(self, config: PanguConfig) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.top_query_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.top_query_layer = TopQueryLayer(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # GPT-2's scaled init of the residual projections, done on the projections themselves:
        # transformers calls `_init_weights` on a module that owns no parameter directly only for
        # classes of its own package, so a branch on TopQueryAttention or GPT2MLP (GPT-2's own) never
        # runs here. transformers' init skips weights loaded from a checkpoint (torch.nn.init would not).
        if module is self.top_query_layer.attn.c_proj or module is self.top_query_layer.mlp.c_proj:
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range / (2 * self.config.n_layer) ** 0.5)

    @property
    def cache_layers(self) -> int:
        """Layers a KV cache needs: one per backbone block and one for the top-query layer."""
        return self.config.num_hidden_layers + 1

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, V) like GPT2LMHeadModel's; `cache` gets the top-query layer's keys too."""
        cache = kwargs.pop("past_key_values", None) if cache is None else cache  # the name before 5.2x
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = cache if use_cache else None
        if inputs_embeds is None:
            inputs_embeds = self.transformer.wte(input_ids)  # (B, T, d)
        b, t = inputs_embeds.shape[:2]
        if use_cache and cache is None:
            cache = DynamicCache()  # grows a layer per index, the top-query layer's included
        if cache is not None and len(cache.layers) < self.cache_layers and cache.layer_class_to_replicate is None:
            if not all(type(layer) is DynamicLayer for layer in cache.layers):
                raise ValueError(f"the KV cache has {len(cache.layers)} layers; PanGu needs {self.cache_layers}")
            cache.layers.extend(DynamicLayer() for _ in range(self.cache_layers - len(cache.layers)))
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (torch.arange(t, device=inputs_embeds.device) + past)[None].expand(b, t)
        # the mask the backbone builds too (a 4-D mask is passed through as is), before the cache grows
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        out = self.transformer(
            inputs_embeds=inputs_embeds,
            cache=cache,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **kwargs,
        )
        query = self.top_query_embedding(position_ids)  # (B, T, d): the position being predicted from
        hidden = self.top_query_layer(out.last_hidden_state, query, mask, cache)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)


def register() -> None:
    """Make `AutoConfig`/`AutoModelForCausalLM` know model type `mmpt_pangu` (idempotent)."""
    AutoConfig.register(MODEL_TYPE, PanguConfig, exist_ok=True)
    AutoModelForCausalLM.register(PanguConfig, PanguForCausalLM, exist_ok=True)
