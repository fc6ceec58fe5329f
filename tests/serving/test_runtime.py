"""ModelRuntime against an engine that never answers: nothing may wait on it without a bound."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from phi3_server import runtime
from phi3_server.engine import BatchingEngine
from phi3_server.errors import APIError
from phi3_server.middleware import Metrics
from phi3_server.sampling import SamplingParams
from phi3_server.sequence import GenerationRequest


class _SilentEngine:
    """Takes requests and never sends an event, as if the last one were lost."""

    def __init__(self) -> None:
        self.submitted: list[GenerationRequest] = []

    def submit(self, request: GenerationRequest) -> None:
        self.submitted.append(request)


class _Tokenizer:
    def apply_chat_template(self, messages: Any, **options: Any) -> list[int]:
        return [1, 2, 3]


def _runtime(engine: _SilentEngine) -> runtime.ModelRuntime:
    return runtime.ModelRuntime(cast(BatchingEngine, engine), _Tokenizer(), context_length=4096)


def test_warm_up_that_never_finishes_reports_the_timeout() -> None:
    with pytest.raises(RuntimeError, match=r"did not finish within 0.1 s"):
        _runtime(_SilentEngine()).warm_up(timeout=0.1)


def test_request_whose_last_event_is_lost_fails_after_deadline_and_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "ENGINE_GRACE_S", 0.2)
    engine = _SilentEngine()
    params = SamplingParams(max_new_tokens=4)
    started = time.monotonic()

    async def complete() -> runtime.Completion:
        return await _runtime(engine).complete([1], params, started + 0.3, Metrics())

    with pytest.raises(APIError) as raised:
        # A loop of its own, not asyncio.run, which leaves the main thread without a current
        # loop for later tests in this process (Pulumi's mocks call get_event_loop).
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.wait_for(complete(), timeout=10))
        finally:
            loop.close()
    assert raised.value.status_code == 504
    assert 0.5 <= time.monotonic() - started < 5
    assert engine.submitted[0].cancelled.is_set()
