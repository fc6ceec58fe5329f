"""Resource options for Azure ML objects that never change once created: asset versions and jobs.

Their names carry their content (a data version is its file's hash, an environment version its
image and routes, a model is named after its job, a job after its inputs), so a changed content is
a new object, never an update:

- asset versions (data, environment, model): "only `description` and `tags` can be updated. All
  other properties are immutable" (MicrosoftDocs/azure-ai-docs articles/machine-learning/
  how-to-manage-environments-v2.md and how-to-manage-models.md, "Update"; a data version "cannot
  be modified or deleted", how-to-create-data-assets.md);
- jobs: "For update case, the Tags in the definition passed in will replace Tags in the existing
  job" (Azure/azure-rest-api-specs machinelearningservices stable/2025-12-01, Jobs_CreateOrUpdate):
  nothing else of a submitted job changes.

Azure would accept a tag-only PUT, but a stack-wide tag change (`expiresOn`) must not PUT every
registered version and completed job: `ignore_changes` on their tags. Only the tags: the engine
applies `ignore_changes` by logical name whenever the state has an old value, so for a replacement
(new content, new Azure name, same logical name) it copies the ignored paths from the old object
into the new one (pulumi/pulumi pkg/resource/deploy/step_generator.go, processIgnoreChanges before
the diff). Ignoring the whole body would submit a new job with the old command and data; ignoring
tags costs at most the old object's stack tags on the new one, so no tag of these objects may carry
content (the name does). And the versions are retained on delete: Azure ML archives rather than
deletes asset versions (the CLI and SDK offer `archive`, not `delete`:
how-to-create-data-assets.md, "Archive"; a data version DELETE answered 400 "no longer supported by
the Azure ML APIs", microsoft/vscode-tools-for-ai#1761), so `pulumi destroy` must not depend on it;
they go with the project workspace.

Jobs are retained on delete too: a retrain (new inputs, new job name) replaces the logical job, and
the old one is the experiment's record, its outputs hold the old model's files (the model version's
`azureml://jobs/<name>/outputs/...` URI), so it stays until the project's permanent delete at
`pulumi destroy`. Replacements create the new job first (the default): with `deleteBeforeReplace`
a `pulumi up --replace` of the job would drop the old one from the state before azure-native's
create refused the name Azure still holds ("cannot create already existing resource": pulumi/
pulumi-azure-native provider/pkg/azure/client_azcore.go `CanCreate`), leaving a job the state no
longer knows. Created first, the refusal leaves the state as it was; `trainingRun` is the way to
train again on the same inputs (training.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi

_TAGS = ["properties.tags"]


def asset_version_options(
    parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource] = ()
) -> pulumi.ResourceOptions:
    """Never updated for a tag, never deleted on its own (see the module docstring)."""
    return pulumi.ResourceOptions(
        parent=parent, depends_on=list(depends_on), ignore_changes=_TAGS, retain_on_delete=True
    )


def job_options(
    parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]
) -> pulumi.ResourceOptions:
    """Never updated for a tag, never deleted on its own: a replaced job stays in Azure as the
    experiment's record (see the module docstring)."""
    return pulumi.ResourceOptions(
        parent=parent, depends_on=list(depends_on), ignore_changes=_TAGS, retain_on_delete=True
    )
