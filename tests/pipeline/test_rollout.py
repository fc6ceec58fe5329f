"""Blue/green rollout: a new model is a new deployment that gets traffic only after it is
provisioned and has answered one chat sent to it alone; a failed check leaves the old deployment
serving 100% and fails `pulumi up` with the reason.

The plan tests read what the program declares (logical names, dependencies, the traffic diff).
The rollout tests run the real dynamic providers against the fake ARM server and a local HTTPS
server standing for the endpoint's scoring URI, in an order the engine may choose: each step
after the ones it waits for, independent ones riskiest first, the first failure stopping the
update before any delete (pulumi/pulumi pkg/resource/deploy/step_executor.go
`cancelDueToError`), and the deletes of what the program no longer declares last
(deployment_executor.go `performPostSteps`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from phi3_infra.azure.api_versions import ML_API_VERSION
from phi3_infra.azure.arm import ArmClient, Poll
from phi3_infra.azure.rollout import RolloutFailed
from phi3_infra.components.serving import ServedModel, deployment_name
from phi3_infra.config import config_from_flat
from phi3_infra.naming import stack_names
from phi3_infra.program import check_inputs, nothing_served, preflight_request, served_model
from phi3_infra.stack_files import PROJECT
from phi3_infra.steps import endpoint_traffic
from phi3_infra.steps import rollout_check as rollout
from phi3_infra.steps.endpoint_traffic import _EndpointTrafficProvider
from phi3_infra.steps.rollout_check import _RolloutCheckProvider
from phi3_infra.tooling import offline
from phi3_infra.tooling.offline import OfflineRun, PlannedResource
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_rollout import RolloutArm
from tests.fakes.arm_server import TOKEN, FakeArm
from tests.fakes.azure_rules import ArmRequest, FakeAzure
from tests.fakes.scoring_endpoint import ContainerAnswer, ScoringEndpoint, scoring_endpoint
from tests.pipeline.conftest import BASE_CONFIG, STACK, Plan
from tests.pipeline.serving_plan import ONLINE_DEPLOYMENT, rollout_check, served_deployment

SERVE_ONLY: dict[str, str | None] = {"stages": '["infra", "serve"]', "trainingData": None}
SERVED, NEXT = "azureml:phi3-ft:7", "azureml:phi3-ft:8"
E4S = "Standard_E4s_v3"
HEALTHY = ContainerAnswer(200, {"output": "Paris."})
# how-to-manage-quotas.md: begin with a letter, 3-32 characters, letters and numbers, single dashes.
AZURE_DEPLOYMENT_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){2,31}$")


@pytest.fixture
def fake_arm(tmp_path: Path) -> Iterator[FakeArm]:
    # The subscription of the offline plan's ids, so the providers act on the planned resources.
    fake = FakeArm(subscription_id=offline.SUBSCRIPTION_ID)
    with fake.serving(tmp_path / "tls"):
        yield fake


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "PROVISION_POLL", Poll(timeout_s=1800, interval_s=0.01))
    monkeypatch.setattr(endpoint_traffic, "TRAFFIC_POLL", Poll(timeout_s=900, interval_s=0.01))


# --- what the program declares -------------------------------------------------------------


def test_each_model_and_server_gets_its_own_deployment_name_within_azures_rules() -> None:
    job = "phi3-ft-eastus2-0123456789abcdef0123456789abcdef"  # a long job name, as training's
    names = {
        deployment_name(ServedModel(model, version), environment)
        for model, version, environment in [
            (job, "1", "a" * 16),
            (job, "2", "a" * 16),
            ("phi3-ft", "1", "a" * 16),
            (job, "1", "b" * 16),
        ]
    }
    assert len(names) == 4
    assert all(AZURE_DEPLOYMENT_NAME.match(name) for name in names), names
    assert deployment_name(ServedModel(job, "1"), "a" * 16) in names  # stable for the same three


def test_a_model_change_is_a_new_deployment_and_the_same_traffic_updated(plan: Plan) -> None:
    azure = FakeAzure()
    before = plan(azure=azure, modelReference=SERVED, **SERVE_ONLY)
    after = plan(azure=azure, modelReference=NEXT, **SERVE_ONLY)
    old, new = served_deployment(before), served_deployment(after)
    assert new.name == f"online-deployment-{new.azure_name}" and old.urn != new.urn
    assert old.urn not in {resource.urn for resource in after.resources}  # dropped
    # Azure: the new deployment is created and, last, the old one deleted; never an in-place
    # update of the deployment that serves.
    deployments = [r for r in azure.requests if r.type == ONLINE_DEPLOYMENT]
    assert deployments[-2:] == [
        ArmRequest("PUT", ONLINE_DEPLOYMENT, str(new.id)),
        ArmRequest("DELETE", ONLINE_DEPLOYMENT, str(old.id)),
    ]
    assert azure.updates(ONLINE_DEPLOYMENT) == []
    # One traffic resource across rollouts, updated in place to the new deployment ...
    traffic_before, traffic_after = (
        before.named("endpoint-traffic"),
        after.named("endpoint-traffic"),
    )
    assert traffic_before.urn == traffic_after.urn
    assert traffic_after.inputs["deployment_name"] == new.azure_name
    diff = _EndpointTrafficProvider().diff("id", traffic_before.inputs, traffic_after.inputs)
    assert diff.changes and diff.replaces == []
    # ... after the check of the new deployment, which comes after that deployment.
    check = rollout_check(after)
    assert check.name == f"rollout-check-{new.azure_name}"
    assert check.inputs["deployment_id"] == new.id
    assert after.waits_for(check.name, new.name)
    assert after.waits_for("endpoint-traffic", check.name)


def test_a_stack_from_before_blue_green_upgrades_by_a_first_switch(plan: Plan) -> None:
    """The stacks that exist hold `online-deployment` (Azure name `phi3`) and `endpoint-traffic`
    on it: the first `pulumi up` creates the model's own deployment, updates that same traffic
    resource to it, and deletes `phi3` at the end."""
    run = plan(modelReference=SERVED, **SERVE_ONLY)
    new, traffic = served_deployment(run), run.named("endpoint-traffic")
    legacy = new.urn.rsplit("::", 1)[0] + "::online-deployment"
    assert legacy not in {resource.urn for resource in run.resources}
    assert traffic.urn.endswith(
        "phi3:serving:ServingEndpoint$pulumi-python:dynamic:Resource::endpoint-traffic"
    )
    legacy_traffic = {"endpoint_id": traffic.inputs["endpoint_id"], "deployment_name": "phi3"}
    diff = _EndpointTrafficProvider().diff("id", legacy_traffic, traffic.inputs)
    assert diff.changes and diff.replaces == []


def test_the_preflight_sizes_the_deployment_the_plan_creates(plan: Plan) -> None:
    """So a model change asks quota for a new deployment next to the live one
    (tests/preflight/test_serving_quota.py), not for an update of the live one."""
    requests = []
    for reference in (SERVED, NEXT):
        run = plan(modelReference=reference, **SERVE_ONLY)
        flat = BASE_CONFIG | {
            "phi3-foundry:stages": '["infra", "serve"]',
            "phi3-foundry:modelReference": reference,
        }
        config = config_from_flat(flat)
        names = stack_names(config, PROJECT, STACK, offline.SUBSCRIPTION_ID)
        checked = check_inputs(config, names, offline.SUBSCRIPTION_ID)
        request = preflight_request(checked, None, served_model(checked, None, nothing_served))
        assert request.serving is not None
        assert request.serving.deployment_id == served_deployment(run).id
        requests.append(request.serving.deployment_id)
    assert requests[0] != requests[1]


# --- a rollout against the fake ARM server -------------------------------------------------


@dataclass
class Rollout:
    """The model change SERVED -> NEXT, with SERVED's deployment live at 100%."""

    before: OfflineRun
    after: OfflineRun
    arm: RolloutArm
    scoring: ScoringEndpoint
    fake: FakeArm
    client: ArmClient

    @property
    def old(self) -> PlannedResource:
        return served_deployment(self.before)

    @property
    def new(self) -> PlannedResource:
        return served_deployment(self.after)

    @property
    def endpoint(self) -> str:
        return str(self.after.named("online-endpoint").azure_name)

    def run_update(self, *, new_states: tuple[str, ...] = ("Creating", "Succeeded")) -> None:
        """`pulumi up` of `after` over `before`: azure-native creates the new deployment (Azure
        provisions it through `new_states`), then the dynamic steps, then the delete of the old
        deployment (what azure-native sends for it)."""
        traffic_before = self.before.named("endpoint-traffic")
        traffic_after = self.after.named("endpoint-traffic")
        steps: dict[str, Callable[[], object]] = {
            # Riskiest first: the switch, before what it waits for if the plan let it.
            "endpoint-traffic": lambda: _EndpointTrafficProvider().update(
                str(traffic_before.id), traffic_before.inputs, traffic_after.inputs
            ),
            rollout_check(self.after).name: lambda: _RolloutCheckProvider().create(
                rollout_check(self.after).inputs
            ),
            self.new.name: lambda: self.fake.deploy_online(
                "eastus2", str(self.new.id), E4S, 1, states=new_states
            ),
        }
        for name in engine_order(self.after, list(steps)):
            steps[name]()
        self.client.delete(str(self.old.id), ML_API_VERSION)


