"""The HTTP API: OpenAI chat completions, Azure ML's /score, probes and metrics.

The model loads on a background thread after the server starts listening, so liveness answers at
once and ``/ready`` turns 200 only after the load and one warm-up generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import Response, StreamingResponse
from jinja2 import TemplateError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from phi3_server.engine import (
    BatchingEngine,
    Failed,
    Finished,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)
from phi3_server.errors import APIError, install_error_handlers
from phi3_server.loading import ModelSource, end_token_ids, load
from phi3_server.middleware import BodySizeLimit, Metrics, MetricsMiddleware
from phi3_server.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    ScoreParameters,
    ScoreRequest,
    TextsScoreRequest,
    Usage,
)
from phi3_server.settings import Settings

logger = logging.getLogger(__name__)

RETRY_AFTER_S = "1"
DISCONNECT_POLL_S = 0.5
# How long past its deadline a request waits for the engine's last event: the engine checks
# deadlines between steps, and one step (a long prompt's prefill on CPU) can take seconds.
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
        """Text deltas then ``Finished``, from the engine thread to this request's coroutine.
        Leaving early (client gone, error) cancels the generation."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationEvent] = asyncio.Queue()

        def deliver(event: GenerationEvent) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
                loop.call_soon_threadsafe(events.put_nowait, event)

        request = GenerationRequest(prompt_ids, params, deadline, deliver)
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
                if isinstance(event, Failed):
                    raise APIError(504 if event.timed_out else 503, event.message)
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


def _score_sampling(params: ScoreParameters, max_new_tokens: int) -> SamplingParams:
    # Hugging Face semantics: greedy unless do_sample is set.
    temperature = (
        (params.temperature if params.temperature is not None else 1.0) if params.do_sample else 0.0
    )
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=params.top_p if params.top_p is not None else 1.0,
    )


