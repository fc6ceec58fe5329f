"""The OpenAI-compatible API and Azure ML's /score, through a real server and real clients."""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from transformers import AutoTokenizer

from tests.serving.server_process import RunningServer

pytestmark = pytest.mark.slow

MODEL = "phi3"
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


def _greedy(server: RunningServer, **extra: Any) -> Any:
    return server.openai().chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, **extra
    )


def test_ready_is_503_while_loading_then_200(server: RunningServer) -> None:
    codes = server.ready_codes
    assert codes[0] == 503, f"first /ready answers: {codes}"
    assert codes[-1] == 200
    assert set(codes[:-1]) == {503}
    body = httpx.get(f"{server.url}/ready").json()
    assert body == {"status": "ready"}
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_chat_completion_counts_tokens(server: RunningServer, tiny_phi3: Path) -> None:
    completion = _greedy(server, max_tokens=8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_phi3)
    prompt = tokenizer.apply_chat_template(
        cast(list[dict[str, str]], QUESTION),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    choice = completion.choices[0]
    assert completion.model == MODEL
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(prompt)
    assert 1 <= completion.usage.completion_tokens <= 8
    if choice.finish_reason == "length":
        assert completion.usage.completion_tokens == 8
    total = completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.usage.total_tokens == total
    # Greedy decoding is deterministic.
    assert _greedy(server, max_tokens=8).choices[0].message.content == choice.message.content


def test_streamed_completion_matches_and_reports_usage(server: RunningServer) -> None:
    expected = _greedy(server, max_tokens=12, extra_body={"ignore_eos": True})
    stream = server.openai().chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == expected.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens == expected.usage.prompt_tokens


def test_stream_ends_with_done(server: RunningServer) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"


def test_stop_string_cuts_the_answer(server: RunningServer) -> None:
    full = _greedy(server, max_tokens=24, extra_body={"ignore_eos": True})
    text = full.choices[0].message.content
    # An ASCII piece from the middle of the greedy answer, so its first match is unambiguous.
    piece = re.search(r"[A-Za-z0-9 ]{2}", text[3:])
    assert piece, f"no ASCII pair in {text!r}"
    stop = piece.group(0)
    cut = _greedy(server, max_tokens=24, stop=[stop], extra_body={"ignore_eos": True})
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_reproducible(server: RunningServer) -> None:
    def sample(seed: int) -> str | None:
        completion = server.openai().chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            temperature=1.0,
            top_p=0.9,
            seed=seed,
            max_tokens=16,
            extra_body={"ignore_eos": True},
        )
        return completion.choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(3)}) > 1


def test_models_lists_the_served_model(server: RunningServer) -> None:
    models = server.openai().models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_unknown_model_is_404(server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        server.openai().chat.completions.create(model="gpt-4", messages=QUESTION)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "model_not_found"


def test_score_prompt_flow_body_answers_a_list(server: RunningServer) -> None:
    body = {
        "input_data": ["Hello there", "Add 2 and 3"],
        "params": {
            "temperature": 0.7,
            "max_new_tokens": 8,
            "do_sample": True,
            "return_full_text": True,
        },
    }
    response = httpx.post(f"{server.url}/score", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == 2
    assert answers[0].startswith("Hello there") and answers[1].startswith("Add 2 and 3")


def test_score_portal_body_answers_output(server: RunningServer) -> None:
    body = {
        "input_data": {
            "input_string": QUESTION,
            "parameters": {"temperature": 0.7, "max_new_tokens": 6},
        }
    }
    response = httpx.post(f"{server.url}/score", json=body, timeout=60)
    assert response.status_code == 200, response.text
    # No do_sample: greedy, as Hugging Face pipelines do, so it equals the chat answer.
    expected = _greedy(server, max_tokens=6).choices[0].message.content
    assert response.json() == {"output": expected}


LONG_TEXT = " ".join(f"word{i}" for i in range(6000))


@pytest.mark.parametrize(
    ("path", "content", "status", "message_part"),
    [
        ("/v1/chat/completions", b'{"model": "phi3", "messages": [', 400, "malformed JSON"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": QUESTION, "max_tokens": "x"},
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": QUESTION, "best_of": 2},
            400,
            "best_of",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "tool", "content": "x"}]},
            400,
            "messages.0.role",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": LONG_TEXT}]},
            400,
            "context is 4096 tokens",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": QUESTION, "max_tokens": 5000},
            400,
            "max_tokens",
        ),
        ("/v1/chat/completions", b"x" * (1_048_576 + 1), 413, "larger than"),
        ("/score", {"input_data": 3}, 400, "input_data must be"),
        ("/score", {"input_data": ["hi"], "params": {"max_new_tokens": 0}}, 400, "max_new_tokens"),
        ("/v1/nothing-here", {}, 404, "/v1/nothing-here"),
    ],
)
def test_client_mistakes_get_4xx_in_openai_error_format(
    server: RunningServer, path: str, content: Any, status: int, message_part: str
) -> None:
    if isinstance(content, bytes):
        response = httpx.post(
            f"{server.url}{path}", content=content, headers={"content-type": "application/json"}
        )
    else:
        response = httpx.post(f"{server.url}{path}", json=content)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message_part in error["message"]


