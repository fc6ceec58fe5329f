"""Plan-time check: does the training the stack asks for fit the GPU size the preflight chose?

The trainer's own estimate (phi3_training_rules.memory, the package the trainer and the program
share, standard library only) over `baseModel` (a known Phi-3 Hub id, or a
local folder's config.json), `trainerArgs` over the trainer's defaults (the flag table), the
size's GPU memory (vm_sizes.py) and the job's processes: `trainingNodes` x GPUs per node, one per
GPU under Azure ML's PyTorch distribution (training.py). Activation checkpointing left unset is
decided as the trainer will decide it. A configuration that cannot fit fails the plan before any
resource is created, with the numbers and what would fit; an unknown model or size is a warning,
not a refusal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Protocol

from phi3_infra.catalog.vm_sizes import KNOWN_GPU_SIZES, gpu_memory_bytes, known_gpus_per_node
from phi3_infra.config import ConfigError, StackConfig, config_key
from phi3_infra.trainer_flags import flag_word, parsed_values, trainer_defaults
from phi3_training_rules.memory import (
    KNOWN_MODELS,
    USABLE_FRACTION,
    MemoryEstimate,
    ModelShape,
    TrainingSetup,
    choose_checkpointing,
    estimate,
    gigabytes,
    model_shape,
    usable_bytes,
)

# The most GPUs "more GPUs with sharding" proposes (8 nodes of the 8-GPU ND sizes).
_MAX_PROCESSES = 64


class TrainingWontFit(ConfigError):
    """The training cannot fit the GPU it would run on; the message has the numbers and fixes."""


def check_training_fits(config: StackConfig, vm_size: str, gpus_per_node: int) -> list[str]:
    """Warnings for what cannot be checked; raises TrainingWontFit with the numbers and what
    would fit when the estimate exceeds the GPU's usable memory."""
    shape = model_shape(config.base_model)
    gpu_bytes = gpu_memory_bytes(vm_size)
    skipped = "so whether training fits its GPU memory is not checked before the job starts"
    if shape is None:
        return [
            f"{config_key('base_model')} {config.base_model}: neither a Phi-3 model this program "
            f"knows the shape of ({', '.join(KNOWN_MODELS)}) nor a local folder with its "
            f"config.json, {skipped}"
        ]
    if gpu_bytes is None:
        return [
            f"{config_key('gpu_skus')}: {vm_size} is not a size this program knows the GPU "
            f"memory of ({', '.join(KNOWN_GPU_SIZES)}), {skipped}"
        ]
    values = _trainer_values(config)
    setup, planned = _planned(shape, values, config.training_nodes * gpus_per_node, gpu_bytes)
    if planned.fits(gpu_bytes):
        return []
    where = (
        f"{vm_size} ({gpus_per_node} x {gigabytes(gpu_bytes)} GPU per node, "
        f"{config.training_nodes} node(s), {setup.processes} process(es))"
    )
    fixes = list(_what_would_fit(config, shape, values, setup, vm_size, gpus_per_node))
    raise TrainingWontFit(
        f"{config_key('trainer_args')}: training {config.base_model} does not fit {where}: "
        f"{planned.describe()} per GPU, {gigabytes(usable_bytes(gpu_bytes))} usable "
        f"({USABLE_FRACTION:.0%} of {gigabytes(gpu_bytes)}). What would fit:\n  "
        + ("\n  ".join(fixes) if fixes else "nothing among the sizes this program knows")
    )


def _trainer_values(config: StackConfig) -> dict[str, object]:
    """The trainer's flag values for this job: its defaults, overridden by trainerArgs."""
    return {**trainer_defaults(), **parsed_values(config.trainer_args or {})}


def _planned(
    shape: ModelShape, values: Mapping[str, object], processes: int, gpu_bytes: int
) -> tuple[TrainingSetup, MemoryEstimate]:
    """The setup and the estimate the job will run with, checkpointing decided as the trainer
    decides it when no flag sets it (memory.default_checkpointing)."""
    setup = TrainingSetup.from_flags(values, processes=processes, gpu=True, checkpointing=False)
    if values["activation_checkpointing"] is None and values["gradient_checkpointing"] is None:
        setup = replace(
            setup, activation_checkpointing=choose_checkpointing(shape, setup, gpu_bytes).enabled
        )
    return setup, estimate(shape, setup)


def _what_would_fit(
    config: StackConfig,
    shape: ModelShape,
    values: Mapping[str, object],
    setup: TrainingSetup,
    vm_size: str,
    gpus_per_node: int,
) -> Iterator[str]:
    """LoRA, checkpointing, a smaller batch, more GPUs with sharding, another size: each alone,
    else with activation checkpointing on too when the run has it off."""
    key = config_key("trainer_args")
    recompute: dict[str, object] = (
        {} if setup.activation_checkpointing else {"activation_checkpointing": True}
    )

    def first_fit(
        changes: Mapping[str, object], processes: int = setup.processes, size: str = vm_size
    ) -> str | None:
        gpu_bytes = gpu_memory_bytes(size) or 0
        for flags in (changes, {**changes, **recompute}) if recompute else (changes,):
            _, planned = _planned(shape, {**values, **flags}, processes, gpu_bytes)
            if planned.fits(gpu_bytes):
                given = ", ".join(f"{name}: {flag_word(value)}" for name, value in flags.items())
                about = f"about {gigabytes(planned.total)} per GPU"
                return f"{key} {given} ({about})" if given else about
        return None

    if not setup.use_lora and (lora := first_fit({"use_lora": True})):
        yield f"LoRA instead of full fine-tuning: {lora}"
    if recompute and (recomputed := first_fit(recompute)):
        yield f"activation checkpointing: {recomputed}"
    smaller = (
        first_fit({"per_device_train_batch_size": b}) for b in range(setup.batch_size - 1, 0, -1)
    )
    if fitting := next((text for text in smaller if text), None):
        yield (
            "a smaller batch (raise gradient_accumulation_steps to keep the tokens per update): "
            f"{fitting}"
        )
    if not setup.use_lora and (sharded := _more_gpus(first_fit, setup, gpus_per_node)):
        processes, numbers = sharded
        yield (
            f"more GPUs with sharding (FSDP): {config_key('training_nodes')}: "
            f"{processes // gpus_per_node} of {vm_size}, {processes} GPUs, {numbers}"
        )
    listed = [s for s in config.gpu_skus if s != vm_size]
    others = [s for s in KNOWN_GPU_SIZES if s != vm_size and s not in listed]
    for size in (*listed, *others):
        if text := first_fit({}, config.training_nodes * known_gpus_per_node(size), size):
            gpus = KNOWN_GPU_SIZES[size]
            where = "first in" if size in listed else "added first to"
            yield (
                f"a bigger size: {size} ({gpus.gpus_per_node} x {gpus.gpu}) {where} "
                f"{config_key('gpu_skus')}, {text}"
            )
            return


class _FirstFit(Protocol):
    def __call__(
        self, changes: Mapping[str, object], processes: int = ..., size: str = ...
    ) -> str | None: ...


def _more_gpus(
    first_fit: _FirstFit, setup: TrainingSetup, gpus_per_node: int
) -> tuple[int, str] | None:
    """The fewest processes, a node's GPUs at a time, at which full fine-tuning sharded over
    them fits (with its numbers), up to _MAX_PROCESSES."""
    start = setup.processes + gpus_per_node
    for processes in range(start, _MAX_PROCESSES + 1, gpus_per_node):
        if text := first_fit({}, processes):
            return processes, text
    return None
