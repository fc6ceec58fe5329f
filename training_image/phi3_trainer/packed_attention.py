"""The attention of padding-free packed rows: each chat attends to itself alone, at its own cost.

TRL packs chats into rows of --max_length (best-fit decreasing) and flattens each micro-batch into
one row, with ``position_ids`` restarting at every chat and the chats' boundaries as
``cu_seq_lens_q``/``max_length_q`` (trl 1.16 ``DataCollatorForLanguageModeling``, padding-free
branch). With ``sdpa``, transformers turns those position ids into a dense block-diagonal mask
(``masking_utils.find_packed_sequence_indices``, ``packed_sequence_mask_function``) and attends
over the whole row: the cost grows with the row's length squared, not the chats'. This
implementation reads the boundaries instead and attends per chat, so the cost is the sum of the
chats' squared lengths. Per device:

- GPU (compute capability 8.0 or newer, fp16/bf16 or autocast, no attention dropout):
  ``torch.nn.attention.varlen.varlen_attn``, PyTorch's variable-length API over the
  FlashAttention-2 kernels compiled into torch's CUDA build (``aten._flash_attention_forward``
  and its backward). Pinned with torch itself (training_image/Dockerfile, ``torch==2.13.0+cu126``,
  whose build checks the API is there). Not the flash-attn package: its PyPI release is a source
  archive that downloads a prebuilt wheel only for the torch versions it was built against and
  otherwise compiles for hours (Dao-AILab/flash-attention setup.py, ``get_wheel_url``,
  ``CachedWheelsCommand``); none is built for torch 2.13. Not transformers' ``flash_attention_2``
  without that package either: it downloads a kernel from the Hugging Face Hub at run time
  (transformers 5.23 ``modeling_flash_attention_utils``, ``FLASH_ATTN_KERNEL_FALLBACK``).
- CPU, and whatever the GPU kernel does not take: ``scaled_dot_product_attention`` once per chat,
  causal, on the chat's own tokens. Not ``flex_attention`` with a document mask (block-sparse):
  torch 2.13 refuses its backward on CPU ("FlexAttention does not support backward on CPU",
  torch/nn/attention/flex_attention.py ``_validate_device``), so it cannot train there.

Registered with transformers' ``AttentionInterface`` (its documented way to add an
implementation) and not with its mask interface, so that no mask is built: masking_utils
``_preprocess_mask_arguments`` returns early for a name without a mask function.
:func:`phi3_training_rules.attention.choose` decides when the trainer uses it.
"""

from __future__ import annotations

import functools
from itertools import pairwise
from typing import Any, cast

import torch
from torch.nn import functional
from torch.nn.attention.varlen import varlen_attn
from transformers import AttentionInterface

from phi3_training_rules.attention import PACKED_VARLEN

# FlashAttention-2's limits (Dao-AILab/flash-attention README: Ampere, Ada or Hopper GPUs, fp16
# and bf16, head dimensions up to 256; torch's flash kernel also wants it a multiple of 8).
_FLASH_DTYPES = (torch.float16, torch.bfloat16)
_FLASH_MAX_HEAD_DIM = 256


def packed_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    position_ids: torch.Tensor | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: (batch, heads, tokens, head_dim) in, (batch, tokens,
    heads, head_dim) out. The sequences: a padded row's tokens (a 2D ``attention_mask``, which
    masking_utils passes through as given), else ``cu_seq_lens_q`` over the flattened batch
    (TRL's collator), else wherever ``position_ids`` restart, else each row."""
    batch, heads, length, head_dim = query.shape
    if key.shape[2] != length:
        raise ValueError(
            f"attn_implementation {PACKED_VARLEN} attends within the given tokens only (no KV "
            "cache): load the model with sdpa to generate"
        )
    q, k, v = (_tokens_first(states) for states in (query, key, value))
    kept = None
    if attention_mask is not None:
        present = attention_mask.bool()
        kept = present.flatten().nonzero().flatten()
        q, k, v = q[kept], k[kept], v[kept]
        lengths = present.sum(dim=-1)
        cu_seq_lens_q, max_length_q = _cumulative(lengths), int(lengths.max())
    elif cu_seq_lens_q is None or max_length_q is None:
        cu_seq_lens_q, max_length_q = _position_boundaries(batch, length, position_ids, q.device)
    # As transformers' flash path: a window only where some sequence is longer than it.
    window = (
        sliding_window if sliding_window is not None and max_length_q > sliding_window else None
    )
    attend = _flash_varlen if _flash_takes(q, dropout) else _per_sequence_sdpa
    output = attend(q, k, v, cu_seq_lens_q, max_length_q, scaling, dropout, window)
    if kept is not None:  # padding positions get zeros, as no query there attends
        output = output.new_zeros(batch * length, heads, head_dim).index_copy(0, kept, output)
    return output.view(batch, length, heads, head_dim), None


def _tokens_first(states: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, dim) -> (batch x tokens, heads, dim), varlen_attn's layout."""
    return states.transpose(1, 2).reshape(-1, states.shape[1], states.shape[3])


def _cumulative(lengths: torch.Tensor) -> torch.Tensor:
    return functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)