def engine_order(run: OfflineRun, names: list[str]) -> list[str]:
    """`names` in an order the engine may run them: each after those it waits for, the others
    in the order given."""
    pending, order = list(names), []
    while pending:
        ready = next(n for n in pending if not any(run.waits_for(n, o) for o in pending if o != n))
        pending.remove(ready)
        order.append(ready)
    return order


@pytest.fixture
def rollout_of(
    plan: Plan, signed_in_env: FakeArm, arm_client: ArmClient, tmp_path: Path
) -> Iterator[Callable[..., Rollout]]:
    signed_in_env.add_region("eastus2")
    arm = RolloutArm(PipelineArm(signed_in_env).install()).install()
    with scoring_endpoint(tmp_path / "tls", set(), {}) as scoring:

        def make(new_answer: ContainerAnswer = HEALTHY, **overrides: str) -> Rollout:
            before = plan(modelReference=SERVED, **SERVE_ONLY, **overrides)
            after = plan(modelReference=NEXT, **SERVE_ONLY, **overrides)
            old, new = served_deployment(before), served_deployment(after)
            signed_in_env.deploy_online("eastus2", str(old.id), E4S, 1)
            arm_mode = "AADToken" if overrides.get("endpointAuthMode") == "aadToken" else "Key"
            endpoint_id = str(after.named("online-endpoint").id)
            arm.add_endpoint(
                endpoint_id,
                scoring_uri=scoring.scoring_uri,
                auth_mode=arm_mode,
                traffic={str(old.azure_name): 100},
            )
            name = endpoint_id.rsplit("/", 1)[-1]
            scoring.credentials.add(TOKEN if arm_mode == "AADToken" else arm.keys[name][0])
            scoring.answers |= {str(old.azure_name): HEALTHY, str(new.azure_name): new_answer}
            return Rollout(before, after, arm, scoring, signed_in_env, arm_client)

        yield make


