"""The memory estimate (phi3_training_rules.memory) against what a real tiny Phi-3 holds, and the
trainer's activation-checkpointing default that follows from it.

Measured here, on CPU: parameter, gradient and AdamW state bytes exactly, after one optimizer step;
and the tensors autograd keeps for the backward, through saved-tensor hooks
(torch.autograd.graph.saved_tensors_hooks), each storage counted once and the parameters left out,
for one forward of the model the trainer runs (TRL's fused loss head patched in as SFTTrainer
does). The GPU-only differences are parameters of the estimate: the dropout mask is the input's
dtype on CPU (a bool on CUDA) and bf16 autocast runs on CPU as on CUDA.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.autograd.graph import saved_tensors_hooks
from transformers import Phi3Config, Phi3ForCausalLM
from trl.trainer.utils import add_fused_lm_head

from phi3_trainer import config as trainer_config
from phi3_trainer.config import parse_args
from phi3_training_rules import memory

# Four layers, grouped-query attention (4 heads, 2 key-value heads), untied head.
# Any: Phi3Config's keyword arguments are of many types.
TINY: dict[str, Any] = {
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "pad_token_id": 0,
    "max_position_embeddings": 512,
}
TOKENS = 96
# Two packed sequences in one row, as TRL's padding-free packing gives them (position_ids).
PACKED_POSITIONS = torch.cat([torch.arange(60), torch.arange(TOKENS - 60)])[None]
LORA_R = 8


def tiny_model(*, lora: bool, precision: str, attention: str = "sdpa") -> torch.nn.Module:
    """The model as train.py and TRL build it: fp32 for full fine-tuning, the compute dtype for
    LoRA's base (preflight.model_dtype), the fused loss head, the Phi-3 LoRA targets."""
    torch.manual_seed(0)
    config = Phi3Config(**TINY)
    config._attn_implementation = attention
    dtype = torch.bfloat16 if lora and precision == "bf16" else torch.float32
    model: Any = Phi3ForCausalLM(config)
    model = model.to(dtype)
    model.config.use_cache = False
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    if lora:
        adapters = LoraConfig(
            r=LORA_R,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules=list(memory.LINEAR_MODULES),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, adapters)
    trained: torch.nn.Module = model.train()
    return trained


def setup_for(*, lora: bool, precision: str, **changes: Any) -> memory.TrainingSetup:
    setup = memory.TrainingSetup(
        use_lora=lora,
        lora_r=LORA_R,
        lora_dropout=0.05,
        lora_targets=memory.LINEAR_MODULES,
        lora_modules_to_save=(),
        precision=precision,
        max_length=TOKENS,
        batch_size=1,
        activation_checkpointing=False,
        attention="sdpa",
        flattened_rows=True,
        optimizer="adamw_torch",
        processes=1,
        gpu=False,
    )
    return replace(setup, **changes)


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward(model: torch.nn.Module, precision: str, positions: torch.Tensor) -> torch.Tensor:
    ids = torch.randint(
        1, TINY["vocab_size"], (1, TOKENS), generator=torch.Generator().manual_seed(1)
    )
    wrapped: Any = model  # a PeftModel or the model itself
    causal_lm = wrapped.get_base_model() if hasattr(wrapped, "get_base_model") else wrapped
    with autocast(precision):
        out = causal_lm(input_ids=ids, position_ids=positions, labels=ids, fused_lm_head=True)
    loss: torch.Tensor = out.loss
    return loss


