"""No request can hurt another: hostile parameters and faulty rows fail only their own request,
and a worker that dies anyway is reported by the probes at once."""

from __future__ import annotations

import contextlib
import gc
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from phi3_server.app import create_app
from phi3_server.engine import BatchingEngine
from phi3_server.loading import ModelSource
from phi3_server.runtime import ModelRuntime, ServerState
from phi3_server.sampling import SamplingParams
from phi3_server.sequence import Failed, Finished, GenerationEvent, GenerationRequest, TextDelta
from phi3_server.settings import Settings

INNOCENT_TOKENS = 6


class _Recorder:
    """Collects one request's events; ``wait`` returns its text and its one terminal event."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.ends: list[GenerationEvent] = []
        self.done = threading.Event()

    def __call__(self, event: GenerationEvent) -> None:
        if isinstance(event, TextDelta):
            self.parts.append(event.text)
        else:
            self.ends.append(event)
            self.done.set()

    def wait(self, timeout: float = 60) -> tuple[str, GenerationEvent]:
        assert self.done.wait(timeout), "the request never ended"
        time.sleep(0.01)  # a second terminal event, if the engine sent one, arrives by now
        assert len(self.ends) == 1, self.ends
        return "".join(self.parts), self.ends[0]


def _submit(engine: BatchingEngine, prompt: list[int], params: SamplingParams) -> _Recorder:
    recorder = _Recorder()
    engine.submit(GenerationRequest(prompt, params, time.monotonic() + 60, recorder))
    return recorder


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_phi3: Path) -> tuple[Any, Any]:
    return (
        AutoModelForCausalLM.from_pretrained(tiny_phi3).eval(),
        AutoTokenizer.from_pretrained(tiny_phi3),
    )


@pytest.fixture(scope="module")
def engine(model_and_tokenizer: tuple[Any, Any]) -> Iterator[BatchingEngine]:
    """One engine for every example: it must survive all of them."""
    model, tokenizer = model_and_tokenizer
    running = BatchingEngine(model, tokenizer, frozenset(), max_batch_size=8)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def innocent(model_and_tokenizer: tuple[Any, Any]) -> tuple[list[int], str]:
    """A prompt and its greedy answer from transformers' own generate, computed alone."""
    model, tokenizer = model_and_tokenizer
    prompt = tokenizer("an innocent question")["input_ids"]
    output = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=INNOCENT_TOKENS,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    return prompt, tokenizer.decode(output[0, len(prompt) :], skip_special_tokens=True)


def _innocent_params() -> SamplingParams:
    return SamplingParams(max_new_tokens=INNOCENT_TOKENS, temperature=0.0)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(max_new_tokens=4, seed=2**64), "seed"),
        (SamplingParams(max_new_tokens=4, temperature=1e-300), "temperature"),
        (SamplingParams(max_new_tokens=4, top_p=0.0), "top_p"),
        (SamplingParams(max_new_tokens=4, presence_penalty=math.nan), "presence_penalty"),
        (SamplingParams(max_new_tokens=4, logit_bias=((10**6, 1.0),)), "logit_bias"),
    ],
)
def test_a_parameter_the_engine_cannot_use_fails_only_its_request(
    engine: BatchingEngine, innocent: tuple[list[int], str], params: SamplingParams, param: str
) -> None:
    prompt, expected = innocent
    bystander = _submit(engine, prompt, _innocent_params())
    _, hostile = _submit(engine, [1, 2, 3], params).wait()
    assert isinstance(hostile, Failed) and hostile.param == param, hostile
    assert bystander.wait() == (expected, Finished("length", len(prompt), INNOCENT_TOKENS))
    assert engine.alive


class _PoisonsRowsWithMarker:
    """The tiny model, except that a row whose input holds ``marker`` gets NaN logits, as a
    numerically broken sequence would."""

    def __init__(self, model: Any, marker: int) -> None:
        self._model = model
        self._marker = marker
        self.device = model.device
        self.config = model.config

    def __call__(self, **inputs: Any) -> Any:
        output = self._model(**inputs)
        poisoned = (inputs["input_ids"] == self._marker).any(dim=-1)
        output.logits[poisoned] = math.nan
        return output


