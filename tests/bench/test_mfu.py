"""The FLOPs formulas behind the benchmarks' MFU, checked against torch's own FLOP counter on one
training step (forward and backward) of a real Phi-3, full and LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.mfu import ModelShape, model_flops

LENGTH = 96


def counted_step_flops(model: torch.nn.Module) -> int:
    ids = torch.randint(0, 500, (1, LENGTH), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    return int(counter.get_total_flops())


@pytest.fixture
def phi3(tiny_phi3: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    # Eager attention: its matrix multiplies are what the counter sees (it does not count the
    # CPU's fused scaled-dot-product kernel); the FLOPs are the same.
    model = AutoModelForCausalLM.from_pretrained(tiny_phi3, attn_implementation="eager")
    model.config.use_cache = False
    return model


def test_full_fine_tuning_flops_are_6nt_plus_attention(phi3: torch.nn.Module) -> None:
    formula = model_flops(ModelShape.of(phi3), [LENGTH], lora=False)
    assert formula == counted_step_flops(phi3)


def test_lora_flops_skip_the_frozen_weights_gradients(phi3: torch.nn.Module) -> None:
    from peft import LoraConfig, get_peft_model

    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    lora = get_peft_model(phi3, LoraConfig(r=16, target_modules=targets, lora_dropout=0.0))
    shape = ModelShape.of(lora)
    assert shape.lora_params > 0 and shape.matmul_params == ModelShape.of(phi3).matmul_params
    counted, formula = counted_step_flops(lora), model_flops(shape, [LENGTH], lora=True)
    # Over by the first layer's input projection only (2 layers here: a few percent; Phi-3-mini
    # has 32). 6·N·t for the frozen weights, as in full fine-tuning, would be 31% over here.
    assert counted <= formula <= 1.03 * counted
