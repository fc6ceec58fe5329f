"""One request's state while it generates: sampler, stop matcher, incremental detokenizer.

Everything here is per sequence and costs the same at every step whatever the answer's length;
a fault here fails this sequence only (the engine catches ``SamplingError`` per row).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from phi3_server.detokenizer import IncrementalDetokenizer
from phi3_server.sampling import Sampler, SamplingParams
from phi3_server.stopping import StopMatcher

FinishReason = Literal["stop", "length"]


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
    param: str | None = None  # set when a request parameter is the cause


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

    def fail(self, message: str, timed_out: bool = False, param: str | None = None) -> None:
        self.on_event(Failed(message, timed_out, param))


class Sequence:
    """A running request: its sampler, text so far and end conditions."""

    def __init__(
        self, request: GenerationRequest, tokenizer: Any, vocab_size: int, device: torch.device
    ) -> None:
        self.request = request
        self.sampler = Sampler(request.params, vocab_size, device)
        self._text = IncrementalDetokenizer(tokenizer)
        self._stops = StopMatcher(request.params.stop)
        self.generated = 0
        # The token whose successor the next step predicts: the prompt's last, then each chosen.
        self.last_token = request.prompt_ids[-1]
        self.done = False

    @property
    def last_position(self) -> int:
        return len(self.request.prompt_ids) + self.generated - 1

    def accept(self, token: int, eos_ids: frozenset[int]) -> None:
        """Record a chosen token; emit the text that is now certain; finish when due."""
        params = self.request.params
        self.sampler.record(token)
        self.generated += 1
        self.last_token = token
        if token in eos_ids and not params.ignore_eos:
            self.finish("stop")
            return
        released, stopped = self._stops.feed(self._text.add(token))
        self._emit(released)
        if stopped:
            self._end("stop")
        elif self.generated >= params.max_new_tokens:
            self.finish("length")

    def finish(self, reason: FinishReason) -> None:
        """Finish now (an end token, the length limit, the deadline): the text held back as a
        partial character or a possible stop string prefix is emitted, cut at a stop string if
        one completes in it."""
        released, stopped = self._stops.feed(self._text.flush())
        self._emit(released if stopped else released + self._stops.flush())
        self._end("stop" if stopped else reason)

    def fail(self, message: str, timed_out: bool = False, param: str | None = None) -> None:
        self.done = True
        self.request.fail(message, timed_out, param)

    def _emit(self, text: str) -> None:
        if text:
            self.request.on_event(TextDelta(text))

    def _end(self, reason: FinishReason) -> None:
        self.done = True
        self.request.on_event(Finished(reason, len(self.request.prompt_ids), self.generated))
