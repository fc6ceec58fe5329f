"""The KV adapter and Phi-3's decode step, the modules on transformers' internals: pinned, and
checked against the model's own forward pass over each sequence alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
)

from phi3_server.kv_batch import TESTED_TRANSFORMERS, BatchedCache, ChunkedPrefill
from phi3_server.phi3_decode import Phi3Decode

IMAGE_CONSTRAINTS = Path(__file__).resolve().parents[2] / "serving_image" / "constraints.txt"


def test_installed_transformers_is_the_version_the_adapter_was_checked_against() -> None:
    pins = dict(
        line.split("==", 1) for line in IMAGE_CONSTRAINTS.read_text().splitlines() if "==" in line
    )
    # The adapter reads DynamicCache.layers and DynamicLayer.keys/values, which transformers
    # may change in any release: a new pin needs this module re-checked, then the constant.
    assert pins["transformers"] == TESTED_TRANSFORMERS == transformers.__version__


# Grouped key heads in both small models: two query heads per key head (Phi-3-medium has four).
# Any: the configs' keyword arguments are of many types.
_SMALL: dict[str, Any] = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
}


def _phi3_grouped_partial_rotary_windowed() -> Any:
    """A Phi-3 with what the tiny model lacks: grouped key heads, rotary embedding on half of
    each head (Phi-4-mini's partial_rotary_factor) and a sliding window (Phi-3-mini-4k's
    sliding_window: 2047) shorter than the test's prompts."""
    torch.manual_seed(0)
    extra: dict[str, Any] = {
        "partial_rotary_factor": 0.5,
        "sliding_window": 6,
        "original_max_position_embeddings": 256,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    config = Phi3Config(**_SMALL, **extra)
    return Phi3ForCausalLM(config).eval()


def _llama() -> Any:
    """Not a Phi-3: decoded by the model's own forward."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**_SMALL)).eval()


@pytest.fixture(
    scope="module", params=["tiny Phi-3", "Phi-3 grouped, partial rotary, windowed", "Llama"]
)
def model(request: pytest.FixtureRequest, tiny_phi3: Path) -> Any:
    if request.param == "tiny Phi-3":
        return AutoModelForCausalLM.from_pretrained(tiny_phi3).eval()
    if request.param == "Llama":
        return _llama()
    return _phi3_grouped_partial_rotary_windowed()


def _alone(model: Any, tokens: list[int]) -> torch.Tensor:
    """The next-token logits of ``tokens`` in one plain forward pass, unbatched."""
    with torch.inference_mode():
        logits: torch.Tensor = model(input_ids=torch.tensor([tokens])).logits[0, -1]
        return logits


@pytest.fixture(params=["matmul", "sdpa"])
def decode_attention(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Phi-3's single-query attention as on CPU (matmuls) and as on CUDA (SDPA), both here."""
    monkeypatch.setattr(Phi3Decode, "ATTENTION_BY_DEVICE", {"cpu": request.param})
    return str(request.param)


@pytest.mark.usefixtures("decode_attention")
def test_chunked_prefill_join_decode_and_drop_match_each_sequence_alone(model: Any) -> None:
    first, second, third = list(range(3, 40)), [9, 8, 7], list(range(100, 111))
    with torch.inference_mode():
        batch = BatchedCache(model)
        # Chunks of 8 padded tokens: 37 positions of two rows take 10 chunks.
        prefill = ChunkedPrefill(model, [first, second], pad_id=0, chunk_tokens=8)
        chunks = 1
        while (logits := prefill.step()) is None:
            chunks += 1
        assert chunks == 10
        batch.admit(prefill)
        late = ChunkedPrefill(model, [third], pad_id=0, chunk_tokens=512)
        late_logits = late.step()
        assert late_logits is not None
        batch.admit(late)
        torch.testing.assert_close(logits[0], _alone(model, first), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits[1], _alone(model, second), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(late_logits[0], _alone(model, third), rtol=1e-4, atol=1e-4)
        # One decode step for the three rows, then the middle one leaves (its padding goes).
        step = batch.decode([1, 2, 3], [len(first), len(second), len(third)])
        for row, tokens in enumerate([[*first, 1], [*second, 2], [*third, 3]]):
            torch.testing.assert_close(step[row], _alone(model, tokens), rtol=1e-4, atol=1e-4)
        batch.keep([0, 2])
        step = batch.decode([4, 5], [len(first) + 1, len(third) + 1])
        for row, tokens in enumerate([[*first, 1, 4], [*third, 3, 5]]):
            torch.testing.assert_close(step[row], _alone(model, tokens), rtol=1e-4, atol=1e-4)


def test_a_phi3_decodes_without_the_models_forward(tiny_phi3: Path) -> None:
    """The decode step is the fast path for every Phi-3 the server loads, not a silent fallback."""
    phi3 = AutoModelForCausalLM.from_pretrained(tiny_phi3).eval()
    assert Phi3Decode.serves(phi3)
    with torch.inference_mode():
        batch = BatchedCache(phi3)
        prefill = ChunkedPrefill(phi3, [[5, 6, 7]], pad_id=0, chunk_tokens=512)
        assert prefill.step() is not None
        batch.admit(prefill)
        with (
            mock.patch.object(type(phi3), "forward", side_effect=AssertionError("forward")),
            mock.patch.object(type(phi3.model), "forward", side_effect=AssertionError("model")),
        ):
            step = batch.decode([8], [3])
    torch.testing.assert_close(step[0], _alone(phi3, [5, 6, 7, 8]), rtol=1e-4, atol=1e-4)
