"""The Prompt flow chat flow, run by Prompt flow's own runtime (its separate venv), against the
real local server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serving.server_process import RunningServer, serve

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_DIR = REPO_ROOT / "scripts" / "promptflow_chat"
PF_PYTHON = REPO_ROOT / ".venv-promptflow" / "bin" / "python"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PF_PYTHON.exists(), reason="run `make setup` for the Prompt flow venv"),
]

RUN_FLOW = """
import json, sys
from promptflow.core import Flow
flow = Flow.load(sys.argv[1])
print(json.dumps(flow(question=sys.argv[2])))
"""
# The flow's tool module loaded from its file, as Prompt flow loads a flow's tools.
RUN_TOOL_WITH_CONNECTION = """
import importlib.util, json, sys
from promptflow.connections import CustomConnection
spec = importlib.util.spec_from_file_location("chat_tool", sys.argv[1] + "/chat_tool.py")
chat_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chat_tool)
chat = chat_tool.chat
connection = CustomConnection(configs={"api_base": sys.argv[2]}, secrets={"api_key": "k"})
print(json.dumps(chat(question=sys.argv[3], connection=connection, max_tokens=8)))
"""


@pytest.fixture(scope="module")
def server(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(tmp_path_factory.mktemp("pf-server"), "--model-dir", str(tiny_phi3)) as running:
        yield running


@pytest.fixture
def run_pf(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run code in the Prompt flow venv with a clean environment (and a throwaway home for
    Prompt flow's local files), plus the variables a test gives."""

    def run(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PF_DISABLE_TRACING": "true"}
        return subprocess.run(
            [str(PF_PYTHON), "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=base | env,
        )

    return run


def test_flow_answers_from_the_endpoint_named_in_the_environment(
    server: RunningServer, run_pf: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    proc = run_pf(
        RUN_FLOW,
        str(FLOW_DIR / "flow.dag.yaml"),
        "Capital of Japan?",
        env={"PHI3_OPENAI_BASE_URL": f"{server.url}/v1"},
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.strip().splitlines()[-1])["answer"]
    assert isinstance(answer, str) and answer
    assert "POST /v1/chat/completions" in server.log()


def test_tool_uses_a_bound_connection_over_the_environment(
    server: RunningServer, run_pf: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    proc = run_pf(
        RUN_TOOL_WITH_CONNECTION,
        str(FLOW_DIR),
        f"{server.url}/v1",
        "hello",
        env={"PHI3_OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},  # would fail if used
    )
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout.strip().splitlines()[-1]), str)


def test_flow_without_an_endpoint_says_how_to_give_one(
    run_pf: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    proc = run_pf(RUN_FLOW, str(FLOW_DIR / "flow.dag.yaml"), "hi", env={})
    assert proc.returncode != 0
    assert "PHI3_OPENAI_BASE_URL" in proc.stderr and "custom connection" in proc.stderr


def test_flow_keeps_endpoint_and_key_out_of_the_repository() -> None:
    text = "\n".join(p.read_text() for p in FLOW_DIR.iterdir() if p.suffix in {".py", ".yaml"})
    assert "inference.ml.azure.com" not in text and "api_key:" not in text
