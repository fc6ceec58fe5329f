"""Preflight: everything Azure can tell us before the first resource is created.

Per region: for training, is each candidate VM size offered to Azure ML compute there, and do
vCPUs x nodes fit the family's Azure ML quota and the regional total (dedicated or low-priority)?
For serving, is the instance type one managed online endpoints accept, and do its instances, with
the 20% upgrade reserve, fit the same quota? Per subscription: are the resource providers the
stack needs registered, are its globally unique names (storage account, registry, Key Vault) free
or already this stack's own, and does a soft-deleted Key Vault or workspace hold a name it would
use? All ARM reads run concurrently. The result ranks the training candidates, chooses one per
region, and says exactly what to do when something does not fit.

Training runs as a serverless job. Serverless jobs "consume the same quota as Azure Machine
Learning compute quota"; a job whose size has quota that other jobs are using "must wait in a
queue until quota is available" (MicrosoftDocs/azure-ai-docs, articles/machine-learning/
how-to-use-serverless-compute.md, intro and "Quota"). So the quota *limit* decides whether a size
can train at all; what is in use only delays it. A managed online deployment has no queue: "Each
deployment subtracts from available quota" (how-to-troubleshoot-online-endpoints.md, "CPU
quota"), so serving needs free quota.

One module per concern: the request (request.py), the quota arithmetic (quota.py), what blocks
a subscription whatever the region (blockers.py), the concurrent reads and the verdicts (run.py),
and the report (report.py).
"""

from phi3_infra.azure.preflight.blockers import (
    deleted_vault_blockers,
    deleted_workspace_blockers,
    name_blockers,
    provider_blockers,
)
from phi3_infra.azure.preflight.quota import (
    check_fixed_sku,
    check_serving,
    check_sku,
    normalize_family,
)
from phi3_infra.azure.preflight.report import (
    Blocker,
    CallTiming,
    PreflightError,
    PreflightFailed,
    PreflightReport,
    PreflightUnavailable,
    QuotaLine,
    RegionResult,
    ServingCheck,
    SkuCheck,
    Verdict,
)
from phi3_infra.azure.preflight.request import (
    GLOBAL_NAME_KINDS,
    REQUIRED_PROVIDERS,
    GlobalNameKind,
    PreflightRequest,
    ServingRequest,
)
from phi3_infra.azure.preflight.run import require_fit, run_preflight

__all__ = [
    "GLOBAL_NAME_KINDS",
    "REQUIRED_PROVIDERS",
    "Blocker",
    "CallTiming",
    "GlobalNameKind",
    "PreflightError",
    "PreflightFailed",
    "PreflightReport",
    "PreflightRequest",
    "PreflightUnavailable",
    "QuotaLine",
    "RegionResult",
    "ServingCheck",
    "ServingRequest",
    "SkuCheck",
    "Verdict",
    "check_fixed_sku",
    "check_serving",
    "check_sku",
    "deleted_vault_blockers",
    "deleted_workspace_blockers",
    "name_blockers",
    "normalize_family",
    "provider_blockers",
    "require_fit",
    "run_preflight",
]