def test_a_healthy_deployment_is_checked_then_gets_all_traffic(
    rollout_of: Callable[..., Rollout],
) -> None:
    rollout = rollout_of()
    rollout.run_update()
    new = str(rollout.new.azure_name)
    assert rollout.arm.traffic(rollout.endpoint) == {new: 100}
    assert rollout.arm.deleted == [rollout.old.id]
    # The check: provisioning followed to Succeeded, then one chat to the new deployment alone,
    # with the endpoint's key, before the traffic update's PUT.
    assert len(rollout.fake.calls_to(f"/deployments/{new}")) == 2  # Creating, Succeeded
    (smoke,) = rollout.scoring.calls
    assert smoke.deployment == new
    assert smoke.authorization == f"Bearer {rollout.arm.keys[rollout.endpoint][0]}"
    assert smoke.body["input_data"]["input_string"][0]["role"] == "user"
    (switch,) = [
        c for c in rollout.fake.calls if c.method == "PUT" and "/onlineEndpoints/" in c.path
    ]
    assert smoke.at < switch.started
    assert json.loads(switch.body)["properties"]["traffic"] == {new: 100}


@pytest.mark.parametrize(
    ("states", "answer", "reason"),
    [
        (
            ("Creating", "Failed"),
            HEALTHY,
            "Azure reports it Failed: a deployment is Succeeded only once its container passes "
            "the readiness probe",
        ),
        (
            ("Succeeded",),
            ContainerAnswer(500, {"error": {"message": "generation failed: out of memory"}}),
            "answered 424 (the container itself answered 500; its answer is the body): "
            '{"error": {"message": "generation failed: out of memory"}}',
        ),
        (
            ("Succeeded",),
            ContainerAnswer(200, {"output": "  "}),
            'answered 200 but not a chat reply (expected {"output": "<text>"})',
        ),
    ],
    ids=["readiness", "smoke-error", "empty-reply"],
)
def test_a_failed_check_keeps_the_old_deployment_at_100_percent_and_says_why(
    rollout_of: Callable[..., Rollout],
    states: tuple[str, ...],
    answer: ContainerAnswer,
    reason: str,
) -> None:
    rollout = rollout_of(answer)
    old, new = str(rollout.old.azure_name), str(rollout.new.azure_name)
    with pytest.raises(RolloutFailed) as failed:
        rollout.run_update(new_states=states)
    message = str(failed.value)
    assert message.startswith(
        f"rollout of deployment {new} on endpoint {rollout.endpoint} stopped before the traffic "
        "switch:"
    )
    assert reason in message
    assert f'Traffic stays as it is ({{"{old}": 100}})' in message
    assert f"az ml online-deployment get-logs --name {new} --endpoint-name {rollout.endpoint}" in (
        message
    )
    assert rollout.arm.traffic(rollout.endpoint) == {old: 100}
    assert rollout.arm.deleted == []
    assert not [c for c in rollout.fake.calls if c.method == "PUT"]
    assert rollout.arm.keys[rollout.endpoint][0] not in message


def test_an_entra_id_endpoint_is_checked_with_a_token_not_a_key(
    rollout_of: Callable[..., Rollout],
) -> None:
    rollout = rollout_of(endpointAuthMode="aadToken")
    rollout.run_update()
    (smoke,) = rollout.scoring.calls
    assert smoke.authorization == f"Bearer {TOKEN}"  # the signed-in identity's Entra token
    assert not rollout.fake.calls_to("/listKeys")
    assert rollout.arm.traffic(rollout.endpoint) == {str(rollout.new.azure_name): 100}
