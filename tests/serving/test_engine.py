"""The batching engine in-process: sharing forward passes must not change any answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from phi3_server.engine import (
    BatchingEngine,
    Failed,
    Finished,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)

PROMPTS = ["hello there", "The quick brown fox jumps over", "a", "What is the capital of France?"]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_phi3: Path) -> tuple[Any, Any]:
    return (
        AutoModelForCausalLM.from_pretrained(tiny_phi3).eval(),
        AutoTokenizer.from_pretrained(tiny_phi3),
    )


def _generate(
    engine: BatchingEngine, prompt: list[int], params: SamplingParams, timeout: float = 60
) -> tuple[str, GenerationEvent]:
    """Submit one request and wait for its text and its last event."""
    done, parts, last = threading.Event(), [], []

    def on_event(event: GenerationEvent) -> None:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            last.append(event)
            done.set()

    engine.submit(GenerationRequest(prompt, params, time.monotonic() + timeout, on_event))
    assert done.wait(60)
    return "".join(parts), last[0]


def test_batched_greedy_equals_one_at_a_time_generate(model_and_tokenizer: Any) -> None:
    model, tokenizer = model_and_tokenizer
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    expected = []
    for ids in prompts:
        output = model.generate(
            torch.tensor([ids]),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tokenizer.pad_token_id,
        )
        expected.append(tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True))

    # Batches of at most 3 and staggered arrivals: requests queue, join running batches of
    # other lengths and leave them, all of which must be invisible in the answers.
    engine = BatchingEngine(model, tokenizer, frozenset(), max_batch_size=3)
    engine.start()
    answers: dict[int, tuple[str, GenerationEvent]] = {}

    def ask(index: int) -> None:
        time.sleep(0.01 * index)
        params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.0)
        answers[index] = _generate(engine, prompts[index % 4], params)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.stop()
    for index in range(10):
        assert answers[index] == (
            expected[index % 4],
            Finished("length", len(prompts[index % 4]), NEW_TOKENS),
        ), f"request {index}"


def test_request_past_its_deadline_fails_as_timed_out(model_and_tokenizer: Any) -> None:
    model, tokenizer = model_and_tokenizer
    engine = BatchingEngine(model, tokenizer, frozenset(), max_batch_size=2)
    engine.start()
    params = SamplingParams(max_new_tokens=4000, ignore_eos=True)
    started = time.monotonic()
    _, last = _generate(engine, [1, 2, 3], params, timeout=0.3)
    engine.stop()
    assert last == Failed("the request exceeded its deadline", timed_out=True)
    assert time.monotonic() - started < 5


def test_stop_fails_waiting_and_running_requests(model_and_tokenizer: Any) -> None:
    model, tokenizer = model_and_tokenizer
    engine = BatchingEngine(model, tokenizer, frozenset(), max_batch_size=1)
    engine.start()
    params = SamplingParams(max_new_tokens=4000, ignore_eos=True)
    results: list[tuple[str, GenerationEvent]] = []
    threads = [
        threading.Thread(target=lambda: results.append(_generate(engine, [1, 2], params)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    engine.stop()
    for thread in threads:
        thread.join()
    assert [last for _, last in results] == [Failed("the server is shutting down")] * 2