def test_a_request_head_that_never_ends_is_cut_off_at_16_kib(server: RunningServer) -> None:
    """h11 refuses a request head still incomplete past 16 KiB (uvicorn's httptools protocol
    would keep buffering it): a client cannot grow the server's memory with endless headers."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 65_536)
        assert client.recv(4096).startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{server.url}/health").status_code == 200


def _metric(server: RunningServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} missing from /metrics"
    return values[0]


def test_32_concurrent_clients_all_succeed_in_shared_batches(server: RunningServer) -> None:
    steps_before = _metric(server, "phi3_decode_batch_size_count")
    rows_before = _metric(server, "phi3_decode_batch_size_sum")
    tokens_before = _metric(server, "phi3_completion_tokens_total")

    def ask(i: int) -> int:
        completion = server.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Question {i}"}],
            max_tokens=16,
            extra_body={"ignore_eos": True},
        )
        assert completion.usage is not None
        return completion.usage.completion_tokens

    with ThreadPoolExecutor(32) as pool:
        generated = list(pool.map(ask, range(32)))
    assert generated == [16] * 32
    steps = _metric(server, "phi3_decode_batch_size_count") - steps_before
    rows = _metric(server, "phi3_decode_batch_size_sum") - rows_before
    assert rows / steps > 2, f"mean decode batch {rows / steps:.1f}: requests were not batched"
    assert _metric(server, "phi3_completion_tokens_total") - tokens_before == 32 * 16
    assert _metric(server, "phi3_queue_depth") == 0


def test_openai_fields_at_their_neutral_values_are_accepted(server: RunningServer) -> None:
    history: list[ChatCompletionMessageParam] = [
        *QUESTION,
        # Clients send null for tool_calls; the SDK's TypedDict has no None for it.
        {
            "role": "assistant",
            "content": "Paris.",
            "refusal": None,
            "tool_calls": None,  # type: ignore[typeddict-item]
        },
        {"role": "user", "content": "And of Italy?", "name": "alice"},
    ]
    completion = server.openai().chat.completions.create(
        model=MODEL,
        messages=history,
        max_tokens=2,
        n=1,
        presence_penalty=0,
        frequency_penalty=0.0,
        logit_bias={},
        logprobs=False,
        response_format={"type": "text"},
        tool_choice="none",
        parallel_tool_calls=True,
        user="user-1",
    )
    assert completion.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", True),
        ("top_logprobs", 2),
        ("response_format", {"type": "json_object"}),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tool_choice", "required"),
        ("n", 2),
    ],
)
def test_unsupported_openai_values_are_400_naming_the_field(
    server: RunningServer, field: str, value: Any
) -> None:
    body = {"model": MODEL, "messages": QUESTION, field: value}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}: ")


def test_replayed_tool_calls_are_400(server: RunningServer) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [*QUESTION, {"role": "assistant", "content": "", "tool_calls": [call]}]
    response = httpx.post(
        f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": messages}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages.1.tool_calls"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", 2**64),  # killed the generation thread: every later request got 503
        ("seed", -(2**63) - 1),
        ("temperature", 1e-300),  # failed every request of its batch with 503
        ("temperature", 2.5),
        ("top_p", 0),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("logit_bias", {"42": 101}),
        ("logit_bias", {"not-a-token": 1}),
        ("logit_bias", {"100000": 1}),  # past the vocabulary
    ],
)
def test_hostile_sampling_values_are_400_and_harm_no_other_request(
    server: RunningServer, field: str, value: Any
) -> None:
    with ThreadPoolExecutor(1) as pool:
        innocent = pool.submit(_greedy, server, max_tokens=24, extra_body={"ignore_eos": True})
        body = {"model": MODEL, "messages": QUESTION, field: value}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"].startswith(field)
        assert response.json()["error"]["message"].startswith(field)
        assert innocent.result().usage.completion_tokens == 24
    assert httpx.get(f"{server.url}/ready").status_code == 200
    assert _greedy(server, max_tokens=2).choices[0].finish_reason in ("stop", "length")


def test_logit_bias_and_penalties_steer_the_answer(server: RunningServer, tiny_phi3: Path) -> None:
    # The tiny model's logits of one step span about 1.2: a bias of 2 decides every greedy step.
    forced = AutoTokenizer.from_pretrained(tiny_phi3).convert_tokens_to_ids("a")
    bias = {str(forced): 2}
    biased = _greedy(server, max_tokens=6, logit_bias=bias, extra_body={"ignore_eos": True})
    assert biased.choices[0].message.content == "a" * 6
    # Once "a" is in the answer, the penalties (2 + 2) outweigh the bias: no second "a" token.
    penalized = (
        _greedy(
            server,
            max_tokens=6,
            logit_bias=bias,
            frequency_penalty=2,
            presence_penalty=2,
            extra_body={"ignore_eos": True},
        )
        .choices[0]
        .message.content
    )
    assert penalized is not None
    assert penalized.startswith("a") and not penalized.startswith("aa"), penalized