def test_non_finite_scores_fail_only_their_row_of_the_batch(
    model_and_tokenizer: tuple[Any, Any], innocent: tuple[list[int], str]
) -> None:
    model, tokenizer = model_and_tokenizer
    prompt, expected = innocent
    marker = 7
    assert marker not in prompt
    poisoned = BatchingEngine(
        _PoisonsRowsWithMarker(model, marker), tokenizer, frozenset(), max_batch_size=4
    )
    # Both queued before the worker starts, so that they share the prefill and the batch.
    bystander = _submit(poisoned, prompt, _innocent_params())
    hostile = _submit(poisoned, [marker, 1, 2], SamplingParams(max_new_tokens=4))
    poisoned.start()
    try:
        _, failure = hostile.wait()
        assert isinstance(failure, Failed) and "not finite" in failure.message
        assert bystander.wait() == (expected, Finished("length", len(prompt), INNOCENT_TOKENS))
        assert poisoned.alive
    finally:
        poisoned.stop()


_any_float = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-3, 3)
_hostile_params = st.builds(
    SamplingParams,
    max_new_tokens=st.integers(-2, 8),
    temperature=_any_float | st.sampled_from([0.0, 1e-300, 1e-5, 0.01, 2.0]),
    top_p=_any_float | st.sampled_from([0.0, 1e-9, 1.0]),
    seed=st.none() | st.integers(-(2**70), 2**70),
    stop=st.lists(st.text(max_size=4), max_size=3).map(tuple),
    ignore_eos=st.booleans(),
    presence_penalty=_any_float,
    frequency_penalty=_any_float,
    logit_bias=st.lists(
        st.tuples(st.integers(-5, 2000), _any_float | st.floats(-100, 100)), max_size=4
    ).map(tuple),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=st.lists(_hostile_params, min_size=1, max_size=3))
def test_random_parameters_never_hurt_innocent_requests_nor_the_worker(
    engine: BatchingEngine, innocent: tuple[list[int], str], hostile: list[SamplingParams]
) -> None:
    prompt, expected = innocent
    bystanders = [_submit(engine, prompt, _innocent_params()) for _ in range(2)]
    others = [_submit(engine, [5, 6, 7], params) for params in hostile]
    for bystander in bystanders:
        assert bystander.wait() == (expected, Finished("length", len(prompt), INNOCENT_TOKENS))
    for other in others:
        other.wait()  # each ends exactly once, finished or failed
    assert engine.alive


@contextlib.contextmanager
def _in_process_server(model_dir: Path) -> Iterator[tuple[TestClient, ModelRuntime]]:
    """The app on ``model_dir`` in this process, once ready, and its loaded runtime. The heap it
    froze once ready (app.py) is unfrozen after, so the rest of the session can collect it."""
    app = create_app(Settings(), ModelSource(model_dir), on_fatal=lambda: None)
    try:
        with TestClient(app) as client:
            deadline = time.monotonic() + 60
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.05)
            state: ServerState = app.state.phi3
            assert state.runtime is not None
            yield client, state.runtime
    finally:
        gc.unfreeze()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_probes_report_a_dead_generation_worker_at_once(tiny_phi3: Path) -> None:
    with _in_process_server(tiny_phi3) as (client, runtime):
        engine = runtime.engine

        def fault() -> None:  # a fault no step foresees, escaping the worker loop
            raise RuntimeError("injected fault")

        engine._step = fault  # type: ignore[method-assign]
        deadline = time.monotonic() + 5
        while engine.alive:
            assert time.monotonic() < deadline, "the worker did not die"
            time.sleep(0.01)
        assert client.get("/health").status_code == 503
        assert client.get("/ready").status_code == 503
        body = {"model": "phi3", "messages": [{"role": "user", "content": "hi"}]}
        started = time.monotonic()
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 503 and time.monotonic() - started < 5
        assert response.json()["error"]["code"] == "worker_stopped"


def test_once_ready_the_loaded_heap_is_out_of_the_collectors_reach(tiny_phi3: Path) -> None:
    """A full collection over the loaded model and tokenizer stalls the event loop and the
    engine alike (240 ms measured); frozen after warm-up, serving's collections skip it."""
    with _in_process_server(tiny_phi3) as (_, runtime):
        tokenizer = runtime.tokenizer
        assert gc.get_freeze_count() > 0
        assert gc.is_tracked(tokenizer)
        assert not any(tracked is tokenizer for tracked in gc.get_objects())
