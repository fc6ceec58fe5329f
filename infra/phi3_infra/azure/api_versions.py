"""Every Azure REST API version the project's own calls send, in one place.

Each ARM version is one whose specification (Azure/azure-rest-api-specs, `specification/<service>/
resource-manager/<namespace>/{stable,preview}/<version>/`) defines every operation sent with it;
the fakes answer from that folder's examples (tests/fakes/spec_examples) and accept only the
versions they list themselves (tests/fakes/arm_server.py), so a bump here also needs the new
version's examples there, or the tests fail.
"""

from __future__ import annotations

# machinelearningservices stable/2024-10-01: workspaces, jobs, online endpoints and deployments,
# vmSizes, usages, deletedWorkspaces.
ML_API_VERSION = "2024-10-01"
# resources stable/2021-04-01: the subscription's resource providers and their registration.
PROVIDERS_API_VERSION = "2021-04-01"
# keyvault stable/2023-07-01: vault name availability, deletedVaults, purge.
KEY_VAULT_API_VERSION = "2023-07-01"
# storage stable/2024-01-01: storage account name availability.
STORAGE_API_VERSION = "2024-01-01"
# containerregistry stable/2023-07-01: registry name availability.
REGISTRY_API_VERSION = "2023-07-01"
# containerregistry preview/2019-06-01-preview: the build operations (scheduleRun, runs,
# listBuildSourceUploadUrl) exist only in the preview API versions.
ACR_BUILD_API_VERSION = "2019-06-01-preview"
# operationalinsights stable/2025-07-01: Workspaces_Delete with `force`, DeletedWorkspaces_List.
LOG_ANALYTICS_API_VERSION = "2025-07-01"
# Blob service data plane, the `x-ms-version` header: a request authorized with a Microsoft Entra
# token needs 2017-11-09 or later (Learn, "Versioning for Azure Storage",
# rest/api/storageservices/versioning-for-the-azure-storage-services).
BLOB_API_VERSION = "2023-11-03"