def saved_bytes(model: torch.nn.Module, precision: str, positions: torch.Tensor) -> int:
    """Bytes of every storage autograd keeps from one forward, the parameters left out."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        forward(model, precision, positions)
    return sum(storages.values())


def shape() -> memory.ModelShape:
    return memory.ModelShape.from_config(Phi3Config(**TINY).to_dict())


def test_parameter_count_is_the_models(tmp_path: Any) -> None:
    for tied in (False, True):
        config = Phi3Config(**TINY, tie_word_embeddings=tied)
        real = sum(p.numel() for p in Phi3ForCausalLM(config).parameters())
        assert memory.ModelShape.from_config(config.to_dict()).parameters == real
    # keras-hub's preset metadata counts Phi-3-mini independently (phi3_presets.py).
    assert memory.KNOWN_MODELS["microsoft/Phi-3-mini-4k-instruct"].parameters == 3_821_079_552
    # A local model folder is read from its config.json, as the trainer gets it.
    Phi3Config(**TINY).save_pretrained(tmp_path)
    assert memory.model_shape(str(tmp_path)) == shape()
    assert memory.model_shape("someone/unknown-model") is None


@pytest.mark.parametrize(("lora", "precision"), [(False, "fp32"), (True, "bf16")])
def test_weights_gradients_and_adam_state_are_counted_exactly(lora: bool, precision: str) -> None:
    model = tiny_model(lora=lora, precision=precision)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    forward(model, precision, PACKED_POSITIONS).backward()
    optimizer.step()
    parts = memory.estimate(shape(), setup_for(lora=lora, precision=precision)).parts
    # LoRA's adapters are fp32 over the bf16 base (PEFT's autocast_adapter_dtype).
    assert {p.dtype for p in trained} == {torch.float32}
    assert parts["weights"] == sum(p.nbytes for p in model.parameters())
    assert parts["gradients"] == sum(p.grad.nbytes for p in trained if p.grad is not None)
    moments = [s[k] for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")]
    assert parts["optimizer state"] == sum(m.nbytes for m in moments)  # (and a step scalar each)


def _kept_from_forward(estimate: memory.MemoryEstimate, setup: memory.TrainingSetup) -> int:
    """What of the estimate autograd itself keeps: not the mask transformers builds once and
    hands every layer (the whole of eager's masks; SDPA keeps its own copy per layer)."""
    parts = estimate.parts
    activations = next(size for name, size in parts.items() if name.startswith("activations"))
    masks = (
        0 if setup.attention == "eager" else parts["attention masks"] - memory.mask_elements(setup)
    )
    return parts["weight copies"] + activations + masks


# Full fine-tuning matches to the byte but for the loss head's one-token shift; LoRA within 4%:
# its first layer's input needs no gradient (frozen embeddings), so that layer keeps no input
# norm state nor first dropout mask, which the estimate counts for every layer alike.
@pytest.mark.parametrize(
    ("lora", "precision", "attention", "packed", "tolerance"),
    [
        (False, "fp32", "sdpa", True, 0.001),
        (False, "bf16", "sdpa", True, 0.001),  # autocast over fp32 weights
        (False, "bf16", "sdpa", False, 0.001),  # one unpadded row: no mask, SDPA's own GQA
        (False, "fp32", "eager", False, 0.001),
        (True, "bf16", "sdpa", True, 0.04),
        (True, "fp32", "sdpa", True, 0.04),
        (True, "bf16", "eager", True, 0.04),
    ],
)
def test_activations_are_what_autograd_keeps(
    lora: bool, precision: str, attention: str, packed: bool, tolerance: float
) -> None:
    model = tiny_model(lora=lora, precision=precision, attention=attention)
    positions = PACKED_POSITIONS if packed else torch.arange(TOKENS)[None]
    measured = saved_bytes(model, precision, positions)
    setup = setup_for(lora=lora, precision=precision, attention=attention, flattened_rows=packed)
    expected = _kept_from_forward(memory.estimate(shape(), setup), setup)
    assert measured <= expected <= measured * (1 + tolerance), (measured, expected)


@pytest.mark.parametrize(("lora", "precision"), [(False, "bf16"), (True, "bf16")])
def test_checkpointed_layers_keep_only_their_inputs(lora: bool, precision: str) -> None:
    model = tiny_model(lora=lora, precision=precision)
    wrapped: Any = model
    base = wrapped.get_base_model() if lora else wrapped
    # As the Trainer enables it (transformers activation_checkpointing_enable, non-reentrant).
    base.activation_checkpointing_enable({"use_reentrant": False})
    if lora:
        base.enable_input_require_grads()
    measured = saved_bytes(model, precision, PACKED_POSITIONS)
    setup = setup_for(lora=lora, precision=precision, activation_checkpointing=True)
    parts = memory.estimate(shape(), setup).parts
    # Not saved tensors, though alive: the one layer the backward recomputes, with its mask copy;
    # autocast's cached weight casts; the rotary cos/sin the checkpointed calls hold as inputs.
    recomputed = memory.layer_activation_bytes(shape(), setup)
    hidden = torch.zeros(1, TOKENS, TINY["hidden_size"], dtype=base.dtype)
    cos, sin = base.model.rotary_emb(hidden, PACKED_POSITIONS)
    expected = parts["activations (checkpointed)"] - recomputed - cos.nbytes - sin.nbytes
    assert expected == pytest.approx(measured, rel=0.001)


MINI = memory.KNOWN_MODELS["microsoft/Phi-3-mini-4k-instruct"]
MEDIUM = memory.KNOWN_MODELS["microsoft/Phi-3-medium-4k-instruct"]
A100 = 80 * memory.GB


def gpu_setup(**changes: Any) -> memory.TrainingSetup:
    """The trainer's defaults on one bf16 GPU: LoRA r16, packed 2048-token rows, batch 1."""
    setup = setup_for(lora=True, precision="bf16", gpu=True, max_length=2048, lora_r=16)
    return replace(setup, **changes)


def test_checkpointing_is_on_only_where_the_gpu_needs_it() -> None:
    lora = memory.choose_checkpointing(MINI, gpu_setup(), A100)
    assert not lora.enabled and lora.fits
    assert lora.checkpointed.total < lora.without.total < memory.usable_bytes(A100)
    crowded = memory.choose_checkpointing(MINI, gpu_setup(batch_size=8), A100)
    assert crowded.enabled and crowded.fits
    assert crowded.checkpointed.total < memory.usable_bytes(A100) < crowded.without.total
    full = memory.choose_checkpointing(MEDIUM, gpu_setup(use_lora=False), A100)
    assert full.enabled and not full.fits
    assert "may still not fit" in full.message()
    # Sharded over 4 GPUs, FSDP2 divides the 16 bytes per parameter.
    sharded = memory.estimate(MEDIUM, gpu_setup(use_lora=False, processes=4))
    single = memory.estimate(MEDIUM, gpu_setup(use_lora=False))
    assert sharded.parts["optimizer state"] == pytest.approx(single.parts["optimizer state"] / 4)


def test_flash_attention_drops_the_packed_rows_mask() -> None:
    sdpa = memory.estimate(MINI, gpu_setup(batch_size=4))
    flash = memory.estimate(MINI, gpu_setup(batch_size=4, attention="flash_attention_2"))
    assert sdpa.parts["attention masks"] >= 32 * 2 * (4 * 2048) ** 2  # every layer's copy
    assert flash.parts["attention masks"] == 0


@pytest.mark.parametrize(
    ("gpu_bytes", "flags", "expected"),
    [
        (None, [], True),  # no GPU: as before
        (80 * memory.GB, [], False),
        (20 * memory.GB, [], True),
        (20 * memory.GB, ["--activation_checkpointing", "false"], False),  # the user's word
        pytest.param(
            80 * memory.GB,
            ["--gradient_checkpointing", "true"],
            True,
            marks=pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated"),
        ),
    ],
)
def test_the_trainer_sizes_checkpointing_by_its_gpu(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    gpu_bytes: int | None,
    flags: list[str],
    expected: bool,
) -> None:
    monkeypatch.setattr(trainer_config, "gpu_memory", lambda: gpu_bytes)
    caplog.set_level(logging.INFO, logger="phi3_training_rules.memory")
    _, config = parse_args(["--train_file", "t.jsonl", *flags])
    assert config.activation_checkpointing is expected
    assert config.gradient_checkpointing is expected
    if not flags and gpu_bytes:
        assert f"usable of {gpu_bytes / memory.GB:.1f} GB" in caplog.text
        assert "weights" in caplog.text and "activations" in caplog.text
