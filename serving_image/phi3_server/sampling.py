"""How one sequence picks its next token: its own parameters, RNG and numeric guard.

The limits are the ones OpenAI documents for chat completions, as vLLM encodes them
(vllm-project/vllm ``vllm/entrypoints/openai/protocol.py`` and ``vllm/sampling_params.py``);
the schema enforces them with a 400 naming the field, and ``Sampler`` checks them again, so a
value that slipped past fails its own sequence, never the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# torch.Generator.manual_seed takes any value of int64 or uint64 (2**64 overflows it); vLLM
# bounds seed to torch.long.
SEED_MIN = -(2**63)
SEED_MAX = 2**64 - 1
# Below this, logits / temperature overflow to inf and softmax gives NaN: vLLM's floor
# (_MAX_TEMP in vllm/sampling_params.py). 0 means greedy.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 2.0
PENALTY_LIMIT = 2.0  # OpenAI: presence_penalty and frequency_penalty in [-2, 2]
LOGIT_BIAS_LIMIT = 100.0  # OpenAI: logit_bias values in [-100, 100]


class SamplingError(ValueError):
    """One sequence cannot go on (a parameter out of range, non-finite scores)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. ``temperature == 0`` means greedy."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs


def _check(params: SamplingParams, vocab_size: int) -> None:
    problems = [
        ("max_new_tokens", params.max_new_tokens >= 1, "must be at least 1"),
        (
            "temperature",
            params.temperature == 0 or MIN_TEMPERATURE <= params.temperature <= MAX_TEMPERATURE,
            f"must be 0 or in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]",
        ),
        ("top_p", 0 < params.top_p <= 1, "must be in (0, 1]"),
        ("stop", all(params.stop), "stop strings must not be empty"),
        (
            "seed",
            params.seed is None or SEED_MIN <= params.seed <= SEED_MAX,
            f"must be in [{SEED_MIN}, {SEED_MAX}]",
        ),
        (
            "presence_penalty",
            -PENALTY_LIMIT <= params.presence_penalty <= PENALTY_LIMIT,
            f"must be in [-{PENALTY_LIMIT}, {PENALTY_LIMIT}]",
        ),
        (
            "frequency_penalty",
            -PENALTY_LIMIT <= params.frequency_penalty <= PENALTY_LIMIT,
            f"must be in [-{PENALTY_LIMIT}, {PENALTY_LIMIT}]",
        ),
        (
            "logit_bias",
            all(
                0 <= token < vocab_size and -LOGIT_BIAS_LIMIT <= bias <= LOGIT_BIAS_LIMIT
                for token, bias in params.logit_bias
            ),
            f"token ids must be in [0, {vocab_size}) and biases in "
            f"[-{LOGIT_BIAS_LIMIT}, {LOGIT_BIAS_LIMIT}]",
        ),
    ]
    for param, ok, rule in problems:
        if not ok:  # NaN fails every comparison, so it lands here too
            raise SamplingError(f"{param}: {rule}", param)


class Sampler:
    """Greedy or sampled choice for one sequence; a seeded one has its own generator, so that
    it gives the same answer whatever else shares its batch. Penalties count this
    sequence's generated tokens (OpenAI: "based on their existing frequency in the text so
    far"; vLLM counts output tokens), kept as a per-sequence count vector updated in O(1) per
    token, so a step costs O(vocab) per sequence, never O(answer length)."""

    def __init__(self, params: SamplingParams, vocab_size: int, device: torch.device) -> None:
        _check(params, vocab_size)
        self.params = params
        self.sampled = params.temperature > 0
        # A seeded request draws from its own generator; unseeded ones share the engine's, so
        # that their noise is one batched draw per step.
        self.generator: torch.Generator | None = None
        if self.sampled and params.seed is not None:
            self.generator = torch.Generator(device)
            self.generator.manual_seed(params.seed)
        self._bias: tuple[torch.Tensor, torch.Tensor] | None = None
        if params.logit_bias:
            tokens, biases = zip(*params.logit_bias, strict=True)
            self._bias = (
                torch.tensor(tokens, dtype=torch.long, device=device),
                torch.tensor(biases, dtype=torch.float32, device=device),
            )
        self._counts: torch.Tensor | None = None
        if params.presence_penalty or params.frequency_penalty:
            self._counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)

    @property
    def adjusts_scores(self) -> bool:
        return self._bias is not None or self._counts is not None

    def adjust(self, scores: torch.Tensor) -> torch.Tensor:
        """This sequence's logit bias and penalties applied to its row of scores."""
        if self._bias is not None:
            scores = scores.index_add(0, self._bias[0], self._bias[1])
        if self._counts is not None:
            scores = (
                scores
                - self.params.frequency_penalty * self._counts
                - self.params.presence_penalty * (self._counts > 0).float()
            )
        return scores

    def record(self, token: int) -> None:
        if self._counts is not None:
            self._counts[token] += 1


