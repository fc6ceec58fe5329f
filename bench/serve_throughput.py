"""Serving throughput: 16 concurrent clients against continuous batching vs one at a time.

Starts ``python -m phi3_server`` twice on a small random Phi-3 (same model, same run): once with
``--max-batch-size 16`` and once with ``--max-batch-size 1``; each time CLIENTS clients send
REQUESTS requests each, back to back, for a fixed number of tokens (``ignore_eos``), and the
generated tokens per second and request latency percentiles are reported.

    python bench/serve_throughput.py [--clients 16] [--requests 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scripts.make_tiny_phi3 import build  # noqa: E402
from tests.serving.server_process import serve  # noqa: E402


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _load(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    latencies: list[float] = []
    generated = 0

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal generated
        for turn in range(requests):
            body = {
                "model": "phi3",
                "messages": [{"role": "user", "content": f"Client {index} asks question {turn}."}],
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "ignore_eos": True,
            }
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            generated += response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=170, limits=httpx.Limits(max_connections=clients)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "generated_tokens": generated,
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(generated / elapsed, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(_percentile(latencies, 0.99), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"clients": args.clients, "max_tokens": args.max_tokens}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        model = build(
            Path(scratch) / "model",
            args.hidden_size,
            args.layers,
            args.heads,
            vocab_size=2048,
            seed=0,
        )
        for label, batch in (("batched", args.clients), ("one_at_a_time", 1)):
            with serve(
                Path(scratch) / label,
                "--model-dir",
                str(model),
                "--max-batch-size",
                str(batch),
                "--max-concurrent-requests",
                str(args.clients),
            ) as server:
                results[label] = asyncio.run(
                    _load(server.url, args.clients, args.requests, args.max_tokens)
                )
    results["throughput_ratio"] = round(
        results["batched"]["tokens_per_s"] / results["one_at_a_time"]["tokens_per_s"], 2
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
