"""ModelRuntime against an engine that never answers: nothing may wait on it without a bound."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from phi3_server import app
from phi3_server.engine import BatchingEngine, GenerationRequest, SamplingParams
from phi3_server.errors import APIError
from phi3_server.middleware import Metrics


class _SilentEngine:
    """Takes requests and never sends an event, as if the last one were lost."""

    def __init__(self) -> None:
        self.submitted: list[GenerationRequest] = []

    def submit(self, request: GenerationRequest) -> None:
        self.submitted.append(request)


class _Tokenizer:
    def apply_chat_template(self, messages: Any, **options: Any) -> list[int]:
        return [1, 2, 3]


def _runtime(engine: _SilentEngine) -> app.ModelRuntime:
    return app.ModelRuntime(cast(BatchingEngine, engine), _Tokenizer(), context_length=4096)


def test_warm_up_that_never_finishes_reports_the_timeout() -> None:
    with pytest.raises(RuntimeError, match=r"did not finish within 0.1 s"):
        _runtime(_SilentEngine()).warm_up(timeout=0.1)


def test_request_whose_last_event_is_lost_fails_after_deadline_and_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "ENGINE_GRACE_S", 0.2)
    engine = _SilentEngine()
    params = SamplingParams(max_new_tokens=4)
    started = time.monotonic()

    async def complete() -> app.Completion:
        return await _runtime(engine).complete([1], params, started + 0.3, Metrics())

    with pytest.raises(APIError) as raised:
        asyncio.run(asyncio.wait_for(complete(), timeout=10))
    assert raised.value.status_code == 504
    assert 0.5 <= time.monotonic() - started < 5
    assert engine.submitted[0].cancelled.is_set()
