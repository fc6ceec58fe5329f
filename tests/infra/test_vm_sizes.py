"""VM size facts read from the name, for plans made without asking Azure."""

from __future__ import annotations

import pytest

from phi3_infra.vm_sizes import known_gpus_per_node, vcpus_per_node


@pytest.mark.parametrize(
    ("vm_size", "vcpus"),
    [
        ("Standard_NC24ads_A100_v4", 24),
        ("Standard_NC96ads_A100_v4", 96),
        ("Standard_NC6s_v3", 6),
        ("Standard_ND96asr_v4", 96),
        ("Standard_E4-2s_v3", 2),  # constrained vCPU size: the second number is the real count
    ],
)
def test_vcpus_read_from_the_size_name(vm_size: str, vcpus: int) -> None:
    assert vcpus_per_node(vm_size) == vcpus


def test_a_name_without_a_count_is_refused_with_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"'A100'.*Standard_<family><n>"):
        vcpus_per_node("A100")


def test_unknown_sizes_run_one_process_per_node() -> None:
    assert known_gpus_per_node("Standard_NC48ads_A100_v4") == 2
    assert known_gpus_per_node("Standard_NC4as_T4_v3_unlisted") == 1
