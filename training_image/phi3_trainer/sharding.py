"""Full fine-tuning beyond one GPU: parameters, gradients and optimizer state sharded with PyTorch
FSDP2, through transformers' ``fsdp`` TrainingArguments and accelerate.

When: full fine-tuning (``--use_lora false``) whenever the job runs more than one process, which
is what Azure ML's PyTorch distribution starts: one process per GPU on every node, with
``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``NODE_RANK``, ``RANK`` and ``LOCAL_RANK`` set
(MicrosoftDocs/azure-ai-docs articles/machine-learning/how-to-train-distributed-gpu.md, "PyTorch").
No flag: replicas cannot hold even the smallest Phi-3's full fine-tuning state (3.8B parameters x
16 bytes of fp32 weights, gradients and Adam moments = 61 GB per GPU before any activation), so
there is nothing to choose. LoRA keeps plain data parallelism (DDP): each replica holds the frozen
base it needs anyway, the trainable state is a few MB, and sharding would only add an all-gather
per layer. An ``--fsdp`` / ``--fsdp_config`` or ``--deepspeed`` set-up given on the command line
stands as given.

Why FSDP2 rather than DeepSpeed ZeRO-3: Microsoft's Phi-3 ``sample_finetune.py`` (on the
microsoft/Phi-3-mini-4k-instruct model card) sets ZeRO-3 up through ``accelerate config``, though
for LoRA; the Phi-3 Cookbook's full fine-tuning of Phi-3-vision uses ZeRO-2 (microsoft/
Phi-3CookBook code/04.Finetuning/vision_finetuning/finetune_hf_trainer_docvqa.py). Azure ML
launches either through its PyTorch distribution, so launching does not decide. FSDP2 is part of
torch, which the image and the dev venv already pin: no new package, no CUDA extension built at
run time, no second pin to keep in step with torch. It runs on CPU over gloo, so the two-worker
tests run the same sharded code. The Trainer checkpoints and resumes it with
torch.distributed.checkpoint (each rank its own shard of weights and optimizer state, no
gather) through the same ``--resume`` as one GPU. DeepSpeed would need ``deepspeed`` installed,
and accelerate turns it on only off the CPU (accelerate state.py, ``ACCELERATE_USE_DEEPSPEED ...
and not cpu``): none of it could be tested here.

accelerate likewise turns FSDP on only for accelerator devices (state.py: the plugin is stored for
MULTI_GPU and the like, never for MULTI_CPU), although FSDP2 itself shards on CPU over gloo.
:func:`enable_fsdp_on_cpu` sets the state accelerate would have set on a GPU, so that the CPU tests
run the Trainer's FSDP paths (fsdp2_prepare_model, sharded checkpoints, their loading).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from phi3_training_rules.sharding import shards_full_fine_tuning

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import Trainer, TrainingArguments

    from phi3_trainer.config import ScriptArguments, TrainerConfig

# Checkpoints: each rank writes and reads only its own shard of the weights and of the optimizer
# state (torch.distributed.checkpoint, through transformers Trainer._save_checkpoint -> accelerate
# save_fsdp_model / save_fsdp_optimizer), so no rank ever gathers the whole model to checkpoint.
CHECKPOINT_STATE_DICT = "SHARDED_STATE_DICT"


class ShardingError(ValueError):
    """A sharding flag that cannot work in this job; the message names the flag and the fix."""


def world_size() -> int:
    """Processes in the job, as torchrun and Azure ML's PyTorch distribution set it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def fsdp_config(activation_checkpointing: bool) -> dict[str, Any]:
    """transformers' ``fsdp_config`` for FSDP2 (transformers training_args.py _process_fsdp_args).

    Each decoder layer is its own shard group: the default transformer-based wrap takes the
    model's ``_no_split_modules`` (Phi3DecoderLayer; accelerate fsdp2_prepare_auto_wrap_policy).
    Activation checkpointing is FSDP's own, applied to those layers: the Trainer's would recompute
    through a second all-gather, and transformers refuses both at once (Trainer
    create_accelerator_and_postprocess; huggingface/transformers#30404).
    """
    return {
        "version": 2,
        "reshard_after_forward": True,  # ZeRO-3: a layer's full weights exist only while it runs
        "state_dict_type": CHECKPOINT_STATE_DICT,
        "activation_checkpointing": activation_checkpointing,
        # One copy of the weights per node, not per GPU (fp32 Phi-3-medium: 56 GB each), sent
        # to the other ranks' shards (accelerate fsdp2_prepare_model, fsdp2_load_full_state_dict).
        "cpu_ram_efficient_loading": True,
    }


def configure(script: ScriptArguments, config: TrainerConfig) -> None:
    """Turn FSDP2 on in ``config`` for full fine-tuning over several processes.

    Runs while the flags are read, before anything loads; raises :class:`ShardingError`.
    """
    processes = world_size()
    if config.fsdp:
        if processes < 2:
            # Otherwise the Trainer refuses it after the model loaded ("Using fsdp only works in
            # distributed training", Trainer.__init__).
            raise ShardingError(
                f"--fsdp needs more than one process (WORLD_SIZE is {processes}): start the job "
                "on several GPUs (Azure ML's PyTorch distribution, torchrun --nproc_per_node N), "
                "or leave --fsdp out"
            )
        return  # the user's own FSDP set-up stands
    if config.deepspeed or not shards_full_fine_tuning(script.use_lora, processes):
        return
    checkpointing = bool(config.activation_checkpointing or config.gradient_checkpointing)
    config.activation_checkpointing = config.gradient_checkpointing = False
    config.fsdp = True  # type: ignore[assignment]  # the field is typed str for legacy values
    config.fsdp_config = fsdp_config(checkpointing)
    # TrainingArguments.__post_init__ turned fsdp/fsdp_config into accelerate's plugin arguments
    # already (fsdp_plugin_args, read when the Trainer creates its Accelerator): build them again.
    config.fsdp_plugin_args = config._process_fsdp_args()  # type: ignore[no-untyped-call]  # inherited, unannotated in transformers
    # The model loads before the Trainer builds the plugin that would export these (accelerate
    # FullyShardedDataParallelPlugin.__post_init__); with both set, transformers reads the weights
    # on local rank 0 only (transformers distributed/fsdp.py is_fsdp_enabled, modeling_utils).
    os.environ["ACCELERATE_USE_FSDP"] = "true"
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"


def enable_fsdp_on_cpu(accelerator: Accelerator, args: TrainingArguments) -> bool:
    """On CPU workers, give accelerate's state the FSDP plugin that it keeps only for accelerators.

    Call right after the Trainer created its Accelerator; returns whether FSDP is on.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if getattr(state, "fsdp_plugin", None) is not None:
        return True
    if args.fsdp_plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def gathered_weights(trainer: Trainer) -> dict[str, torch.Tensor] | None:
    """The full weights of a sharded model, on rank 0 (in CPU memory); None when not sharded.

    Every rank must call it: each sends its shards (accelerate get_state_dict, FSDP2 branch:
    torch.distributed.checkpoint get_model_state_dict with full_state_dict and cpu_offload).
    """
    if not trainer.is_fsdp_enabled:
        return None
    return dict(trainer.accelerator.get_state_dict(trainer.model))
