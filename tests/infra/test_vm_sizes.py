"""GPUs per node known without asking Azure, for plans made offline."""

from __future__ import annotations

from phi3_infra.catalog.vm_sizes import known_gpus_per_node


def test_unknown_sizes_run_one_process_per_node() -> None:
    assert known_gpus_per_node("Standard_NC48ads_A100_v4") == 2
    assert known_gpus_per_node("Standard_NC4as_T4_v3_unlisted") == 1
