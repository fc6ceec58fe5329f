"""The batching engine in-process: sharing forward passes must not change any answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from phi3_server.engine import BatchingEngine
from phi3_server.sampling import SamplingParams
from phi3_server.sequence import Failed, Finished, GenerationEvent, GenerationRequest, TextDelta

PROMPTS = ["hello there", "The quick brown fox jumps over", "a", "What is the capital of France?"]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_phi3: Path) -> tuple[Any, Any]:
    return (
        AutoModelForCausalLM.from_pretrained(tiny_phi3).eval(),
        AutoTokenizer.from_pretrained(tiny_phi3),
    )


def _generate(
    engine: BatchingEngine,
    prompt: list[int],
    params: SamplingParams,
    timeout: float = 60,
    wait: float = 60,
) -> tuple[str, GenerationEvent]:
    """Submit one request (failing after ``timeout``) and wait up to ``wait`` for its text and
    its last event."""
    done, parts, last = threading.Event(), [], []

    def on_event(event: GenerationEvent) -> None:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            last.append(event)
            done.set()

    engine.submit(GenerationRequest(prompt, params, time.monotonic() + timeout, on_event))
    assert done.wait(wait), "the request never ended"
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


def test_request_past_its_deadline_ends_with_its_text_so_far_as_length(
    model_and_tokenizer: Any,
) -> None:
    model, tokenizer = model_and_tokenizer
    engine = BatchingEngine(model, tokenizer, frozenset(), max_batch_size=2)
    engine.start()
    params = SamplingParams(max_new_tokens=4000, ignore_eos=True, temperature=0.0)
    started = time.monotonic()
    prompt = tokenizer("hello there")["input_ids"]
    text, last = _generate(engine, prompt, params, timeout=0.3)
    engine.stop()
    assert time.monotonic() - started < 5
    assert isinstance(last, Finished) and last.reason == "length"
    assert 0 < last.completion_tokens < 4000
    full = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=last.completion_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert text == tokenizer.decode(full[0, len(prompt) :], skip_special_tokens=True)


def _endless_request() -> GenerationRequest:
    """A request that decodes until cancelled: keeps the batch busy while another arrives."""
    return GenerationRequest(
        [1, 2],
        SamplingParams(max_new_tokens=100_000, ignore_eos=True),
        time.monotonic() + 60,
        lambda event: None,
    )


class _PrefillFailsOnLongPrompts:
    """The tiny model, except that prompts longer than ``limit`` raise as if out of memory."""

    def __init__(self, model: Any, limit: int) -> None:
        self._model = model
        self._limit = limit
        self.device = model.device
        self.config = model.config

    def __call__(self, **inputs: Any) -> Any:
        if inputs["input_ids"].shape[1] > self._limit:
            raise RuntimeError("CUDA out of memory (simulated)")
        return self._model(**inputs)


def test_failed_prefill_fails_only_the_new_requests(model_and_tokenizer: Any) -> None:
    model, tokenizer = model_and_tokenizer
    engine = BatchingEngine(
        _PrefillFailsOnLongPrompts(model, limit=8), tokenizer, frozenset(), max_batch_size=4
    )
    engine.start()
    healthy: list[tuple[str, GenerationEvent]] = []
    params = SamplingParams(max_new_tokens=300, ignore_eos=True)
    thread = threading.Thread(target=lambda: healthy.append(_generate(engine, [1, 2], params)))
    thread.start()
    while engine.running_count == 0:
        time.sleep(0.01)
    _, too_long = _generate(engine, list(range(1, 20)), params, wait=10)
    thread.join()
    engine.stop()
    assert too_long == Failed("generation failed on the server: the prompt could not be processed")
    assert healthy[0][1] == Finished("length", 2, 300)


def test_queued_request_times_out_at_its_deadline_while_the_batch_is_full(
    model_and_tokenizer: Any,
) -> None:
    model, tokenizer = model_and_tokenizer
    engine = BatchingEngine(model, tokenizer, frozenset(), max_batch_size=1)
    engine.start()
    running = _endless_request()
    engine.submit(running)
    started = time.monotonic()
    _, last = _generate(engine, [3, 4], SamplingParams(max_new_tokens=4), timeout=0.5)
    waited = time.monotonic() - started
    running.cancel()
    engine.stop()
    assert last == Failed("the request timed out while queued", timed_out=True)
    assert waited < 2


def test_end_token_emits_the_text_held_back_for_a_stop_string(model_and_tokenizer: Any) -> None:
    model, tokenizer = model_and_tokenizer
    prompt = tokenizer("a")["input_ids"]
    first, second = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=2,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )[0, len(prompt) :].tolist()
    first_text = tokenizer.decode([first], skip_special_tokens=True)
    assert first_text and first != second
    # The second greedy token ends the answer, while the first one's last character may begin
    # the stop string, so it is held back when the end token comes.
    engine = BatchingEngine(model, tokenizer, frozenset({second}), max_batch_size=1)
    engine.start()
    stop = first_text[-1] + "\u2603"
    params = SamplingParams(max_new_tokens=10, temperature=0.0, stop=(stop,))
    answer = _generate(engine, prompt, params)
    engine.stop()
    assert answer == (first_text, Finished("stop", len(prompt), 2))


class _StopFlagSeenLateBySubmitters(threading.Event):
    """The engine's stop flag, as a submitting thread preempted right after reading it sees it:
    "not stopping", while the worker meanwhile drains its queue and exits."""

    def is_set(self) -> bool:
        return super().is_set() and threading.current_thread().name == "phi3-generation"


def test_request_submitted_as_the_worker_exits_still_ends(model_and_tokenizer: Any) -> None:
    model, tokenizer = model_and_tokenizer
    engine = BatchingEngine(model, tokenizer, frozenset(), max_batch_size=1)
    # Replaces the flag to force the race deterministically: submit runs only after the worker
    # has drained its queue and exited, yet has not seen the server stopping.
    engine._stopping = _StopFlagSeenLateBySubmitters()
    engine.start()
    engine.stop()
    _, last = _generate(engine, [1], SamplingParams(max_new_tokens=1), wait=5)
    assert last == Failed("the server is shutting down")


def test_a_long_prompt_is_prefilled_in_chunks_while_the_batch_keeps_decoding(
    model_and_tokenizer: Any,
) -> None:
    model, tokenizer = model_and_tokenizer
    decode_steps: list[float] = []
    engine = BatchingEngine(
        model,
        tokenizer,
        frozenset(),
        max_batch_size=4,
        on_step=lambda batch_size: decode_steps.append(time.monotonic()),
        prefill_chunk_tokens=32,
    )
    engine.start()
    running = _endless_request()
    engine.submit(running)
    while not decode_steps:
        time.sleep(0.01)
    long_prompt = [(i * 7) % 500 + 3 for i in range(640)]  # 20 chunks of 32 tokens
    submitted = time.monotonic()
    first_event_at: list[float] = []
    parts: list[str] = []
    ended = threading.Event()
    last: list[GenerationEvent] = []

    def on_event(event: GenerationEvent) -> None:
        first_event_at.append(time.monotonic())
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            last.append(event)
            ended.set()

    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    engine.submit(GenerationRequest(long_prompt, params, submitted + 60, on_event))
    assert ended.wait(60)
    running.cancel()
    engine.stop()
    # The running answer advanced at every chunk of the long prefill, not after all of it.
    during_prefill = [t for t in decode_steps if submitted < t < first_event_at[0]]
    assert len(during_prefill) >= 19, len(during_prefill)
    expected = model.generate(
        torch.tensor([long_prompt]),
        max_new_tokens=4,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert ("".join(parts), last) == (
        tokenizer.decode(expected[0, len(long_prompt) :], skip_special_tokens=True),
        [Finished("length", len(long_prompt), 4)],
    )
