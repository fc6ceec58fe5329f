"""What the routes share: the loaded model behind the API, the admission limit, the server state.

The model loads on a background thread after the server starts listening (``app.py``), so
``ServerState.runtime`` is None until the load and one warm-up generation are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from jinja2 import TemplateError
from starlette.types import Receive, Scope, Send

from phi3_server.engine import BatchingEngine
from phi3_server.errors import APIError
from phi3_server.middleware import Metrics
from phi3_server.sampling import SamplingParams
from phi3_server.sequence import Failed, Finished, GenerationEvent, GenerationRequest, TextDelta
from phi3_server.settings import Settings

logger = logging.getLogger(__name__)

RETRY_AFTER_S = "1"
DISCONNECT_POLL_S = 0.5
# How long past its deadline a request waits for the engine's last event: the engine checks
# deadlines between steps, and one step (a long prompt's prefill chunk on CPU) can take seconds.
# Beyond it the event is taken as lost, so a request can never hang.
ENGINE_GRACE_S = 30.0
_T = TypeVar("_T")
_WARM_UP_MESSAGES = [{"role": "user", "content": "Hello"}]


@dataclass(frozen=True)
class Completion:
    text: str
    finished: Finished


class ModelRuntime:
    """The loaded model behind the API: prompt building, limits and generation."""

    def __init__(self, engine: BatchingEngine, tokenizer: Any, context_length: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.context_length = context_length
        self._relay = _EventRelay()

    def prompt_ids(self, messages: list[dict[str, str]], param: str) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except TemplateError as error:
            raise APIError(
                400, f"{param}: the chat template rejected them: {error}", param=param
            ) from error
        return list(ids)

    def token_budget(
        self, prompt_ids: list[int], requested: int | None, default: int, param: str
    ) -> int:
        """New tokens allowed: as requested (or the default), and never past the context."""
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise APIError(
                400,
                f"the prompt has {len(prompt_ids)} tokens; this model's context is "
                f"{self.context_length} tokens",
                param="messages",
                code="context_length_exceeded",
            )
        if requested is None:
            return min(default, room)
        if requested > room:
            raise APIError(
                400,
                f"{param}: {requested} new tokens do not fit: the prompt has {len(prompt_ids)} "
                f"of the model's {self.context_length} tokens, leaving {room}",
                param=param,
                code="context_length_exceeded",
            )
        return requested

    def warm_up(self, timeout: float) -> None:
        """One short greedy generation through the batching engine, waited for."""
        done = threading.Event()
        outcome: list[GenerationEvent] = []

        def record(event: GenerationEvent) -> None:
            if not isinstance(event, TextDelta):
                outcome.append(event)
                done.set()

        self.engine.submit(
            GenerationRequest(
                self.prompt_ids(_WARM_UP_MESSAGES, "messages"),
                SamplingParams(max_new_tokens=2, temperature=0.0),
                time.monotonic() + timeout,
                record,
            )
        )
        if not done.wait(timeout):
            raise RuntimeError(f"warm-up generation did not finish within {timeout} s")
        if not isinstance(outcome[0], Finished):
            raise RuntimeError(f"warm-up generation failed: {outcome[0]}")

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, deadline: float, metrics: Metrics
    ) -> AsyncGenerator[TextDelta | Finished]:
        """Text deltas then ``Finished``, from the engine thread to this request's coroutine;
        deltas that queued up while the client was being served come as one. Leaving early
        (client gone, error) cancels the generation."""
        events: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        request = GenerationRequest(prompt_ids, params, deadline, self._relay.sender(events))
        self.engine.submit(request)
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    event = await asyncio.wait_for(events.get(), remaining + ENGINE_GRACE_S)
                except TimeoutError:
                    logger.error(
                        "no answer from the generation engine %s s past the deadline",
                        ENGINE_GRACE_S,
                    )
                    raise APIError(504, "the generation did not answer in time") from None
                while isinstance(event, TextDelta) and not events.empty():
                    following = events.get_nowait()
                    if not isinstance(following, TextDelta):
                        yield event
                        event = following
                        break
                    event = TextDelta(event.text + following.text)
                if isinstance(event, Failed):
                    raise _failure(event)
                if isinstance(event, Finished):
                    metrics.prompt_tokens.inc(event.prompt_tokens)
                    metrics.completion_tokens.inc(event.completion_tokens)
                    yield event
                    return
                yield event
        finally:
            request.cancel()

    async def complete(
        self, prompt_ids: list[int], params: SamplingParams, deadline: float, metrics: Metrics
    ) -> Completion:
        parts: list[str] = []
        async for event in self.generate(prompt_ids, params, deadline, metrics):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                return Completion("".join(parts), event)
        raise AssertionError("generation ended without Finished")


class _EventRelay:
    """Hands events from the worker thread to the event loop with one wake-up per batch of
    events (about one per decode step) instead of one per token of every request: each wake-up
    costs the loop, which shares the core and the GIL with the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue[GenerationEvent], GenerationEvent]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def sender(self, queue: asyncio.Queue[GenerationEvent]) -> Callable[[GenerationEvent], None]:
        """``on_event`` for a request whose coroutine reads ``queue`` (call it on the loop)."""
        self._loop = asyncio.get_running_loop()

        def send(event: GenerationEvent) -> None:
            with self._lock:
                self._pending.append((queue, event))
                wake = len(self._pending) == 1
            if wake and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
                    self._loop.call_soon_threadsafe(self._flush)

        return send

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for queue, event in pending:
            queue.put_nowait(event)


def _failure(event: Failed) -> APIError:
    if event.param is not None:  # a parameter the engine could not use: the client's to fix
        return APIError(400, event.message, param=event.param, code="invalid_value")
    return APIError(504 if event.timed_out else 503, event.message)


class Admission:
    """Bounds requests in the server (running + queued); beyond it, 429 with Retry-After."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def acquire(self, slots: int = 1) -> Callable[[], None]:
        if self.in_flight + slots > self.limit:
            raise APIError(
                429,
                f"the server is at its limit of {self.limit} concurrent requests; retry later",
                code="too_many_requests",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        self.in_flight += slots
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= slots

        return release


@dataclass
class ServerState:
    """Everything the routes need, kept on ``app.state`` (as vLLM's api_server does)."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    runtime: ModelRuntime | None = None
    started: int = field(default_factory=lambda: int(time.time()))
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_concurrent_requests)


class ReleasingStreamingResponse(StreamingResponse):
    """Frees the admission slot however the stream ends, even if it never started."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def unless_client_leaves(request: Request, work: Awaitable[_T]) -> _T:
    """Await ``work``, cancelling it (and so its generations) if the client hangs up first:
    a client that gave up must not keep its batch slots until the deadline."""
    task = asyncio.ensure_future(work)
    while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL_S))[0]:
        if await request.is_disconnected():
            task.cancel()
            raise APIError(499, "the client closed the request")
    return task.result()
