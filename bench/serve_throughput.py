"""Serving throughput: 16 concurrent clients against continuous batching vs one at a time.

Starts ``python -m phi3_server`` twice on the same small random Phi-3 and keeps both up: one
with ``--max-batch-size 16``, one with ``--max-batch-size 1``. In each round CLIENTS clients send
one request each, for a fixed number of tokens (``ignore_eos``), first to one server, then to the
other; alternating rounds spread the noise of a shared machine evenly over both. Reported: the
generated tokens per second and the request latency p50/p99 of each, and their throughput ratio.

    python bench/serve_throughput.py [--clients 16] [--rounds 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scripts.make_tiny_phi3 import build  # noqa: E402
from tests.serving.server_process import serve  # noqa: E402


@dataclass
class Measurements:
    latencies: list[float] = field(default_factory=list)
    generated_tokens: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered),
            "generated_tokens": self.generated_tokens,
            "seconds": round(self.seconds, 2),
            "tokens_per_s": round(self.generated_tokens / self.seconds, 1),
            "latency_p50_s": round(statistics.median(ordered), 3),
            "latency_p99_s": round(
                ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 3
            ),
        }


async def _round(url: str, clients: int, max_tokens: int, into: Measurements) -> None:
    """CLIENTS requests at once; their latencies, tokens and the round's wall time."""

    async def ask(index: int, http: httpx.AsyncClient) -> None:
        body = {
            "model": "phi3",
            "messages": [{"role": "user", "content": f"Client {index} asks a question."}],
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "ignore_eos": True,
        }
        started = time.perf_counter()
        response = await http.post(f"{url}/v1/chat/completions", json=body)
        response.raise_for_status()
        into.latencies.append(time.perf_counter() - started)
        into.generated_tokens += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=170, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(ask(i, http) for i in range(clients)))
        into.seconds += time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of each server: on shared cores, more threads than free cores "
        "make every parallel op wait for a descheduled thread",
    )
    args = parser.parse_args(argv)
    batch_sizes = {"batched": args.clients, "one_at_a_time": 1}
    measured = {label: Measurements() for label in batch_sizes}
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch, ExitStack() as servers:
        model = build(
            Path(scratch) / "model",
            args.hidden_size,
            args.layers,
            args.heads,
            vocab_size=2048,
            seed=0,
        )
        urls = {
            label: servers.enter_context(
                serve(
                    Path(scratch) / label,
                    "--model-dir",
                    str(model),
                    "--max-batch-size",
                    str(batch),
                    "--max-concurrent-requests",
                    str(args.clients),
                    env={"OMP_NUM_THREADS": str(args.torch_threads)},
                )
            ).url
            for label, batch in batch_sizes.items()
        }
        for _ in range(args.rounds):
            for label, url in urls.items():
                asyncio.run(_round(url, args.clients, args.max_tokens, measured[label]))
    results: dict[str, Any] = {
        "model": f"Phi-3 hidden {args.hidden_size}, {args.layers} layers, random weights",
        "clients": args.clients,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "torch_threads": args.torch_threads,
        **{label: m.summary() for label, m in measured.items()},
    }
    results["throughput_ratio"] = round(
        results["batched"]["tokens_per_s"] / results["one_at_a_time"]["tokens_per_s"], 2
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