def create_app(settings: Settings, source: ModelSource, on_fatal: Callable[[], None]) -> FastAPI:
    """The app; it starts loading ``source`` when uvicorn starts it, and calls ``on_fatal``
    if the model cannot be loaded."""
    metrics = Metrics()
    admission = Admission(settings.max_concurrent_requests)
    runtime: ModelRuntime | None = None

    def load_and_warm_up() -> None:
        nonlocal runtime
        try:
            model, tokenizer = load(source)
            engine = BatchingEngine(
                model,
                tokenizer,
                end_token_ids(model, tokenizer),
                settings.max_batch_size,
                on_step=metrics.batch_size.observe,
            )
            engine.start()
            metrics.watch_engine(lambda: engine.waiting_count, lambda: engine.running_count)
            loaded = ModelRuntime(engine, tokenizer, model.config.max_position_embeddings)
            loaded.warm_up(settings.request_timeout)
            runtime = loaded
            logger.info("ready: serving %s as %r", source.model_dir, settings.served_model_name)
        except Exception:
            logger.exception("cannot serve %s", source.model_dir)
            on_fatal()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load_and_warm_up, name="phi3-loader", daemon=True).start()
        yield
        if runtime is not None:
            runtime.engine.stop()

    def ready_runtime() -> ModelRuntime:
        if runtime is None:
            raise APIError(
                503,
                "the model is still loading",
                code="model_loading",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        return runtime

    def require_api_key(authorization: str | None = Header(None)) -> None:
        if settings.api_key is None:
            return
        scheme, _, key = (authorization or "").partition(" ")
        expected = settings.api_key.get_secret_value().encode()
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.encode(), expected):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app = FastAPI(title="Phi-3 server", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    authorized = [Depends(require_api_key)]
    started = int(time.time())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        ready_runtime()
        return {"status": "ready"}

    @app.get("/metrics", dependencies=authorized)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=authorized)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.served_model_name, created=started)])

    @app.post("/v1/chat/completions", dependencies=authorized, response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, http_request: Request
    ) -> ChatCompletion | StreamingResponse:
        model = ready_runtime()
        if body.model != settings.served_model_name:
            raise APIError(
                404,
                f"model {body.model!r} does not exist; this server serves "
                f"{settings.served_model_name!r}",
                param="model",
                code="model_not_found",
            )
        if body.stream_options is not None and not body.stream:
            raise APIError(
                400, "stream_options: only allowed when stream is true", param="stream_options"
            )
        prompt_ids = model.prompt_ids([m.as_template_input() for m in body.messages], "messages")
        requested, param = (
            (body.max_completion_tokens, "max_completion_tokens")
            if body.max_completion_tokens is not None
            else (body.max_tokens, "max_tokens")
        )
        params = SamplingParams(
            max_new_tokens=model.token_budget(
                prompt_ids, requested, settings.default_max_tokens, param
            ),
            temperature=body.temperature if body.temperature is not None else 1.0,
            top_p=body.top_p if body.top_p is not None else 1.0,
            seed=body.seed,
            stop=tuple(body.stop or ()),
            ignore_eos=body.ignore_eos,
        )
        release = admission.acquire()
        deadline = time.monotonic() + settings.request_timeout
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            chunks = _sse_chunks(
                model.generate(prompt_ids, params, deadline, metrics),
                ChatCompletionChunk(
                    id=completion_id,
                    created=int(time.time()),
                    model=settings.served_model_name,
                    choices=[],
                ),
                include_usage,
            )
            return ReleasingStreamingResponse(chunks, release)
        try:
            completion = await _unless_client_leaves(
                http_request, model.complete(prompt_ids, params, deadline, metrics)
            )
        finally:
            release()
        finished = completion.finished
        return ChatCompletion(
            id=completion_id,
            created=int(time.time()),
            model=settings.served_model_name,
            choices=[
                Choice(
                    message=AssistantMessage(content=completion.text),
                    finish_reason=finished.reason,
                )
            ],
            usage=_usage(finished),
        )

    @app.post("/score", dependencies=authorized, response_model=None)
    async def score(body: ScoreRequest, http_request: Request) -> list[str] | dict[str, str]:
        """Azure ML's scoring route, in the two shapes the reference clients send and read."""
        model = ready_runtime()
        if isinstance(body, TextsScoreRequest):
            conversations = [[{"role": "user", "content": text}] for text in body.input_data]
            parameters = body.params
        else:
            conversations = [[m.as_template_input() for m in body.input_data.input_string]]
            parameters = body.input_data.parameters
        if len(conversations) > admission.limit:
            raise APIError(
                400,
                f"input_data: {len(conversations)} texts; at most {admission.limit} per request",
                param="input_data",
            )
        prompts = [model.prompt_ids(c, "input_data") for c in conversations]
        samplings = [
            _score_sampling(
                parameters,
                model.token_budget(
                    ids, parameters.max_new_tokens, settings.default_max_tokens, "max_new_tokens"
                ),
            )
            for ids in prompts
        ]
        release = admission.acquire(len(prompts))
        deadline = time.monotonic() + settings.request_timeout
        try:
            completions = await _unless_client_leaves(
                http_request,
                asyncio.gather(
                    *(
                        model.complete(ids, sampling, deadline, metrics)
                        for ids, sampling in zip(prompts, samplings, strict=True)
                    )
                ),
            )
        finally:
            release()
        if not isinstance(body, TextsScoreRequest):
            return {"output": completions[0].text}
        return [
            prompt + c.text if parameters.return_full_text else c.text
            for prompt, c in zip(body.input_data, completions, strict=True)
        ]

    return app


async def _unless_client_leaves(request: Request, work: Awaitable[_T]) -> _T:
    """Await ``work``, cancelling it (and so its generations) if the client hangs up first:
    a client that gave up must not keep its batch slots until the deadline."""
    task = asyncio.ensure_future(work)
    while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL_S))[0]:
        if await request.is_disconnected():
            task.cancel()
            raise APIError(499, "the client closed the request")
    return task.result()


def _usage(finished: Finished) -> Usage:
    return Usage(
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        total_tokens=finished.prompt_tokens + finished.completion_tokens,
    )


async def _sse_chunks(
    events: AsyncGenerator[TextDelta | Finished], template: ChatCompletionChunk, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them: a role chunk, content chunks, a chunk with
    the finish reason, optionally a usage chunk, then ``[DONE]``."""

    def sse(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        chunk = template.model_copy(update={"choices": choices, "usage": usage})
        return f"data: {chunk.model_dump_json()}\n\n"

    yield sse([ChunkChoice(delta=Delta(role="assistant", content=""))])
    try:
        # aclosing: a client that hangs up mid-stream cancels its generation at once.
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    yield sse([ChunkChoice(delta=Delta(content=event.text))])
                else:
                    yield sse([ChunkChoice(delta=Delta(), finish_reason=event.reason)])
                    if include_usage:
                        yield sse([], _usage(event))
    except APIError as error:
        # Headers are gone already: report in-band, as OpenAI does mid-stream.
        yield f"data: {json.dumps(error.body())}\n\n"
        return
    yield "data: [DONE]\n\n"
