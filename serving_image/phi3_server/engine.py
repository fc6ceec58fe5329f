"""Continuous batching: concurrent requests share every forward pass of the model.

One worker thread owns the model. Each step it admits waiting requests into the running batch
(prefilling their prompts together), then decodes one token for every running sequence in a
single forward pass over a shared, left-padded KV cache. Finished, cancelled or expired
sequences leave the batch between steps, so a long answer never holds up a short one.

transformers' own continuous batching (``model.init_continuous_batching``) was evaluated first:
it samples every request with one shared ``do_sample`` flag and the global RNG, so per-request
greedy/sampled choice and ``seed`` cannot be honoured; this module keeps those per sequence.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from transformers import DynamicCache, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicLayer

logger = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded. ``temperature == 0`` means greedy."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str
    timed_out: bool = False


GenerationEvent = TextDelta | Finished | Failed


@dataclass
class GenerationRequest:
    """A prompt to complete. ``on_event`` is called from the worker thread; the last event is
    always a ``Finished`` or a ``Failed`` (except after ``cancel``, which ends it silently)."""

    prompt_ids: list[int]
    params: SamplingParams
    deadline: float  # time.monotonic() value after which the request fails as timed out
    on_event: Callable[[GenerationEvent], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


class _Sequence:
    """A running request: its tokens, its own RNG and how much text it has emitted."""

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        params = request.params
        self.generated: list[int] = []
        self.emitted_chars = 0
        self.done = False
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        self.generator = torch.Generator().manual_seed(seed)
        self.warpers = (
            [TemperatureLogitsWarper(params.temperature), TopPLogitsWarper(params.top_p)]
            if params.temperature > 0
            else []
        )

    @property
    def last_position(self) -> int:
        return len(self.request.prompt_ids) + len(self.generated) - 1

    def sample(self, logits: torch.Tensor) -> int:
        if not self.warpers:
            return int(logits.argmax())
        scores = logits.float().unsqueeze(0)
        history = torch.tensor([self.generated], dtype=torch.long)
        for warper in self.warpers:
            scores = warper(history, scores)
        probs = torch.softmax(scores, dim=-1).cpu()
        return int(torch.multinomial(probs[0], 1, generator=self.generator))

    def accept(self, token: int, eos_ids: frozenset[int], tokenizer: Any) -> None:
        """Record a sampled token; emit the text that is now certain; finish when due."""
        params = self.request.params
        self.generated.append(token)
        if token in eos_ids and not params.ignore_eos:
            self.finish_with_held_back_text(tokenizer, "stop", self.generated[:-1])
            return
        text = tokenizer.decode(self.generated, skip_special_tokens=True)
        stop_at = _find_stop(text, params.stop, self.emitted_chars)
        if stop_at is not None:
            self._emit(text[:stop_at])
            self._finish("stop")
        elif len(self.generated) >= params.max_new_tokens:
            self._emit(text)
            self._finish("length")
        else:
            self._emit(text[: len(text) - _undecided_suffix(text, params.stop)])

    def finish_with_held_back_text(
        self, tokenizer: Any, reason: FinishReason, tokens: list[int] | None = None
    ) -> None:
        """Finish early (an end token, the deadline): the text held back as a possible stop
        string prefix or partial character will never be completed, so it is emitted now,
        cut at a stop string if one is complete in it."""
        text = tokenizer.decode(
            self.generated if tokens is None else tokens, skip_special_tokens=True
        )
        stop_at = _find_stop(text, self.request.params.stop, self.emitted_chars)
        self._emit(text if stop_at is None else text[:stop_at])
        self._finish(reason)

    def fail(self, message: str, timed_out: bool = False) -> None:
        self.done = True
        self.request.on_event(Failed(message, timed_out))

    def _emit(self, text: str) -> None:
        if len(text) > self.emitted_chars:
            self.request.on_event(TextDelta(text[self.emitted_chars :]))
            self.emitted_chars = len(text)

    def _finish(self, reason: FinishReason) -> None:
        self.done = True
        self.request.on_event(Finished(reason, len(self.request.prompt_ids), len(self.generated)))


def _find_stop(text: str, stops: Sequence[str], emitted_chars: int) -> int | None:
    """Index of the earliest stop string in ``text`` (only text not yet emitted can hold one)."""
    hits = [
        index
        for stop in stops
        if (index := text.find(stop, max(0, emitted_chars - len(stop) + 1))) >= 0
    ]
    return min(hits, default=None)


def _undecided_suffix(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters must wait: a partial UTF-8 character (decoded as U+FFFD)
    or the beginning of a stop string, which the next tokens may complete."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    return max(
        (
            n
            for stop in stops
            for n in range(min(len(stop) - 1, len(text)), 0, -1)
            if text.endswith(stop[:n])
        ),
        default=0,
    )


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    # Built without a model config, the cache holds plain growing layers only.
    return cast(list[DynamicLayer], cache.layers)


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    # F.pad lists (left, right) pairs from the last dimension backwards.
    pads = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pads)


def _stack_rows(
    running: torch.Tensor | None, joining: torch.Tensor | None, width: int
) -> torch.Tensor:
    """Cached keys or values of two batches, left-padded to ``width`` positions, as one batch."""
    assert running is not None and joining is not None
    return torch.cat([_pad_left(running, width, -2), _pad_left(joining, width, -2)])


class BatchingEngine:
    """Runs generation for all requests on one worker thread, ``max_batch_size`` at a time."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_token_ids: frozenset[int],
        max_batch_size: int,
        on_step: Callable[[int], None] = lambda batch_size: None,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._eos_ids = eos_token_ids
        self._max_batch_size = max_batch_size
        self._on_step = on_step
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Guards _waiting and _closed, so that no request is queued after the worker drained.
        self._waiting_changed = threading.Condition()
        self._waiting: deque[GenerationRequest] = deque()
        self._closed = False
        self._rows: list[_Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, cached positions], 0 where padded
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phi3-generation", daemon=True)

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        return len(self._rows)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current step; every unfinished request gets a ``Failed`` event."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        # The worker closes the queue as it exits; this covers a worker never started.
        self._close_waiting()

    def submit(self, request: GenerationRequest) -> None:
        with self._waiting_changed:
            if not self._closed:
                self._waiting.append(request)
                self._waiting_changed.notify()
                return
        request.on_event(Failed("the server is shutting down"))

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stopping.is_set():
                    self._step()
            self._fail_running("the server is shutting down")
        finally:
            # Also when the worker itself crashed: nobody would ever take these requests.
            self._close_waiting()

    def _step(self) -> None:
        self._expire_waiting()
        newcomers = [_Sequence(request) for request in self._take_waiting()]
        try:
            if newcomers:
                self._prefill(newcomers)
            if self._rows:
                self._decode()
        except Exception:  # a fault of the shared batch must fail its requests, not hang them
            logger.exception("generation step failed")
            for sequence in newcomers:
                if not sequence.done:
                    sequence.fail("generation failed on the server")
            self._fail_running("generation failed on the server")

    def _close_waiting(self) -> None:
        with self._waiting_changed:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
        for request in left:
            _Sequence(request).fail("the server is shutting down")

    def _expire_waiting(self) -> None:
        """Drop cancelled and fail expired queued requests, even while the batch is full: a
        queued request must learn of its timeout at its deadline, not when a slot frees."""
        now = time.monotonic()
        with self._waiting_changed:
            expired = [r for r in self._waiting if not r.cancelled.is_set() and now > r.deadline]
            live = [r for r in self._waiting if not r.cancelled.is_set() and now <= r.deadline]
            self._waiting = deque(live)
        for request in expired:
            _Sequence(request).fail("the request timed out while queued", timed_out=True)

    def _take_waiting(self) -> list[GenerationRequest]:
        with self._waiting_changed:
            if not self._rows and not self._waiting:
                # Block briefly only when idle, so a busy batch never waits for newcomers.
                self._waiting_changed.wait(timeout=0.1)
            room = self._max_batch_size - len(self._rows)
            return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    def _prefill(self, newcomers: list[_Sequence]) -> None:
        """Run the new prompts in a cache of their own, then merge it into the batch. A prompt
        that cannot be processed (out of memory on a long one) fails only the new requests."""
        requests = [sequence.request for sequence in newcomers]
        width = max(len(request.prompt_ids) for request in requests)
        device = self._model.device
        input_ids = torch.full((len(requests), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            input_ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            mask[row, width - len(request.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # A plain cache: rows are padded and merged below, which sliding-window layers do not allow.
        cache = DynamicCache()
        try:
            logits = self._model(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
        except Exception:
            logger.exception("prefill of %d new requests failed", len(newcomers))
            for sequence in newcomers:
                sequence.fail("generation failed on the server: the prompt could not be processed")
            return
        self._join(newcomers, cache, mask.to(device))
        self._advance(newcomers, logits)

    def _decode(self) -> None:
        assert self._cache is not None and self._mask is not None
        device = self._model.device
        self._on_step(len(self._rows))
        last_tokens = [[sequence.generated[-1]] for sequence in self._rows]
        positions = [[sequence.last_position] for sequence in self._rows]
        self._mask = F.pad(self._mask, (0, 1), value=1)
        logits = self._model(
            input_ids=torch.tensor(last_tokens, device=device),
            attention_mask=self._mask,
            position_ids=torch.tensor(positions, device=device),
            past_key_values=self._cache,
            use_cache=True,
        ).logits[:, -1, :]
        self._advance(self._rows, logits)

    def _advance(self, sequences: list[_Sequence], logits: torch.Tensor) -> None:
        now = time.monotonic()
        for sequence, row_logits in zip(sequences, logits, strict=True):
            if sequence.request.cancelled.is_set():
                sequence.done = True
            elif now > sequence.request.deadline and not sequence.generated:
                sequence.fail("the request exceeded its deadline", timed_out=True)
            elif now > sequence.request.deadline:
                # A server-side cap on generation, like max_tokens: the answer so far, "length".
                sequence.finish_with_held_back_text(self._tokenizer, "length")
            else:
                sequence.accept(sequence.sample(row_logits), self._eos_ids, self._tokenizer)
        self._drop_finished()

    def _join(self, newcomers: list[_Sequence], cache: DynamicCache, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            for running, joining in zip(_layers(self._cache), _layers(cache), strict=True):
                running.keys = _stack_rows(running.keys, joining.keys, width)
                running.values = _stack_rows(running.values, joining.values, width)
            self._mask = torch.cat([_pad_left(self._mask, width, -1), _pad_left(mask, width, -1)])
        self._rows.extend(newcomers)

    def _drop_finished(self) -> None:
        keep = [row for row, sequence in enumerate(self._rows) if not sequence.done]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[row] for row in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        assert self._cache is not None and self._mask is not None
        index = torch.tensor(keep, device=self._mask.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        # Columns that are padding in every remaining row only cost time: cut them off.
        first_used = int(self._mask.any(dim=0).int().argmax())
        if first_used:
            for layer in _layers(self._cache):
                assert layer.keys is not None and layer.values is not None
                layer.keys = layer.keys[..., first_used:, :]
                layer.values = layer.values[..., first_used:, :]
            self._mask = self._mask[:, first_used:]

    def _fail_running(self, message: str) -> None:
        for sequence in self._rows:
            if not sequence.done:
                sequence.fail(message)
        self._rows, self._cache, self._mask = [], None, None