def _position_boundaries(
    batch: int, length: int, position_ids: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Sequences of the flattened batch: one starts at each row and wherever a position does not
    follow the one before (transformers masking_utils.find_packed_sequence_indices)."""
    starts = torch.zeros(batch, length, dtype=torch.bool, device=device)
    starts[:, 0] = True
    if position_ids is not None:
        positions = position_ids.expand(batch, length)
        starts[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
    lengths = torch.diff(
        starts.flatten().nonzero().flatten(), append=torch.tensor([batch * length], device=device)
    )
    return _cumulative(lengths), int(lengths.max())


@functools.cache
def _flash_device(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 8


def _flash_takes(query: torch.Tensor, dropout: float) -> bool:
    """Whether varlen_attn runs it: it has no dropout (``dropout_p`` is fixed at 0)."""
    head_dim = query.shape[-1]
    if not query.is_cuda or dropout > 0 or head_dim > _FLASH_MAX_HEAD_DIM or head_dim % 8:
        return False
    autocast = torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda")
    return (query.dtype in _FLASH_DTYPES or autocast in _FLASH_DTYPES) and _flash_device(
        query.device
    )


def _flash_varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    max_length: int,
    scaling: float | None,
    dropout: float,
    window: int | None,
) -> torch.Tensor:
    """fp32 states (full fine-tuning under autocast) run in the autocast dtype, as transformers'
    flash path casts them (integrations/flash_attention.py, ``get_target_dtype``)."""
    dtype = query.dtype if query.dtype in _FLASH_DTYPES else torch.get_autocast_dtype("cuda")
    cu_seq_lens = cu_seq_lens.to(device=query.device, dtype=torch.int32)
    # A tensor: varlen_attn returns a tuple only when given return_aux.
    output = cast(
        torch.Tensor,
        varlen_attn(
            query.to(dtype),
            key.to(dtype),
            value.to(dtype),
            cu_seq_lens,
            cu_seq_lens,
            max_length,
            max_length,
            scale=scaling,
            # (W, 0): causal with the W keys before each query (varlen_attn's docstring); Phi-3's
            # sliding_window counts the query itself (transformers sliding_window_overlay).
            window_size=(window - 1, 0) if window else (-1, 0),
            enable_gqa=key.shape[1] != query.shape[1],
        ),
    )
    return output.to(query.dtype)


def _per_sequence_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    max_length: int,
    scaling: float | None,
    dropout: float,
    window: int | None,
) -> torch.Tensor:
    """Causal SDPA on each sequence's own tokens; (tokens, heads, dim) in and out."""
    outputs = []
    for start, end in pairwise(cu_seq_lens.tolist()):
        if end == start:
            continue
        band = None
        if window is not None and end - start > window:
            ones = torch.ones(end - start, end - start, dtype=torch.bool, device=query.device)
            band = ones.tril().triu(1 - window)  # causal, and query minus key below the window
        q, k, v = (states[start:end].transpose(0, 1) for states in (query, key, value))
        attended = functional.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=band,
            dropout_p=dropout,
            is_causal=band is None,
            scale=scaling,
            enable_gqa=k.shape[0] != q.shape[0],
        )
        outputs.append(attended.transpose(0, 1))
    return torch.cat(outputs)


AttentionInterface.register(PACKED_VARLEN, packed_varlen_attention)
