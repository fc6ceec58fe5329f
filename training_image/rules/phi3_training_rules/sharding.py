"""When the trainer shards a run, from its flags and process count alone.

The trainer's FSDP2 set-up is phi3_trainer.sharding; the decision lives here so that the memory
estimate (:mod:`phi3_training_rules.memory`, also at plan time) sees the same choice.
"""

from __future__ import annotations


def shards_full_fine_tuning(use_lora: bool, processes: int) -> bool:
    """Whether the trainer shards a run: full fine-tuning over more than one process.

    The memory estimate divides the weights, gradients and optimizer state by ``processes`` then.
    """
    return processes > 1 and not use_lora
