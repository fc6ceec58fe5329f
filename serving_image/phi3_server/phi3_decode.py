"""Phi-3's decode step, one new token per row over the running cache, on the model's own modules.

Why not ``model(...)``: at decode its per-call Python (mask preparation, output capture, kwargs
plumbing, attention dispatch, cache bookkeeping, eval-mode dropout modules) and CPU SDPA's flash
kernel, made for blocks of queries, cost more than the arithmetic of a small batch. With one
query per row, attention on CPU is two batched matmuls (on CUDA, SDPA's fused kernels). Every
module that holds weights or a rule of the model is still the model's own (the norms, the
projections, the MLP, the rotary embedding with its rope scaling, ``apply_rotary_pos_emb`` with
partial rotary), and the attention follows transformers' ``eager_attention_forward`` (scores
times ``scaling``, softmax in float32), so the logits are the model's:
``tests/serving/test_kv_batch.py`` compares every row with the model's own forward pass over
that row alone. Prefill still runs ``model(...)``.

Like ``kv_batch``, this reads transformers' Phi-3 module layout (``model.model.layers[i]
.self_attn.qkv_proj`` and so on), pinned by ``kv_batch.TESTED_TRANSFORMERS``.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from transformers import Phi3ForCausalLM
from transformers.cache_utils import DynamicLayer
from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb


class Phi3Decode:
    """The decode step of one loaded Phi-3 (``Phi3ForCausalLM`` in eval mode)."""

    # Single-query attention by device: on CPU two batched matmuls (faster than SDPA's flash
    # kernel at one query per row: 0.18 vs 0.35 ms a layer at 16 rows, measured with torch's
    # profiler); elsewhere torch's scaled_dot_product_attention, whose fused CUDA kernels never
    # materialize the scores.
    ATTENTION_BY_DEVICE: ClassVar[dict[str, str]] = {"cpu": "matmul"}

    def __init__(self, model: Phi3ForCausalLM) -> None:
        config = model.config
        self._attention = self.ATTENTION_BY_DEVICE.get(model.device.type, "sdpa")
        self._model = model.model
        self._lm_head = model.lm_head
        self._heads = config.num_attention_heads
        # Phi3Config fills an unset num_key_value_heads with num_attention_heads.
        self._kv_heads = config.num_key_value_heads or self._heads
        # As Phi3Attention reads it.
        self._head_dim = getattr(config, "head_dim", config.hidden_size // self._heads)

    @staticmethod
    def serves(model: Any) -> bool:
        return isinstance(model, Phi3ForCausalLM) and not model.training

    def __call__(
        self,
        layers: list[DynamicLayer],
        tokens: torch.Tensor,
        positions: torch.Tensor,
        visible: torch.Tensor,
    ) -> torch.Tensor:
        """The next-token logits [rows, vocab] after ``tokens`` [rows] at ``positions`` [rows];
        ``visible`` [rows, cached positions + 1] says which keys each row attends to (the new
        one included). Each layer's cache gets the new keys and values."""
        rows = tokens.shape[0]
        heads, kv_heads, head_dim = self._heads, self._kv_heads, self._head_dim
        hidden = self._model.embed_tokens(tokens[:, None])
        cos, sin = self._model.rotary_emb(hidden, positions[:, None])
        # Broadcast over key heads and their query heads; the matmul path fills the keys not seen.
        seen = visible[:, None, None, :]
        mask = ~seen if self._attention == "matmul" else seen
        for layer, cache in zip(self._model.layers, layers, strict=True):
            attention = layer.self_attn
            qkv = attention.qkv_proj(layer.input_layernorm(hidden))
            query, key, value = (
                qkv.view(rows, 1, heads + 2 * kv_heads, head_dim)
                .transpose(1, 2)
                .split([heads, kv_heads, kv_heads], dim=1)
            )
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            keys, values = cache.update(key, value)
            if self._attention == "matmul":
                # [rows, key heads, query heads per key head, keys]: query head h reads key
                # head h // (heads / kv heads), the layout of transformers' repeat_kv.
                scores = torch.matmul(
                    query.reshape(rows, kv_heads, heads // kv_heads, head_dim),
                    keys.transpose(-1, -2),
                )
                scores = (scores * attention.scaling).masked_fill(mask, float("-inf"))
                weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
                attended = torch.matmul(weights, values)
            else:
                attended = F.scaled_dot_product_attention(
                    query,
                    keys,
                    values,
                    attn_mask=mask,
                    scale=attention.scaling,
                    enable_gqa=kv_heads != heads,
                )
            # [rows, heads, 1, head_dim] is [rows, 1, heads x head_dim] in memory: one query.
            hidden = hidden + attention.o_proj(attended.reshape(rows, 1, heads * head_dim))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return cast(torch.Tensor, self._lm_head(self._model.norm(hidden))[:, -1, :])
