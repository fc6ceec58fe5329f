"""Find the serve stage's resources in a plan whatever their names: the deployment's name (and so
its logical name) derives from the model and the server environment
(phi3_infra/components/serving.py)."""

from __future__ import annotations

from phi3_infra.tooling.offline import OfflineRun, PlannedResource

ONLINE_DEPLOYMENT = "azure-native:machinelearningservices:OnlineDeployment"
ROLLOUT_CHECK_PREFIX = "rollout-check-"


def served_deployment(run: OfflineRun) -> PlannedResource:
    """The plan's one online deployment."""
    (deployment,) = run.of_type(ONLINE_DEPLOYMENT)
    return deployment


def rollout_check(run: OfflineRun) -> PlannedResource:
    """The check that stands between the plan's deployment and its traffic."""
    (check,) = [r for r in run.resources if r.name.startswith(ROLLOUT_CHECK_PREFIX)]
    return check
