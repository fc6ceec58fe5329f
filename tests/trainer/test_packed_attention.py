"""The packed_varlen attention: the masked path's results on packed rows, no attention across
chats, and the trainer's choice of it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import Phi3Config, Phi3ForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from phi3_trainer import packed_attention
from phi3_training_rules.attention import PACKED_VARLEN, choose

# Grouped-query attention (4 query heads, 2 key/value heads) and a sliding window shorter than
# the longest chat: both change what the per-chat path must compute.
CONFIG: dict[str, Any] = dict(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    sliding_window=24, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)  # fmt: skip
CHAT_LENGTHS = [17, 40, 5, 30]


def packed_row(chats: list[list[int]]) -> dict[str, torch.Tensor]:
    """One padding-free packed row, as TRL's collator builds it (position ids restart per chat,
    cu_seq_lens_q/max_length_q, labels -100 at each chat's first token)."""
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    row = [token for chat in chats for token in chat]
    batch = collate([{"input_ids": row, "seq_lengths": [len(chat) for chat in chats]}])
    batch.pop("seq_idx")  # for linear-attention layers; Phi-3 has none
    packed: dict[str, torch.Tensor] = batch
    return packed


def random_chats(seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (n,), generator=generator).tolist() for n in CHAT_LENGTHS]


@pytest.fixture(scope="module")
def model() -> Phi3ForCausalLM:
    torch.manual_seed(0)
    model: Phi3ForCausalLM = Phi3ForCausalLM(Phi3Config(**CONFIG)).train()
    return model


def forward(model: Phi3ForCausalLM, implementation: str, batch: dict[str, Any]) -> Any:
    model.set_attn_implementation(implementation)
    model.zero_grad()
    output = model(**batch, use_cache=False)
    output.loss.backward()
    gradients = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return output.loss.detach(), output.logits.detach(), gradients


def test_loss_logits_and_gradients_equal_the_masked_paths(model: Phi3ForCausalLM) -> None:
    batch = packed_row(random_chats(seed=1))
    masked_loss, masked_logits, masked_grads = forward(model, "sdpa", batch)
    loss, logits, grads = forward(model, PACKED_VARLEN, batch)
    assert loss == pytest.approx(masked_loss.item(), rel=1e-5)
    torch.testing.assert_close(logits, masked_logits, rtol=1e-4, atol=1e-5)
    for gradient, masked in zip(grads, masked_grads, strict=True):
        torch.testing.assert_close(gradient, masked, rtol=1e-3, atol=1e-5)


def test_changing_one_chat_leaves_the_others_logits_as_they_were(model: Phi3ForCausalLM) -> None:
    chats = random_chats(seed=2)
    changed = [*chats[:1], [3 + (t + 7) % 120 for t in chats[1]], *chats[2:]]
    _, before, _ = forward(model, PACKED_VARLEN, packed_row(chats))
    _, after, _ = forward(model, PACKED_VARLEN, packed_row(changed))
    bounds = [0, *torch.tensor(CHAT_LENGTHS).cumsum(0).tolist()]
    spans = [slice(bounds[i], bounds[i + 1]) for i in range(len(CHAT_LENGTHS))]
    for index, span in enumerate(spans):
        same = torch.equal(before[0, span], after[0, span])
        assert same is (index != 1), f"chat {index}"


def test_padded_rows_attend_within_their_tokens(model: Phi3ForCausalLM) -> None:
    """Given --attn_implementation packed_varlen without packing: padded rows, a 2D mask."""
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, 128, (2, 30), generator=generator)
    attention_mask = torch.ones(2, 30, dtype=torch.long)
    attention_mask[1, 18:] = 0
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": input_ids}
    _, masked, _ = forward(model, "sdpa", batch)
    _, logits, _ = forward(model, PACKED_VARLEN, batch)
    present = attention_mask.bool()
    torch.testing.assert_close(logits[present], masked[present], rtol=1e-4, atol=1e-5)


def reference_varlen_attn(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_q: torch.Tensor,
    cu_seq_k: torch.Tensor,
    max_q: int,
    max_k: int,
    *,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    enable_gqa: bool = False,
) -> torch.Tensor:
    """torch.nn.attention.varlen.varlen_attn as its docstring defines it, written out: (T, H, D)
    tensors, sequences at cu_seq, window (W, 0) = each query sees itself and the W keys before,
    (-1, 0) = causal; key/value heads shared by groups of query heads with enable_gqa."""
    assert cu_seq_q.dtype == torch.int32 and torch.equal(cu_seq_q, cu_seq_k)
    lengths = cu_seq_q.diff()
    assert max_q == max_k == int(lengths.max())
    left, right = window_size
    assert right == 0 and (left >= 0 or left == -1)
    groups = query.shape[1] // key.shape[1]
    assert enable_gqa == (groups > 1)
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    output = torch.empty_like(query)
    bounds = cu_seq_q.tolist()
    for start, end in itertools.pairwise(bounds):
        q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))
        scores = q @ k.transpose(1, 2) * (scale or 1 / math.sqrt(q.shape[-1]))
        distance = torch.arange(end - start)[:, None] - torch.arange(end - start)[None, :]
        allowed = (distance >= 0) & ((distance <= left) if left >= 0 else True)
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        output[start:end] = (weights @ v).transpose(0, 1)
    return output


@pytest.mark.parametrize("window", [None, 24])
def test_the_gpu_path_calls_varlen_attn_with_its_layout(
    model: Phi3ForCausalLM, monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    """No GPU here: the kernel is replaced by its documented semantics, which checks the call
    (token-first layout, int32 boundaries, the window, GQA) against the masked path."""
    calls: list[tuple[int, int]] = []

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(kwargs["window_size"])
        return reference_varlen_attn(*args, **kwargs)

    flash_takes: Callable[..., bool] = lambda query, dropout: True  # noqa: E731
    monkeypatch.setattr(packed_attention, "_flash_takes", flash_takes)
    monkeypatch.setattr(packed_attention, "varlen_attn", recording)
    # The reference computes in fp32: nothing to cast to a flash dtype first.
    monkeypatch.setattr(packed_attention, "_FLASH_DTYPES", (torch.float32,))
    monkeypatch.setattr(model.config, "sliding_window", window)
    batch = packed_row(random_chats(seed=4))
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        masked = model(**batch, use_cache=False).logits
        model.set_attn_implementation(PACKED_VARLEN)
        logits = model(**batch, use_cache=False).logits
    torch.testing.assert_close(logits, masked, rtol=1e-4, atol=1e-5)
    assert set(calls) == {(window - 1, 0) if window else (-1, 0)}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, PACKED_VARLEN),  # the trainer's defaults: packing, bfd
        ({"packing_strategy": "bfd_split"}, PACKED_VARLEN),
        ({"packing": False, "padding_free": True, "max_length": "none"}, PACKED_VARLEN),
        ({"packing_strategy": "wrapped"}, None),  # rows span chats on purpose: whole-row causal
        ({"packing": False}, None),
        ({"attn_implementation": "eager"}, "eager"),  # the user's choice wins
    ],
)
def test_the_trainer_chooses_it_for_padding_free_rows_unless_told(
    flags: dict[str, Any], expected: str | None
) -> None:
    from phi3_trainer.config import parse_args

    argv = ["--train_file", "t.jsonl", "--report_to", "none"]
    for name, value in flags.items():
        argv += [f"--{name}", str(value).lower() if isinstance(value, bool) else value]
    script, config = parse_args(argv)
    assert choose({**vars(script), **vars(config)}) == expected
