"""The dynamic steps run in the engine's provider process, which rebuilds each provider from the
string Pulumi serialized into the state: they must round-trip and load where only the program's
own environment exists (PYTHONPATH=infra, as the runbook sets)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from phi3_infra.data import _BlobUploadProvider
from phi3_infra.images import _RegistryBuildProvider
from phi3_infra.serving import _EndpointTrafficProvider
from phi3_infra.teardown import _PurgeProvider
from phi3_infra.training import _JobCompletionProvider

PROVIDERS = [
    _BlobUploadProvider,
    _RegistryBuildProvider,
    _JobCompletionProvider,
    _EndpointTrafficProvider,
    _PurgeProvider,
]
# What the provider host does with the state's provider string (pulumi/dynamic/__main__.py).
LOAD = (
    "import base64, sys, dill; provider = dill.loads(base64.b64decode(sys.stdin.read())); "
    "print(type(provider).__module__, type(provider).__name__, "
    "' '.join(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'trl')))"
)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.__name__)
def test_provider_loads_in_a_fresh_process_without_the_ml_stack(
    provider: type, repo_root: Path, tmp_path: Path
) -> None:
    serialized = serialize_provider(provider())
    assert base64.b64decode(serialized)
    result = subprocess.run(
        [sys.executable, "-c", LOAD],
        input=serialized,
        cwd=tmp_path,  # not the repo: only PYTHONPATH makes phi3_infra importable
        env={"PYTHONPATH": str(repo_root / "infra"), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    module, name, *heavy = result.stdout.split()
    assert (module, name) == (provider.__module__, provider.__name__)
    assert heavy == []
