"""The planned training job, run as Azure ML's job runtime runs it (phi3_rehearsal.job): the
command the program registers trains the tiny model in the trainer image's own environment, the
servable model lands where the planned model URI points, and each broken contract between the
plan, the data and the runtime fails with a message naming it."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import time
from pathlib import Path

import pytest

from phi3_infra.program import (
    build_stack,
    no_existing_training,
    offline_gpu_choice,
    offline_registry_token,
)
from phi3_infra.tooling import offline
from phi3_infra.tooling.offline import OfflineRun, PlannedResource
from phi3_rehearsal.images import ImageEnv, image_env
from phi3_rehearsal.job import JobContractError, JobFailed, run_planned_job

DEMO_DATA = Path(__file__).resolve().parents[2] / "scripts" / "data" / "capitals_chat.jsonl"
# A short schedule the trainer accepts (infra/phi3_infra/trainer_flags.json): 20 steps of 4
# short rows, no evaluation, no activation recomputation.
TRAINER_ARGS = {
    "max_steps": 20,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 128,
    "warmup_steps": 0,
    "logging_steps": 5,
    "validation_split": 0,
    "activation_checkpointing": False,
    "disable_tqdm": True,
}
# Standard_NC48ads_A100_v4 has two GPUs: the program plans a PyTorch distribution of 2 per node.
TWO_GPUS = '["Standard_NC48ads_A100_v4"]'
TIMEOUT_S = 300.0
JOB_OUTPUT_URI = re.compile(
    r"azureml://jobs/(?P<job>[^/]+)/outputs/(?P<output>[^/]+)/paths/(?P<path>.+)"
)


def plan(tmp: Path, tiny_phi3: Path, gpu_skus: str | None = None) -> tuple[OfflineRun, Path]:
    """The real program under Pulumi's mocks (through the CLI's config merge, tests/conftest.py)
    for a training stack on the tiny model; returns the run and its training file."""
    tmp.mkdir(exist_ok=True)
    train = tmp / "train.jsonl"
    train.write_text("".join(DEMO_DATA.read_text().splitlines(keepends=True)[:40]))
    config = {
        "azure-native:location": "eastus2",
        "phi3-foundry:owner": "team@contoso.com",
        "phi3-foundry:expiresOn": "2027-01-31",
        "phi3-foundry:stages": '["infra", "train"]',
        "phi3-foundry:trainingData": str(train),
        "phi3-foundry:baseModel": str(tiny_phi3),
        "phi3-foundry:trainerArgs": json.dumps(TRAINER_ARGS),
    }
    if gpu_skus:
        config["phi3-foundry:gpuSkus"] = gpu_skus
    program = functools.partial(
        build_stack,
        preflight=offline_gpu_choice,
        registry_token=offline_registry_token,
        find_training=no_existing_training,
    )
    return offline.run_offline(program, config, "rehearsal"), train


def job_of(run: OfflineRun) -> PlannedResource:
    (job,) = run.of_type("azure-native:machinelearningservices:Job")
    return job


@pytest.fixture(scope="module")
def trainer() -> ImageEnv:
    return image_env("trainer")


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory, tiny_phi3: Path) -> tuple[OfflineRun, Path]:
    return plan(tmp_path_factory.mktemp("plan"), tiny_phi3)


@pytest.fixture
def altered(planned: tuple[OfflineRun, Path]) -> OfflineRun:
    """A copy of the planned run a test may change."""
    return copy.deepcopy(planned[0])


@pytest.mark.slow
def test_the_planned_job_trains_the_model_the_program_registers(
    planned: tuple[OfflineRun, Path], trainer: ImageEnv, tmp_path: Path
) -> None:
    run, train = planned
    job = job_of(run)
    name, properties = job.inputs["id"], job.inputs["properties"]

    result = run_planned_job(run, {"train": train}, trainer, tmp_path, timeout_s=TIMEOUT_S)

    # The model URI the program registers, resolved here by its documented form
    # azureml://jobs/<job>/outputs/<output>/paths/<path> (how-to-manage-models.md).
    (model,) = run.of_type("azure-native:machinelearningservices:ModelVersion")
    uri = JOB_OUTPUT_URI.fullmatch(model.inputs["properties"]["modelUri"])
    assert uri is not None and uri["job"] == name
    servable = result.outputs[uri["output"]] / uri["path"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(servable)
    assert AutoModelForCausalLM.from_pretrained(servable).config.model_type == "phi3"
    assert tokenizer.chat_template
    # What Azure ML gives the job, from the plan.
    assert "${{" not in result.command and result.command.startswith("python -m phi3_trainer")
    assert (
        result.env["MLFLOW_MAX_LOG_PARAMS"]
        == properties["environmentVariables"]["MLFLOW_MAX_LOG_PARAMS"]
    )
    assert result.env["AZUREML_RUN_ID"] == name
    assert result.env["DEFAULT_IDENTITY_CLIENT_ID"] == properties["identity"]["clientId"]
    assert result.env["MLFLOW_EXPERIMENT_NAME"] == properties["experimentName"]
    assert "RANK" not in result.env  # one process: no distribution planned for one GPU
    # The trainer logged into the job's MLflow run, as it does under Azure ML's tracking URI.
    store = Path(result.env["MLFLOW_TRACKING_URI"].removeprefix("file://"))
    (run_folder,) = store.glob(f"*/{result.env['MLFLOW_RUN_ID']}")
    assert (run_folder / "metrics" / "train_loss").is_file()
    metrics = json.loads((result.outputs["model"] / "metrics.json").read_text())
    assert metrics["global_step"] == TRAINER_ARGS["max_steps"] and metrics["world_size"] == 1


def test_inputs_are_read_only_and_outputs_writable(
    altered: OfflineRun, planned: tuple[OfflineRun, Path], trainer: ImageEnv, tmp_path: Path
) -> None:
    job_of(altered).inputs["properties"]["command"] = (
        "echo written > ${{outputs.model}}/probe && echo tampered >> ${{inputs.train}}"
    )
    train = planned[1]

    with pytest.raises(JobFailed) as failed:
        run_planned_job(altered, {"train": train}, trainer, tmp_path, timeout_s=60)

    assert "Read-only file system" in str(failed.value) or "Permission denied" in str(failed.value)
    (delivered,) = tmp_path.glob("cr/j/*/cap/data-capability/wd/INPUT_train/*.jsonl")
    assert delivered.read_bytes() == train.read_bytes()
    (probe,) = tmp_path.glob("cr/j/*/cap/data-capability/wd/model/probe")
    assert probe.read_text() == "written\n"


def test_a_pytorch_distribution_starts_one_process_per_rank(
    tmp_path: Path, tiny_phi3: Path, trainer: ImageEnv
) -> None:
    run, train = plan(tmp_path / "plan", tiny_phi3, gpu_skus=TWO_GPUS)
    properties = job_of(run).inputs["properties"]
    assert properties["distribution"] == {
        "distributionType": "PyTorch",
        "processCountPerInstance": 2,
    }
    properties["command"] = (
        "env | grep -E '^(MASTER_ADDR|MASTER_PORT|WORLD_SIZE|NODE_RANK|RANK|LOCAL_RANK)=' | sort"
        " > ${{outputs.model}}/rank-$RANK.env"
    )

    result = run_planned_job(run, {"train": train}, trainer, tmp_path / "job", timeout_s=60)

    seen = {
        rank: dict(line.split("=", 1) for line in (result.outputs["model"] / f"rank-{rank}.env")
                   .read_text().splitlines())
        for rank in (0, 1)
    }  # fmt: skip
    port = seen[0]["MASTER_PORT"]
    for rank, variables in seen.items():
        assert variables == {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "NODE_RANK": "0",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }


def test_a_command_using_an_undeclared_input_fails_naming_it(
    altered: OfflineRun, planned: tuple[OfflineRun, Path], trainer: ImageEnv, tmp_path: Path
) -> None:
    properties = job_of(altered).inputs["properties"]
    properties["command"] += " --validation_file ${{inputs.validation}}"

    with pytest.raises(JobContractError) as refused:
        run_planned_job(altered, {"train": planned[1]}, trainer, tmp_path, timeout_s=60)

    assert "${{inputs.validation}}" in str(refused.value)
    assert "declares no input 'validation' (its inputs: train)" in str(refused.value)
    assert not list(tmp_path.glob("cr/j/*/user_logs")), "nothing may run"


def test_a_model_uri_naming_another_output_fails_before_training(
    altered: OfflineRun, planned: tuple[OfflineRun, Path], trainer: ImageEnv, tmp_path: Path
) -> None:
    (model,) = altered.of_type("azure-native:machinelearningservices:ModelVersion")
    properties = model.inputs["properties"]
    properties["modelUri"] = properties["modelUri"].replace("/outputs/model/", "/outputs/weights/")

    with pytest.raises(JobContractError) as refused:
        run_planned_job(altered, {"train": planned[1]}, trainer, tmp_path, timeout_s=60)

    assert "contract: model URI" in str(refused.value)
    assert "names output 'weights'" in str(refused.value)
    assert "declares outputs: model" in str(refused.value)
    assert not tmp_path.exists() or not list(tmp_path.iterdir()), "nothing may run"


def test_data_other_than_the_planned_upload_fails_naming_the_input(
    planned: tuple[OfflineRun, Path], trainer: ImageEnv, tmp_path: Path
) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text(planned[1].read_text().splitlines(keepends=True)[0])

    with pytest.raises(JobContractError) as refused:
        run_planned_job(planned[0], {"train": other}, trainer, tmp_path / "job", timeout_s=60)

    assert "input 'train'" in str(refused.value)
    assert "is not the file the plan uploads to https://" in str(refused.value)


def test_a_job_past_its_time_is_stopped_with_its_log(
    altered: OfflineRun, planned: tuple[OfflineRun, Path], trainer: ImageEnv, tmp_path: Path
) -> None:
    job_of(altered).inputs["properties"]["command"] = "echo started && sleep 120"
    started = time.monotonic()

    with pytest.raises(JobFailed) as failed:
        run_planned_job(altered, {"train": planned[1]}, trainer, tmp_path, timeout_s=1)

    assert time.monotonic() - started < 30, "the job's processes must be stopped, not awaited"
    assert "ran past 1 s" in str(failed.value) and "started" in str(failed.value)


def test_an_image_without_azure_mls_mlflow_plugin_fails_before_training(
    planned: tuple[OfflineRun, Path], trainer: ImageEnv, tmp_path: Path
) -> None:
    """Dropping azureml-mlflow from the image's requirements must fail the rehearsal, as the
    job would fail in Azure on its azureml:// tracking URI: here the plugin is shadowed."""
    shadow = tmp_path / "shadow" / "azureml"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("azureml-mlflow is not installed")\n')
    path = os.pathsep.join(filter(None, [str(shadow.parent), trainer.env.get("PYTHONPATH")]))
    without_plugin = dataclasses.replace(trainer, env={**trainer.env, "PYTHONPATH": path})

    with pytest.raises(JobContractError) as refused:
        run_planned_job(planned[0], {"train": planned[1]}, without_plugin, tmp_path, timeout_s=60)

    message = str(refused.value)
    assert "contract: MLflow" in message and "azureml://eastus2.api.azureml.ms/mlflow/" in message
    assert "add azureml-mlflow to training_image/requirements.txt" in message
    assert not list(tmp_path.glob("cr/j/*/user_logs")), "nothing may run"
