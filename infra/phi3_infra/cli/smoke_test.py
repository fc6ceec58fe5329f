"""Send one chat to a deployed stack's endpoint through the `openai` client; fail loudly if it
does not answer.

    python scripts/smoke_test.py --stack eastus2            # reads `pulumi stack output`
    python scripts/smoke_test.py --outputs outputs.json     # `pulumi stack output --json ...`
    python scripts/smoke_test.py --base-url URL/v1 [--api-key KEY]

With `--stack`, the stack's outputs come from `pulumi stack output --json --show-secrets`
(openAiBaseUrl, endpointAuthMode, primaryKey). An endpoint in aadToken mode gets an Entra ID token
for https://ml.azure.com instead of a key, signed in like `pulumi up`
(phi3_infra/azure/credentials.py). The key is read from the outputs or $PHI3_API_KEY, never
printed.

Exit codes: 0 answered; 1 no answer or an empty one; 2 bad arguments or missing outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from openai import OpenAI, OpenAIError

from phi3_infra.paths import PROJECT_ROOT

EXIT_ANSWERED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ML_TOKEN_SCOPE = "https://ml.azure.com/.default"
# A managed endpoint answers 424 when the container answered non-2xx (here: an unknown path).
ROUTE_HINT = (
    "hint: the endpoint may not pass /v1 through to the container: see 'Serving: what the "
    "endpoint forwards' in infra/README.md (use the scoringUri with the reference body)"
)
DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."


class UsageError(Exception):
    """Arguments or stack outputs do not say where or how to connect."""


def stack_outputs(stack: str, cwd: Path) -> dict[str, Any]:
    """`pulumi stack output --json --show-secrets` for `stack`."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise UsageError(
            "the Pulumi CLI is not on PATH: pass --outputs FILE (from `pulumi stack output "
            "--json --show-secrets`) or --base-url/--api-key"
        )
    command = [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UsageError(f"`{' '.join(command[1:])}` failed: {result.stderr.strip()}")
    outputs: dict[str, Any] = json.loads(result.stdout)
    return outputs


def connection(args: argparse.Namespace) -> tuple[str, str]:
    """(OpenAI base URL, API key or token) from the arguments or the stack's outputs."""
    if args.base_url:
        return args.base_url, args.api_key or os.environ.get("PHI3_API_KEY") or "unused"
    if args.outputs:
        outputs = json.loads(Path(args.outputs).read_text())
    else:
        outputs = stack_outputs(args.stack, args.cwd)
    base_url = outputs.get("openAiBaseUrl")
    if not base_url:
        raise UsageError(
            "the stack has no openAiBaseUrl output: is 'serve' in phi3-foundry:stages, "
            "and has `pulumi up` finished?"
        )
    if outputs.get("endpointAuthMode") == "aadToken":
        from phi3_infra.azure.credentials import credential_from_environment

        return base_url, credential_from_environment().get_token(ML_TOKEN_SCOPE).token
    key = args.api_key or outputs.get("primaryKey")
    if not key:
        raise UsageError("no primaryKey in the outputs (were they read with --show-secrets?)")
    return base_url, key


def chat(base_url: str, api_key: str, prompt: str, max_tokens: int, timeout_s: float) -> str:
    client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=2)
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="Pulumi stack whose endpoint to call")
    where.add_argument("--outputs", help="JSON file of the stack's outputs (with secrets)")
    where.add_argument("--base-url", help="OpenAI base URL, e.g. https://ep.region.../v1")
    parser.add_argument("--api-key", help="endpoint key (default: from the outputs)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per request")
    parser.add_argument("--cwd", type=Path, default=PROJECT_ROOT, help="Pulumi project")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        base_url, api_key = connection(args)
    except (UsageError, OSError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    try:
        answer = chat(base_url, api_key, args.prompt, args.max_tokens, args.timeout)
    except OpenAIError as error:
        print(f"FAILED: {base_url}: {type(error).__name__}: {error}", file=sys.stderr)
        if getattr(error, "status_code", None) in (404, 424):
            print(ROUTE_HINT, file=sys.stderr)
        return EXIT_FAILED
    seconds = time.perf_counter() - started
    if not answer.strip():
        print(f"FAILED: {base_url} answered with an empty message", file=sys.stderr)
        return EXIT_FAILED
    print(f"OK {base_url} answered in {seconds:.1f} s:\n{answer}")
    return EXIT_ANSWERED


if __name__ == "__main__":
    sys.exit(main())
