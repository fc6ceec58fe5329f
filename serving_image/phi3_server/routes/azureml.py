"""Azure ML's scoring route, in the two body shapes the reference clients send and read."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request

from phi3_server.dependencies import Authorized, ReadyModel, State
from phi3_server.errors import APIError
from phi3_server.runtime import unless_client_leaves
from phi3_server.sampling import SamplingParams
from phi3_server.schemas import ScoreParameters, ScoreRequest, TextsScoreRequest

router = APIRouter(dependencies=Authorized)


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


@router.post("/score", response_model=None)
async def score(
    body: ScoreRequest, model: ReadyModel, state: State, http_request: Request
) -> list[str] | dict[str, str]:
    if isinstance(body, TextsScoreRequest):
        conversations = [[{"role": "user", "content": text}] for text in body.input_data]
        parameters = body.params
    else:
        conversations = [[m.as_template_input() for m in body.input_data.input_string]]
        parameters = body.input_data.parameters
    admission = state.admission
    if len(conversations) > admission.limit:
        raise APIError(
            400,
            f"input_data: {len(conversations)} texts; at most {admission.limit} per request",
            param="input_data",
        )
    prompts = [model.prompt_ids(c, "input_data") for c in conversations]
    default_tokens = state.settings.default_max_tokens
    samplings = [
        _score_sampling(
            parameters,
            model.token_budget(ids, parameters.max_new_tokens, default_tokens, "max_new_tokens"),
        )
        for ids in prompts
    ]
    release = admission.acquire(len(prompts))
    deadline = time.monotonic() + state.settings.request_timeout
    try:
        completions = await unless_client_leaves(
            http_request,
            asyncio.gather(
                *(
                    model.complete(ids, sampling, deadline, state.metrics)
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
