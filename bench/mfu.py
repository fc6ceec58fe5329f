"""Model FLOP/s utilisation (MFU) of fine-tuning, and the matrix-multiply peak it is measured by.

MFU = model FLOPs per second / peak FLOP/s (Chowdhery et al. 2022, "PaLM", Appendix B): model
FLOPs are those the model needs for the tokens it trained on, whatever the implementation spends
beyond them (activation-checkpointing recompute, padding, attention over a whole packed row).
Hence the attention term below counts each example over its own length, as a variable-length
kernel would.

Per example of t tokens, N the parameters of the model's matrix multiplies (every Linear weight,
lm_head included; not the input embedding, a lookup), L layers, d the hidden size:

- full fine-tuning: 6·N·t + 12·L·d·t². Forward 2·N·t (one multiply-add per weight per token),
  backward 4·N·t (gradients of the activations 2·N·t and of the weights 2·N·t): the 6·N·T of
  Kaplan et al. 2020, "Scaling Laws", Table 1. Attention (QKᵀ and the weighted sum of V, each
  2·t²·d forward per layer, twice that backward): 12·L·d·t², PaLM's 12·L·H·Q·T per token with
  H·Q = d.
- LoRA: 4·N·t + 6·N_lora·t + 12·L·d·t². The frozen base runs forward (2·N·t) and passes
  gradients back through its activations (2·N·t) but computes no weight gradients; the adapters
  (N_lora parameters of A and B) cost the full 6 each. Attention has no weights: unchanged.
  Exact but for the first layer's input projection, whose input (the frozen embedding) needs no
  gradient: 2·(its weights)·t over, under 1% for Phi-3-mini's 32 layers.

tests/bench/test_mfu.py checks both against torch's FLOP counter on a real Phi-3 step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FORMULAS = {
    "full": "6*N*t + 12*L*d*t^2 per example (Kaplan 2020; attention per PaLM 2022 App. B)",
    "lora": "4*N*t + 6*N_lora*t + 12*L*d*t^2 per example (frozen base: no weight gradients)",
}


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs formulas need of a model."""

    matmul_params: int  # N: every Linear weight of the base model, lm_head included
    lora_params: int  # N_lora: adapter weights (0 for full fine-tuning)
    layers: int
    hidden_size: int

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        """Counted from a (possibly PEFT-wrapped) causal LM: no formula input is typed by hand."""
        import torch

        base = lora = 0
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and "lora_" not in name:
                base += module.weight.numel()
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                lora += parameter.numel()
        config = model.config
        return cls(base, lora, config.num_hidden_layers, config.hidden_size)


def model_flops(shape: ModelShape, lengths: Iterable[int], lora: bool) -> float:
    """Training FLOPs of one pass over examples of these token lengths (formulas above)."""
    tokens = squares = 0
    for t in lengths:
        tokens += t
        squares += t * t
    dense = 4 * shape.matmul_params + 6 * shape.lora_params if lora else 6 * shape.matmul_params
    return float(dense * tokens + 12 * shape.layers * shape.hidden_size * squares)


def matmul_peak(
    device: str, dtype: Any, size: int, seconds: float = 1.0, repeats: int = 3
) -> float:
    """Best FLOP/s of a plain square matrix multiply (2·n³ FLOPs) on this device and dtype, run
    for ``seconds`` each of ``repeats`` times: the ceiling MFU is measured against, taken on the
    same core(s) or GPU and in the same run as the training it is compared with."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    torch.matmul(a, b)  # warm-up: kernel choice, caches, clocks
    sync()
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            for _ in range(8):
                torch.matmul(a, b)
            calls += 8
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, 2 * size**3 * calls / elapsed)
    return best
