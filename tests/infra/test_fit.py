"""The plan refuses training that cannot fit the GPU size the preflight chose, with the numbers and
what would fit, before any resource exists; unknown models and sizes are warnings."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi3_infra.config import ConfigError, StackConfig
from phi3_infra.fit import TrainingWontFit, check_training_fits
from tests.pipeline.conftest import Plan, planner

NC24_A100 = "Standard_NC24ads_A100_v4"  # 1 x A100 80GB (nca100v4-series.md)
MEDIUM = "microsoft/Phi-3-medium-4k-instruct"


def stack(**keys: Any) -> StackConfig:
    return StackConfig.model_validate(
        {
            "location": "eastus2",
            "owner": "team@contoso.com",
            "expiresOn": "2027-01-31",
            "stages": ["infra", "train"],
            "trainingData": "train.jsonl",
            **keys,
        }
    )


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plan]:
    yield planner(tmp_path, monkeypatch)


def _gigabytes(text: str) -> list[float]:
    return [float(number) for number in re.findall(r"(\d+\.\d) GB", text)]


def test_full_fine_tuning_of_phi3_medium_on_one_a100_is_refused_with_numbers() -> None:
    with pytest.raises(TrainingWontFit) as caught:
        check_training_fits(
            stack(baseModel=MEDIUM, trainerArgs={"use_lora": False}), NC24_A100, gpus_per_node=1
        )
    message = str(caught.value)
    assert message.startswith("phi3-foundry:trainerArgs: training microsoft/Phi-3-medium")
    assert f"does not fit {NC24_A100} (1 x 80.0 GB GPU per node" in message
    numbers = re.search(
        r"node\(s\), 1 process\(es\)\): about (\d+\.\d) GB \((.*?)\) per GPU", message
    )
    assert numbers is not None
    needed, parts = float(numbers[1]), _gigabytes(numbers[2])
    assert needed > 72.0 and "72.0 GB usable (90% of 80.0 GB)" in message
    # Per part: 14B parameters x 4 bytes of fp32 weights, as many for gradients, 8 for AdamW.
    for part in ("weights 55.8 GB", "gradients 55.8 GB", "optimizer state 111.7 GB"):
        assert part in message
    assert needed == pytest.approx(sum(parts), abs=0.5)
    fixes = message.split("What would fit:\n")[1]
    assert "LoRA instead of full fine-tuning: phi3-foundry:trainerArgs use_lora: true" in fixes
    assert "more GPUs with sharding (FSDP): phi3-foundry:trainingNodes: 4" in fixes
    assert "a bigger size: Standard_NC96ads_A100_v4" in fixes
    for suggested in _gigabytes(fixes):
        assert suggested <= 72.0


def test_every_suggestion_fits_when_applied() -> None:
    config = stack(
        trainerArgs={
            "use_lora": False,
            "per_device_train_batch_size": 8,
            "activation_checkpointing": False,
        }
    )
    with pytest.raises(TrainingWontFit) as caught:
        check_training_fits(config, NC24_A100, gpus_per_node=1)
    fixes = str(caught.value).split("What would fit:\n")[1]
    smaller = re.search(
        r"per_device_train_batch_size: (\d+), activation_checkpointing: true", fixes
    )
    assert smaller is not None
    batch = int(smaller[1])
    applied = {**(config.trainer_args or {}), "per_device_train_batch_size": batch}
    check_training_fits(
        stack(trainerArgs={**applied, "activation_checkpointing": True}), NC24_A100, 1
    )
    with pytest.raises(TrainingWontFit):  # the largest batch that fits: one more does not
        check_training_fits(
            stack(
                trainerArgs={
                    **applied,
                    "per_device_train_batch_size": batch + 1,
                    "activation_checkpointing": True,
                }
            ),
            NC24_A100,
            1,
        )


def test_phi3_mini_lora_fits_one_a100() -> None:
    assert check_training_fits(stack(), NC24_A100, gpus_per_node=1) == []


def test_unknown_models_and_sizes_warn_instead_of_refusing() -> None:
    (model,) = check_training_fits(stack(baseModel="contoso/phi3-variant"), NC24_A100, 1)
    assert model.startswith("phi3-foundry:baseModel contoso/phi3-variant: neither a Phi-3 model")
    assert "not checked before the job starts" in model
    (size,) = check_training_fits(stack(trainerArgs={"use_lora": False}), "Standard_NC6s_v3", 1)
    assert size.startswith("phi3-foundry:gpuSkus: Standard_NC6s_v3 is not a size")


def test_the_plan_stops_before_any_resource(plan: Plan, registered: list[str]) -> None:
    with pytest.raises(ConfigError, match="does not fit Standard_NC24ads_A100_v4"):
        plan(baseModel=MEDIUM, trainerArgs=json.dumps({"use_lora": False}))
    assert registered == []


def test_the_plan_warns_about_an_unknown_model(
    plan: Plan, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run = plan(baseModel="contoso/phi3-variant")
    assert run.resources
    assert "phi3-foundry:baseModel contoso/phi3-variant: neither a Phi-3 model" in caplog.text
