"""Preflight concurrency: 5 regions x 3 SKUs against the fake ARM server with 200 ms per call.

Prints the wall time of each run, the sum of the individual ARM call times, and their ratio (how
many calls were in flight on average). The ARM calls are per region (vmSizes, usages) and per
subscription (providers, deleted vaults, deleted workspaces), so 3 SKUs cost no extra calls.

    .venv/bin/python -m tests.bench.preflight_concurrency [--runs 5] [--latency 0.2]

It lives with the tests because it runs against their fake ARM server (tests/fakes); `-m` from the
repository root makes the tests' package importable.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from phi3_infra.azure.preflight import PreflightRequest, run_preflight
from tests.fakes.arm_server import SUBSCRIPTION_ID, FakeArm

REGIONS = ("eastus", "eastus2", "westus3", "swedencentral", "westeurope")
SKUS = ("Standard_NC48ads_A100_v4", "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per ARM call")
    args = parser.parse_args()
    fake = FakeArm(latency_s=args.latency)
    for region in REGIONS:
        fake.add_region(region, quota={"standardNCADSA100v4Family": (0, 24)})
    request = PreflightRequest(
        SUBSCRIPTION_ID,
        REGIONS,
        SKUS,
        training_nodes=1,
        key_vault_names=("kv-phi3-bench",),
        workspace_names=("hub-phi3-bench",),
    )
    walls, sums = [], []
    with tempfile.TemporaryDirectory() as tmp, fake.serving(Path(tmp)):
        client = fake.client()
        with client:
            for run in range(1, args.runs + 1):
                report = run_preflight(client, request)
                call_sum = sum(call.seconds for call in report.calls)
                walls.append(report.wall_seconds)
                sums.append(call_sum)
                print(
                    f"run {run}: {len(report.calls)} calls, wall {report.wall_seconds:.3f} s, "
                    f"sum of calls {call_sum:.3f} s, ratio {report.concurrency_ratio:.1f}"
                )
    wall, total = statistics.median(walls), statistics.median(sums)
    print(
        f"median over {args.runs} runs: wall {wall:.3f} s vs sum of calls {total:.3f} s "
        f"-> concurrency ratio {total / wall:.1f} ({len(REGIONS)} regions x {len(SKUS)} SKUs, "
        f"{args.latency * 1000:.0f} ms per call)"
    )


if __name__ == "__main__":
    main()
