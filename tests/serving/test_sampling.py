"""The sampler draws from the distribution OpenAI's parameters define, row by row."""

from __future__ import annotations

from unittest import mock

import torch

from phi3_server.sampling import Sampler, SamplingParams, choose_tokens

VOCAB = 6
ROWS = 5000
DRAWS = 12  # 60,000 tokens: a frequency's standard error is at most 0.002


def _frequencies(params: SamplingParams, logits: torch.Tensor) -> torch.Tensor:
    samplers = [Sampler(params, VOCAB, torch.device("cpu")) for _ in range(ROWS)]
    generator = torch.Generator()
    generator.manual_seed(0)
    counts = torch.zeros(VOCAB)
    for _ in range(DRAWS):
        tokens = choose_tokens(samplers, logits.expand(ROWS, VOCAB), generator)
        assert None not in tokens
        counts += torch.bincount(torch.tensor(tokens), minlength=VOCAB)
    return counts / counts.sum()


LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def test_sampled_tokens_follow_the_softmax_at_the_temperature() -> None:
    expected = torch.softmax(LOGITS / 0.7, dim=-1)
    observed = _frequencies(SamplingParams(max_new_tokens=1, temperature=0.7), LOGITS)
    torch.testing.assert_close(observed, expected, rtol=0, atol=0.01)


def test_top_p_draws_only_from_the_nucleus_renormalized() -> None:
    probs = torch.softmax(LOGITS, dim=-1)  # 0.56, 0.21, 0.13, ...: 0.7 needs the first two
    observed = _frequencies(SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.7), LOGITS)
    expected = torch.zeros(VOCAB)
    expected[:2] = probs[:2] / probs[:2].sum()
    assert observed[2:].sum() == 0
    torch.testing.assert_close(observed, expected, rtol=0, atol=0.01)


def test_a_row_left_with_one_token_gets_it_even_when_the_uniform_draw_is_zero() -> None:
    """uniform_ can return 0; as infinite noise it would zero the only token top_p left, and
    argmax over all zeros picks token 0."""
    sampler = Sampler(
        SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.01), VOCAB, torch.device("cpu")
    )
    logits = torch.tensor([[0.0, 1.0, 2.0, 5.0, 1.0, 0.0]])
    generator = torch.Generator()
    with mock.patch.object(torch.Tensor, "uniform_", lambda self, generator=None: self.zero_()):
        assert choose_tokens([sampler], logits, generator) == [3]
