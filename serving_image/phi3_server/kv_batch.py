"""The only code that touches transformers' KV cache internals: batch rows in, rows out.

The running batch shares one left-padded ``DynamicCache``; new prompts are prefilled in a cache
of their own, a chunk of positions per step (so a long prompt never stalls the running batch for
its whole prefill), then their rows are padded and stacked onto the batch. Rows that finish are
selected away and all-padding columns cut off.

It reads and writes ``DynamicCache.layers[i].keys/values``, calls ``batch_select_indices`` and
replaces ``DynamicLayer.update`` and ``Cache.layer_class_to_replicate``, none of which is a public
contract: ``TESTED_TRANSFORMERS`` is the version this was checked
against, and a test fails when the installed (image-pinned) transformers differs.

A Phi-3 decodes through ``phi3_decode.Phi3Decode`` (the model's modules without its forward's
per-call overhead); any other model through its own forward with a 4D mask.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from phi3_server.phi3_decode import Phi3Decode

TESTED_TRANSFORMERS = "5.23.0"


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    return cast(list[DynamicLayer], cache.layers)


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    # F.pad lists (left, right) pairs from the last dimension backwards.
    pads = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pads)


def _stack_rows(running: torch.Tensor | None, joining: torch.Tensor | None, width: int) -> Any:
    """Cached keys or values of two batches, left-padded to ``width`` positions, as one batch."""
    assert running is not None and joining is not None
    return torch.cat([_pad_left(running, width, -2), _pad_left(joining, width, -2)])


class _GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of buffers with spare positions:
    a decode step writes its one position in place, where ``DynamicLayer.update`` copies the
    whole cache (``torch.cat``), which costs O(context) per step. After the adapter replaces
    ``keys``/``values`` (rows joined or dropped), the next update copies them into a new buffer."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.keys is not None and self.values is not None
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        self._key_buffer = _with_room(self._key_buffer, self.keys, key_states, length, end)
        self._value_buffer = _with_room(self._value_buffer, self.values, value_states, length, end)
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values


def _with_room(
    buffer: torch.Tensor | None, current: torch.Tensor, new: torch.Tensor, length: int, end: int
) -> torch.Tensor:
    """``buffer`` if ``current`` is its first ``length`` positions and it holds ``end``; else a
    buffer of twice ``end`` positions holding a copy of ``current``."""
    if (
        buffer is not None
        and length > 0
        and current.data_ptr() == buffer.data_ptr()
        and current.shape[:-2] == buffer.shape[:-2]
        and current.stride() == buffer.stride()
        and buffer.shape[-2] >= end
    ):
        return buffer
    fresh = new.new_empty((*new.shape[:-2], 2 * end, new.shape[-1]))
    if length > 0:
        fresh[..., :length, :] = current
    return fresh


def _new_cache() -> DynamicCache:
    # Built without a model config, the cache holds plain growing layers only (sliding-window
    # layers could not be padded and merged); Cache appends a layer_class_to_replicate per layer.
    cache = DynamicCache()
    cache.layer_class_to_replicate = _GrowingLayer
    return cache


class ChunkedPrefill:
    """New prompts, left-padded to one width and run ``chunk_tokens`` padded tokens at a time."""

    def __init__(
        self, model: Any, prompts: list[list[int]], pad_id: int, chunk_tokens: int
    ) -> None:
        self._model = model
        width = max(len(prompt) for prompt in prompts)
        self._input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        self.mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            self._input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            self.mask[row, width - len(prompt) :] = 1
        self._positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self._columns = max(1, chunk_tokens // len(prompts))
        self._done = 0
        self.cache = _new_cache()

    def step(self) -> torch.Tensor | None:
        """Run the next chunk; after the last one, the logits of each prompt's next token."""
        device = self._model.device
        end = min(self._done + self._columns, self._input_ids.shape[1])
        logits = self._model(
            input_ids=self._input_ids[:, self._done : end].to(device),
            attention_mask=self.mask[:, :end].to(device),
            position_ids=self._positions[:, self._done : end].to(device),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        self._done = end
        return logits if end == self._input_ids.shape[1] else None


class BatchedCache:
    """The running batch's cache and which cached positions each row sees ([rows, positions],
    False = padding or out of the sliding window)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._cache: DynamicCache | None = None
        self._visible: torch.Tensor | None = None
        self._phi3 = Phi3Decode(model) if Phi3Decode.serves(model) else None
        # Phi-3-mini-4k attends to its last 2047 positions only (config.json's sliding_window,
        # which Phi3Model applies whenever it is set; masking_utils.sliding_window_overlay:
        # kv_idx > q_idx - window). transformers applies it while building a mask, which a
        # mask passed as 4D skips. Other architectures set their windows by rules of their own
        # (Qwen2's use_sliding_window, Gemma's layer_types): their decode attends to the cache.
        self._window: int | None = model.config.sliding_window if self._phi3 else None

    def decode(self, last_tokens: list[int], positions: list[int]) -> torch.Tensor:
        """One forward pass over every row: the logits of each row's next token."""
        assert self._cache is not None and self._visible is not None
        device = self._model.device
        self._visible = F.pad(self._visible, (0, 1), value=True)
        if self._window is not None and self._visible.shape[1] > self._window:
            # A row's positions fill its columns up to the last one (prompts are left-padded,
            # every step appends a column), so the window is the same last columns for every
            # row; a column that leaves it stays out, and keep() cuts it off with the padding.
            self._visible[:, : -self._window] = False
        tokens = torch.tensor(last_tokens, device=device)
        position_ids = torch.tensor(positions, device=device)
        if self._phi3 is not None:
            return self._phi3(_layers(self._cache), tokens, position_ids, self._visible)
        # A 4D mask, which transformers passes to attention as given: no per-step mask building
        # (bool, not additive: CPU SDPA is slower with a float mask over long contexts).
        return cast(
            torch.Tensor,
            self._model(
                input_ids=tokens.unsqueeze(-1),
                attention_mask=self._visible[:, None, None, :],
                position_ids=position_ids.unsqueeze(-1),
                past_key_values=self._cache,
                use_cache=True,
            ).logits[:, -1, :],
        )

    def admit(self, prefill: ChunkedPrefill) -> None:
        """Append a finished prefill's rows after the running ones."""
        visible = prefill.mask.to(self._model.device).bool()
        if self._cache is None or self._visible is None:
            self._cache, self._visible = prefill.cache, visible
            return
        width = max(self._visible.shape[1], visible.shape[1])
        for running, joining in zip(_layers(self._cache), _layers(prefill.cache), strict=True):
            running.keys = _stack_rows(running.keys, joining.keys, width)
            running.values = _stack_rows(running.values, joining.values, width)
        self._visible = torch.cat(
            [_pad_left(self._visible, width, -1), _pad_left(visible, width, -1)]
        )

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in order); nothing kept empties the cache."""
        if not rows:
            self._cache, self._visible = None, None
            return
        assert self._cache is not None and self._visible is not None
        index = torch.tensor(rows, device=self._visible.device)
        self._cache.batch_select_indices(index)
        self._visible = self._visible[index]
        # Columns no remaining row sees only cost time: cut them off.
        first_used = int(self._visible.any(dim=0).int().argmax())
        if first_used:
            for layer in _layers(self._cache):
                assert layer.keys is not None and layer.values is not None
                layer.keys = layer.keys[..., first_used:, :]
                layer.values = layer.values[..., first_used:, :]
            self._visible = self._visible[:, first_used:]

    def clear(self) -> None:
        self._cache, self._visible = None, None
