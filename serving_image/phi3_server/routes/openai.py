"""OpenAI's chat completions and models routes."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from phi3_server.dependencies import Authorized, ReadyModel, State
from phi3_server.errors import APIError
from phi3_server.runtime import ModelRuntime, ReleasingStreamingResponse, unless_client_leaves
from phi3_server.sampling import SamplingParams
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
    Usage,
)
from phi3_server.sequence import Finished, TextDelta
from phi3_server.settings import Settings

router = APIRouter(prefix="/v1", dependencies=Authorized)
_MARK = "@@content@@"


@router.get("/models")
async def models(state: State) -> ModelList:
    return ModelList(data=[ModelCard(id=state.settings.served_model_name, created=state.started)])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, model: ReadyModel, state: State, http_request: Request
) -> ChatCompletion | StreamingResponse:
    settings = state.settings
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
    params = _sampling(body, model, prompt_ids, settings)
    release = state.admission.acquire()
    deadline = time.monotonic() + settings.request_timeout
    header = ChatCompletionChunk(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=settings.served_model_name,
        choices=[],
    )
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = model.generate(prompt_ids, params, deadline, state.metrics)
        return ReleasingStreamingResponse(_sse_chunks(events, header, include_usage), release)
    try:
        completion = await unless_client_leaves(
            http_request, model.complete(prompt_ids, params, deadline, state.metrics)
        )
    finally:
        release()
    return ChatCompletion(
        id=header.id,
        created=int(time.time()),
        model=header.model,
        choices=[
            Choice(
                message=AssistantMessage(content=completion.text),
                finish_reason=completion.finished.reason,
            )
        ],
        usage=_usage(completion.finished),
    )


def _sampling(
    body: ChatCompletionRequest, model: ModelRuntime, prompt_ids: list[int], settings: Settings
) -> SamplingParams:
    requested, param = (
        (body.max_completion_tokens, "max_completion_tokens")
        if body.max_completion_tokens is not None
        else (body.max_tokens, "max_tokens")
    )
    logit_bias = body.logit_bias_pairs()
    vocab_size = model.engine.vocab_size
    beyond = [token for token, _ in logit_bias if token >= vocab_size]
    if beyond:
        raise APIError(
            400,
            f"logit_bias: token id {beyond[0]} is not in the vocabulary (ids 0-{vocab_size - 1})",
            param="logit_bias",
            code="invalid_value",
        )
    return SamplingParams(
        max_new_tokens=model.token_budget(
            prompt_ids, requested, settings.default_max_tokens, param
        ),
        temperature=body.temperature if body.temperature is not None else 1.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        seed=body.seed,
        stop=tuple(body.stop or ()),
        ignore_eos=body.ignore_eos,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        logit_bias=logit_bias,
    )


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

    # Content chunks, one per token or so, are the hot path: the chunk's JSON around its text
    # is built once, and each chunk only encodes its text.
    before, after = sse([ChunkChoice(delta=Delta(content=_MARK))]).split(json.dumps(_MARK))

    yield sse([ChunkChoice(delta=Delta(role="assistant", content=""))])
    try:
        # aclosing: a client that hangs up mid-stream cancels its generation at once.
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    # ASCII escapes: clients split the stream with str.splitlines (httpx's
                    # aiter_lines, openai-python's SSEDecoder), which also breaks at U+0085,
                    # U+2028 and U+2029, characters json.dumps leaves raw otherwise.
                    yield before + json.dumps(event.text) + after
                else:
                    yield sse([ChunkChoice(delta=Delta(), finish_reason=event.reason)])
                    if include_usage:
                        yield sse([], _usage(event))
    except APIError as error:
        # Headers are gone already: report in-band, as OpenAI does mid-stream.
        yield f"data: {json.dumps(error.body())}\n\n"
        return
    yield "data: [DONE]\n\n"
