"""Which attention implementation the model loads with, from the flags alone.

Standard library only, so that the memory estimate (:mod:`phi3_training_rules.memory`, also at plan
time) sees the same choice as the trainer. The user's --attn_implementation wins. Otherwise, when
every batch is a padding-free packed row (TRL 1.16 SFTTrainer: ``padding_free`` is --padding_free,
or --packing with the bfd or bfd_split strategy), :data:`PACKED_VARLEN`, which attends within each
chat at the cost of the chats' lengths (:mod:`phi3_trainer.packed_attention` says how, per
device, and why); else transformers' default (sdpa).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The name packed_attention registers with transformers' AttentionInterface.
PACKED_VARLEN = "packed_varlen"
# TRL's strategies that lay a row out as whole chats with their own position ids.
_PADDING_FREE_STRATEGIES = ("bfd", "bfd_split")


def choose(values: Mapping[str, Any]) -> str | None:
    """The implementation for flag values ``attn_implementation``, ``packing``, ``padding_free``
    and ``packing_strategy``; None: transformers' default."""
    if values["attn_implementation"] is not None:
        return str(values["attn_implementation"])
    padding_free = values["padding_free"] or (
        values["packing"] and values["packing_strategy"] in _PADDING_FREE_STRATEGIES
    )
    return PACKED_VARLEN if padding_free else None
