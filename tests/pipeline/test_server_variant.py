"""The server image follows the serving size: an NVIDIA size gets serving_image/Dockerfile's CUDA
variant (TORCH_VARIANT=cuda), tagged and deployed apart from the CPU image, which CPU sizes keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phi3_infra.azure.arm import ArmClient, Poll
from phi3_infra.azure.registry_build import run_registry_build
from phi3_infra.build_context import image_sources
from phi3_infra.config import ConfigError, parse_stack_config
from phi3_infra.tooling.offline import OfflineRun
from tests.fakes.arm_pipeline import PipelineArm
from tests.pipeline.conftest import Plan, write_context
from tests.pipeline.serving_plan import served_deployment

GPU_SIZE = "Standard_NC24ads_A100_v4"
CPU_SIZE = "Standard_E4s_v3"
REGISTRY = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
    "/providers/Microsoft.ContainerRegistry/registries/phi3acr1"
)
SERVE_ONLY = {
    "location": "eastus2",
    "owner": "me",
    "expiresOn": "2027-01-31",
    "stages": ["infra", "serve"],
    "modelReference": "azureml:phi3-ft:1",
}


def _server_build(run: OfflineRun) -> dict[str, Any]:
    return run.named("server-image").inputs


def _built_images(run: OfflineRun) -> set[str]:
    return {r.inputs["image"] for r in run.resources if r.name.endswith("-image")}


def test_a_gpu_size_builds_and_serves_the_cuda_variant_beside_the_cpu_one(plan: Plan) -> None:
    cpu, gpu = plan(servingInstanceType=CPU_SIZE), plan(servingInstanceType=GPU_SIZE)
    cpu_image, gpu_image = _server_build(cpu)["image"], _server_build(gpu)["image"]
    # One folder, two images: the tag names the variant, so neither overwrites the other.
    assert gpu_image == f"{cpu_image}-cuda"
    assert _server_build(gpu)["build_args"] == {"TORCH_VARIANT": "cuda"}
    assert _server_build(cpu)["build_args"] == {}  # the Dockerfile's default: cpu
    # The deployment on the GPU runs that image, as a new environment version and deployment.
    deployment = served_deployment(gpu).inputs["properties"]
    environment = gpu.named("server-environment")
    assert deployment["instanceType"] == GPU_SIZE
    assert deployment["environmentId"] == environment.id
    assert environment.inputs["properties"]["image"] == gpu.outputs["serverImage"]
    assert gpu.outputs["serverImage"].endswith(f"/{gpu_image}")
    assert environment.inputs["version"] != cpu.named("server-environment").inputs["version"]
    assert served_deployment(gpu).azure_name != served_deployment(cpu).azure_name
    # Only the variant the size needs is built, and the trainer (so the job) is untouched.
    trainer = cpu.named("trainer-image").inputs["image"]
    assert _built_images(gpu) == {trainer, gpu_image}
    assert gpu.outputs["trainingJobName"] == cpu.outputs["trainingJobName"]


def test_a_local_build_passes_the_variant_to_buildkit(plan: Plan) -> None:
    gpu = plan(imageBuild="local", servingInstanceType=GPU_SIZE).named("server-image").inputs
    cpu = plan(imageBuild="local", servingInstanceType=CPU_SIZE).named("server-image").inputs
    assert gpu["buildArgs"] == {"TORCH_VARIANT": "cuda"}
    assert gpu["tags"] == [f"{cpu['tags'][0]}-cuda"]
    assert "buildArgs" not in cpu


@pytest.mark.parametrize("size", [GPU_SIZE, CPU_SIZE])
def test_the_registry_run_carries_the_planned_build_arguments(
    size: str,
    plan: Plan,
    pipeline_arm: PipelineArm,
    arm_client: ArmClient,
    tmp_path: Path,
) -> None:
    build = _server_build(plan(servingInstanceType=size))
    pipeline_arm.script_run("cb1", "Succeeded")
    context = write_context(tmp_path / "ctx", "pkg")
    poll = Poll(timeout_s=5, interval_s=0.01)
    run_registry_build(arm_client, REGISTRY, context, build["image"], poll, build["build_args"])
    (request,) = pipeline_arm.scheduled
    assert request["imageNames"] == [build["image"]]
    if size == GPU_SIZE:
        # Argument {name, value, isSecret}: containerregistry_build.json, 2019-06-01-preview.
        assert request["arguments"] == [
            {"name": "TORCH_VARIANT", "value": "cuda", "isSecret": False}
        ]
    else:
        assert "arguments" not in request


def _error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(SERVE_ONLY | overrides)
    return str(caught.value)


@pytest.mark.parametrize(
    ("size", "gpu"),
    [("Standard_NC6s_v3", "Tesla V100"), ("Standard_ND40rs_v2", "Tesla V100")],
)
def test_a_gpu_the_cuda_build_cannot_run_on_is_refused_before_anything_is_built(
    size: str, gpu: str
) -> None:
    message = _error(servingInstanceType=size)
    assert f"phi3-foundry:servingInstanceType: {size} has a {gpu} (compute capability 7.0)" in (
        message
    )
    assert "7.5 and newer" in message and "Standard_NC4as_T4_v3" in message


# Turing and newer; the SKU list writes names in capitals, Azure takes any case.
@pytest.mark.parametrize("size", ["Standard_NC4as_T4_v3", "Standard_NV36ADS_A10_V5", GPU_SIZE])
def test_turing_and_newer_gpu_sizes_get_the_built_cuda_image(size: str) -> None:
    config = parse_stack_config(SERVE_ONLY | {"servingInstanceType": size})
    assert image_sources(config)["server"].build_args == (("TORCH_VARIANT", "cuda"),)


def test_a_gpu_server_image_on_a_cpu_size_is_refused() -> None:
    message = _error(
        imageBuild="prebuilt",
        serverImage="contoso.azurecr.io/phi3-server:1-cuda",
        serverImageGpu=True,
        servingInstanceType=CPU_SIZE,
    )
    assert "phi3-foundry:serverImageGpu: true says serverImage runs on an NVIDIA GPU" in message
    assert f"phi3-foundry:servingInstanceType {CPU_SIZE} has none" in message