def choose_tokens(
    samplers: Sequence[Sampler], logits: torch.Tensor, unseeded: torch.Generator
) -> list[int | None]:
    """Each row's next token, by its own sampler, with the batch's work done in batched ops
    (``unseeded`` draws the noise of the sampled rows without a seed of their own);
    None for a row whose scores or probabilities are not finite (that sequence must fail,
    the others are unaffected: every op here is row-wise)."""
    scores = logits.float()
    adjusted = [row for row, sampler in enumerate(samplers) if sampler.adjusts_scores]
    if adjusted:
        scores = scores.clone()
        for row in adjusted:
            scores[row] = samplers[row].adjust(scores[row])
    usable = torch.isfinite(scores).all(dim=-1)
    tokens = scores.argmax(dim=-1)
    sampled = [row for row, sampler in enumerate(samplers) if sampler.sampled]
    if sampled:
        rows = torch.tensor(sampled, device=scores.device)
        temperatures = torch.tensor(
            [samplers[row].params.temperature for row in sampled], device=scores.device
        )
        probs = torch.softmax(scores[rows] / temperatures.unsqueeze(-1), dim=-1)
        for index, row in enumerate(sampled):
            if samplers[row].params.top_p < 1:
                probs[index] = _top_p(probs[index], samplers[row].params.top_p)
        # argmax(p / q) with q ~ Exp(1) draws from p, as vLLM's sampler does (vllm/v1/sample/
        # ops/topk_topp_sampler.py random_sample); a seeded row's noise comes from its
        # own generator, so a seeded answer does not depend on its batch.
        noise = _exponential_(torch.empty_like(probs), unseeded)
        for index, row in enumerate(sampled):
            if (generator := samplers[row].generator) is not None:
                _exponential_(noise[index], generator)
        tokens[rows] = (probs / noise).argmax(dim=-1)
        usable[rows] &= torch.isfinite(probs).all(dim=-1) & (probs.sum(dim=-1) > 0)
    return [
        token if ok else None for token, ok in zip(tokens.tolist(), usable.tolist(), strict=True)
    ]


def _exponential_(out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill ``out`` in place with Exp(1) noise, as -log(U) for U uniform in (0, 1): on CPU
    torch's ``exponential_`` draws at 17 ns a value, ``uniform_`` at 2 (16 x 32064 values, one
    core: 8.6 vs 1.1 ms), which made the draw most of a step's sampling at Phi-3's vocabulary.
    ``uniform_`` can return 0, raised to the smallest normal float: infinite noise would zero
    the only token of a row that top_p or a low temperature left with one, and argmax would
    then pick token 0; finite noise above 0 also keeps p / noise from ever being NaN."""
    out.uniform_(generator=generator)
    return out.clamp_(min=torch.finfo(out.dtype).tiny).log_().neg_()


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose mass reaches ``top_p``
    (the most likely token always stays)."""
    ordered, order = probs.sort(descending=True)
    mass_before = ordered.cumsum(-1) - ordered
    ordered = ordered.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(0, order, ordered)
