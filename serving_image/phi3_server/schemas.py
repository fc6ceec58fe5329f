"""Request and response bodies: OpenAI chat completions and Azure ML's ``/score`` bodies.

Requests forbid unknown fields, so a misspelt parameter is an error instead of silently ignored.
``null`` is accepted wherever OpenAI accepts it (some SDKs send explicit nulls). OpenAI fields this
server does not implement (logprobs, tools, ...) are accepted at their default or neutral values,
which clients send routinely, and are a 400 naming the field at any other value.

Sampling parameters are range-checked here, with OpenAI's documented limits as vLLM encodes them
(vllm-project/vllm vllm/entrypoints/openai/protocol.py: ``seed`` bounded by torch's integer range;
vllm/sampling_params.py: a temperature floor), so a value that would break the sampler is a 400
naming the field before it reaches the shared batch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from phi3_server.sampling import (
    LOGIT_BIAS_LIMIT,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    PENALTY_LIMIT,
    SEED_MAX,
    SEED_MIN,
)

MAX_STOP_STRINGS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


_T = TypeVar("_T")


def _unsupported(value: _T, neutral: bool) -> _T:
    if not neutral:
        raise ValueError(f"{value!r} is not supported by this server")
    return value


def _usable_temperature(temperature: float | None) -> float | None:
    """0 (greedy) or at least vLLM's floor: below it logits / temperature overflow."""
    if temperature is not None and temperature != 0 and temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"must be 0 (greedy) or at least {MIN_TEMPERATURE}; smaller values overflow sampling"
        )
    return temperature


Temperature = Annotated[float | None, Field(ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False)]
TopP = Annotated[float | None, Field(gt=0, le=1, allow_inf_nan=False)]
Penalty = Annotated[float | None, Field(ge=-PENALTY_LIMIT, le=PENALTY_LIMIT, allow_inf_nan=False)]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None
    # Echoed back by clients replaying an assistant turn.
    refusal: None = None
    tool_calls: list[Any] | None = None

    @field_validator("tool_calls")
    @classmethod
    def _no_tool_calls(cls, calls: list[Any] | None) -> list[Any] | None:
        return _unsupported(calls, not calls)

    def as_template_input(self) -> dict[str, str]:
        content = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return {"role": self.role, "content": content}


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: Temperature = None
    top_p: TopP = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    n: Literal[1] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: Penalty = None
    frequency_penalty: Penalty = None
    # OpenAI: token ids (as strings) to a bias in [-100, 100]; ids past the vocabulary are
    # refused at the route, which knows the model.
    logit_bias: (
        dict[str, Annotated[float, Field(ge=-LOGIT_BIAS_LIMIT, le=LOGIT_BIAS_LIMIT)]] | None
    ) = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    # Without tools "auto" and "none" both mean a plain answer.
    tool_choice: Literal["none", "auto"] | None = None
    parallel_tool_calls: bool | None = None  # no tools, so no effect either way
    # Extension, as in vLLM: keep generating past end tokens (fixed-length benchmarks).
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    _temperature = field_validator("temperature")(_usable_temperature)

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        bad = [key for key in bias or {} if not (key.isascii() and key.isdigit())]
        if bad:
            raise ValueError(f"keys must be token ids (non-negative integers), not {bad[0]!r}")
        return bias

    def logit_bias_pairs(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items())

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> Any:
        return _unsupported(tools, not tools)

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> Any:
        return _unsupported(value, not value)

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
        return _unsupported(
            response_format, response_format is None or response_format == {"type": "text"}
        )


class ScoreParameters(_Strict):
    """The Hugging Face generation parameters the reference clients send."""

    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: Temperature = None
    top_p: TopP = None
    do_sample: bool = False
    return_full_text: bool = False

    _temperature = field_validator("temperature")(_usable_temperature)


class TextsScoreRequest(_Strict):
    """Prompt flow's body: ``{"input_data": ["text", ...], "params": {...}}``."""

    input_data: list[str] = Field(min_length=1)
    params: ScoreParameters = ScoreParameters()


class ChatInput(_Strict):
    input_string: list[ChatMessage] = Field(min_length=1)
    parameters: ScoreParameters = ScoreParameters()


class ChatScoreRequest(_Strict):
    """The portal's body: ``{"input_data": {"input_string": [messages], "parameters": {...}}}``."""

    input_data: ChatInput


def _score_body_kind(body: Any) -> str | None:
    input_data = body.get("input_data") if isinstance(body, dict) else None
    if isinstance(input_data, list):
        return "texts"
    if isinstance(input_data, dict):
        return "chat"
    return None


ScoreRequest = Annotated[
    Annotated[TextsScoreRequest, Tag("texts")] | Annotated[ChatScoreRequest, Tag("chat")],
    Discriminator(
        _score_body_kind,
        custom_error_type="invalid_score_body",
        custom_error_message="input_data must be a list of strings or an object with "
        "input_string (a list of chat messages)",
    ),
]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class _CompletionHeader(BaseModel):
    id: str
    created: int
    model: str


class ChatCompletion(_CompletionHeader):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(_CompletionHeader):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "phi3-server"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
