"""Fixtures for the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.server_process import RunningServer, serve


@pytest.fixture(scope="module")
def server(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The tiny model with default limits (32 concurrent requests, batches of 16)."""
    with serve(tmp_path_factory.mktemp("server"), "--model-dir", str(tiny_phi3)) as running:
        yield running
