"""The planned Azure ML command job, run on this machine the way Azure ML's job runtime runs it.

The job is taken exactly as the program registers it: the `azure-native:machinelearningservices:Job`
resource of the offline plan (its command with `${{inputs.*}}` / `${{outputs.*}}`, inputs,
outputs, environment variables, distribution, instance count and identity). Then, as Azure ML:

- each input is delivered read-only (a `ReadOnlyMount` of a `uri_file` data version: the bytes the
  plan uploads to that version's `dataUri`), each output is a writable folder, both laid out
  under a data-capability folder like the runtime's;
- the command's expressions are substituted with those paths, then it runs through `/bin/bash -c`
  in the trainer image's clean environment plus the job's `environmentVariables` and the
  variables Azure ML sets for a job (each with its source where it is set);
- a PyTorch distribution starts `instanceCount x processCountPerInstance` processes with the
  per-process distributed-training variables;
- before anything runs, the model version the program registers from the job
  (`azureml://jobs/<job>/outputs/<output>/paths/<path>`) must name this job and one of its
  outputs (deployment.py resolves the path after the job).

What differs from Azure, because nothing here reaches it: the real job gets the workspace's
`azureml://` MLflow tracking URI and a token for Azure ML's tracking server. Here the trainer gets
a local `file://` MLflow store (MLflow 3.x refuses a file store unless MLFLOW_ALLOW_FILE_STORE is
set; the image has no SQLAlchemy for sqlite), with the job's run created in it before the command
starts, as Azure ML creates a job's run first. That the image's azureml-mlflow resolves the real
`azureml://` URI is tested in tests/trainer/test_image_dependencies.py. Every process runs on this
machine (MASTER_ADDR 127.0.0.1), on the CPU, where the trainer uses gloo.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from phi3_infra.line_endings import read_as_sent
from phi3_infra.tooling.offline import OfflineRun, PlannedResource
from phi3_rehearsal.ports import free_port

if TYPE_CHECKING:
    from phi3_rehearsal.images import ImageEnv

JOB = "azure-native:machinelearningservices:Job"
DATA_VERSION = "azure-native:machinelearningservices:DataVersion"
MODEL_VERSION = "azure-native:machinelearningservices:ModelVersion"
# `${{ <expression> }}`, spaces allowed (MicrosoftDocs/azure-ai-docs articles/machine-learning/
# reference-yaml-core-syntax.md, "Expression syntax for configuring Azure Machine Learning jobs").
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# A command job's command binds the `inputs` and `outputs` contexts only (same article,
# "Parameterizing the command with the inputs and outputs contexts of a job").
_BINDING = re.compile(r"(inputs|outputs)\.(\w+)")
# `azureml://jobs/<job-name>/outputs/<output-name>/paths/<path-relative-to-the-output>`
# (azure-ai-docs articles/machine-learning/how-to-manage-models.md, "Supported paths").
JOB_OUTPUT_URI = re.compile(
    r"azureml://jobs/(?P<job>[^/]+)/outputs/(?P<output>[^/]+)(?:/paths/(?P<path>.*))?"
)
# Substitution is textual: a path with whitespace or shell syntax would change the command.
_SHELL_SAFE = re.compile(r"[\w./+@:=,-]+")
_LOCALHOST = "127.0.0.1"
_POLL_S = 0.2
_MLFLOW_RUN_TIMEOUT_S = 120
_LOG_TAIL = 3000
# Run in the trainer image: the job's run, in the store MLFLOW_TRACKING_URI names; prints its id.
_CREATE_MLFLOW_RUN = """
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient()
experiment = client.get_experiment_by_name(sys.argv[1])
experiment_id = experiment.experiment_id if experiment else client.create_experiment(sys.argv[1])
print(client.create_run(experiment_id, run_name=sys.argv[2]).info.run_id)
"""


class JobContractError(ValueError):
    """The planned job, its data or its registered model do not fit together; the message names
    the field and what it should be."""


class JobFailed(RuntimeError):
    """The job ran and failed (or ran past its time); the message has the end of its log."""


@dataclass
class JobResult:
    outputs: dict[str, Path]  # output name -> its folder
    env: dict[str, str]  # what the (rank-0) process saw: the image's environment and the job's
    command: str  # after substitution
    log: Path  # the (rank-0) process's stdout and stderr


@dataclass(frozen=True)
class _Layout:
    """One job's folders, after the runtime's `/mnt/azureml/cr/j/<job>/...`."""

    root: Path

    @property
    def data(self) -> Path:
        # Azure ML's own components find inputs at $AZUREML_CR_DATA_CAPABILITY_PATH/INPUT_<name>
        # and outputs at $AZUREML_CR_DATA_CAPABILITY_PATH/<name> (Azure/azureml-assets
        # assets/training/finetune_acft_hf_nlp/environments/acpt/context/finetune_run.py,
        # decode_input_from_env_var / decode_output_from_env_var).
        return self.root / "cap" / "data-capability" / "wd"

    @property
    def working_dir(self) -> Path:
        # The command runs in the job's `code` snapshot (Azure/azureml-examples
        # cli/jobs/basics/hello-code.yml: `command: ls` with `code: src` lists it); this job has
        # no code, so an empty folder, not the image's WORKDIR.
        return self.root / "exe" / "wd"

    @property
    def logs(self) -> Path:
        return self.root / "user_logs"


def run_planned_job(
    run: OfflineRun,
    data: Mapping[str, Path],
    trainer: ImageEnv,
    workdir: Path,
    *,
    timeout_s: float,
) -> JobResult:
    """Run the plan's job with `data` (input name -> the local file the plan uploads for it) in
    the `trainer` image's environment, under `workdir` (a previous run's job folder and MLflow
    store there are removed first). JobContractError before anything runs if the plan, the data
    and the runtime do not fit together; JobFailed if the job fails or runs past `timeout_s`."""
    job = _planned_job(run)
    name, properties = str(job.inputs["id"]), job.inputs["properties"]
    _check_model_uri(run, name, properties.get("outputs") or {})
    check_azure_ml_tracking(trainer, run, name)
    processes = _processes(properties)
    layout = _Layout(workdir / "cr" / "j" / name)
    mlruns = workdir / "mlruns"
    for previous in (layout.root, mlruns):
        _clear(previous)
    inputs = _deliver_inputs(run, name, properties.get("inputs") or {}, data, layout)
    outputs = _output_folders(name, properties.get("outputs") or {}, layout)
    command = _substitute(name, properties["command"], inputs, outputs)
    layout.working_dir.mkdir(parents=True)
    layout.logs.mkdir(parents=True)
    env = {
        **_job_variables(job, layout),
        **_mlflow_variables(trainer, mlruns, properties),
        # "Dictionary of environment variable key-value pairs to set on the process where the
        # command is executed" (reference-yaml-job-command.md, `environment_variables`); the
        # job's own settings win over the runtime's here.
        **{k: str(v) for k, v in (properties.get("environmentVariables") or {}).items()},
    }
    argv = _shell(command, [path.parent for path in inputs.values()])
    logs = _run_processes(trainer, name, argv, env, processes, layout, timeout_s)
    return JobResult(
        outputs, {**trainer.env, **env, **_rank_variables(processes[0])}, command, logs[0]
    )


def azure_ml_tracking_uri(region: str, workspace_id: str) -> str:
    """The MLflow tracking URI Azure ML gives a job of the workspace `workspace_id` (ARM id):
    azureml://<region>.api.azureml.ms/mlflow/v1.0<workspace id> (MicrosoftDocs/azure-ai-docs
    articles/machine-learning/includes/machine-learning-mlflow-configure-tracking.md)."""
    return f"azureml://{region}.api.azureml.ms/mlflow/v1.0{workspace_id}"


def check_azure_ml_tracking(trainer: ImageEnv, run: OfflineRun, job_name: str) -> None:
    """The trainer image must turn the real job's `azureml://` tracking URI into Azure ML's
    MLflow stores: without the azureml-mlflow plugin `trainer.train()` fails at once in Azure
    (UnsupportedModelRegistryStoreURIException). Checked offline (every socket refused) by
    building the stores the trainer's MLflow callback builds, with the variables azureml-mlflow
    reads in a job (azureml/mlflow/_internal/service_context_loader.py, _mlflow_env_vars_set)."""
    project = run.named("project")
    uri = azure_ml_tracking_uri(str(project.inputs["location"]), str(project.id))
    env = {
        **trainer.env,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_TRACKING_TOKEN": _unsigned_token(),
        "MLFLOW_RUN_ID": job_name,
        "MLFLOW_EXPERIMENT_NAME": "rehearsal-probe",
    }
    probe = Path(__file__).with_name("mlflow_store_probe.py")
    result = subprocess.run(
        [str(trainer.python), str(probe)], env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise JobContractError(
            f"contract: MLflow: the trainer image cannot use the tracking URI Azure ML gives the "
            f"job ({uri}); add azureml-mlflow to training_image/requirements.txt. Its error: "
            f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else '?'}"
        )


def _unsigned_token() -> str:
    """A token shaped like a job's: azureml-mlflow reads its `exp` without verifying it."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'exp': int(time.time()) + 3600})}.c2ln"


def _substitute(
    job: str, command: str, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> str:
    """`command` with each `${{inputs.<name>}}` / `${{outputs.<name>}}` replaced by its path, as
    Azure ML resolves data inputs to their mount or download path and outputs to theirs
    (reference-yaml-core-syntax.md); any other expression or an undeclared name is refused, as
    Azure ML refuses the job."""
    contexts = {"inputs": inputs, "outputs": outputs}

    def resolve(match: re.Match[str]) -> str:
        binding = _BINDING.fullmatch(match[1])
        if binding is None:
            raise JobContractError(
                f"job {job}: the command uses {match[0]}, but a command job binds only "
                "${{inputs.<name>}} and ${{outputs.<name>}}"
            )
        context, key = binding[1], binding[2]
        declared = contexts[context]
        if key not in declared:
            raise JobContractError(
                f"job {job}: the command uses {match[0]}, but the job declares no {context[:-1]} "
                f"'{key}' (its {context}: {', '.join(sorted(declared)) or 'none'})"
            )
        return str(declared[key])

    return _EXPRESSION.sub(resolve, command)


def _planned_job(run: OfflineRun) -> PlannedResource:
    jobs = run.of_type(JOB)
    if len(jobs) != 1:
        raise JobContractError(
            f"the plan registers {len(jobs)} Azure ML jobs; a rehearsal needs exactly one "
            "(a stack with the `train` stage)"
        )
    job = jobs[0]
    if job.inputs["properties"].get("jobType") != "Command":
        raise JobContractError(f"job {job.inputs['id']}: only command jobs are rehearsed")
    return job


def _check_model_uri(run: OfflineRun, job: str, outputs: Mapping[str, Any]) -> None:
    """A model version registered from a job output must name this job and one of its outputs:
    checked before the job runs (that the path is there after is the deployment's to check)."""
    for version in run.of_type(MODEL_VERSION):
        uri = str(version.inputs["properties"].get("modelUri", ""))
        match = JOB_OUTPUT_URI.fullmatch(uri)
        if match is None:
            continue
        if match["job"] != job:
            raise JobContractError(
                f"contract: model URI: {uri} (model {version.inputs['name']}) names job "
                f"'{match['job']}', but the planned job is '{job}'"
            )
        if match["output"] not in outputs:
            raise JobContractError(
                f"contract: model URI: {uri} (model {version.inputs['name']}) names output "
                f"'{match['output']}', but job {job} declares outputs: {', '.join(outputs)}"
            )


def _deliver_inputs(
    run: OfflineRun,
    job: str,
    inputs: Mapping[str, Any],
    data: Mapping[str, Path],
    layout: _Layout,
) -> dict[str, Path]:
    """Each input as a read-only file at INPUT_<name>/<blob's file name>: a mounted uri_file is
    the file itself ("A folder is mounted as a folder and a file is mounted as a file. Azure
    Machine Learning resolves the input to the mount path", reference-yaml-job-command.md)."""
    delivered = {}
    for name, spec in inputs.items():
        field = f"job {job}: input '{name}'"
        _require_delivery(
            field, spec, "jobInputType", "uri_file", "ReadOnlyMount", "delivers uri_file inputs"
        )
        data_uri = _data_uri(run, field, str(spec.get("uri")))
        upload = _upload_to(run, field, data_uri)
        if name not in data:
            raise JobContractError(f"{field}: no local file given for it (data['{name}'])")
        sent = read_as_sent(data[name])
        if hashlib.sha256(sent).hexdigest() != upload.inputs["sha256"]:
            raise JobContractError(
                f"{field}: {data[name]} is not the file the plan uploads to {data_uri} "
                f"({upload.inputs['path']})"
            )
        target = layout.data / f"INPUT_{name}" / PurePosixPath(urlparse(data_uri).path).name
        _shell_safe(field, target)
        target.parent.mkdir(parents=True)
        target.write_bytes(sent)  # what the blob holds: the file as uploaded
        _make_read_only(target.parent)
        delivered[name] = target
    return delivered


def _require_delivery(
    field: str, spec: Mapping[str, Any], type_key: str, kind: str, mode: str, what: str
) -> None:
    """The one kind and mode of input or output the rehearsal lays out."""
    if spec.get(type_key) != kind or spec.get("mode") != mode:
        raise JobContractError(
            f"{field} is {spec.get(type_key)} / {spec.get('mode')}; the rehearsal {what} in "
            f"{mode} mode"
        )


def _data_uri(run: OfflineRun, field: str, asset_id: str) -> str:
    # A job input names the data version by its ARM id (TrainingData,
    # phi3_infra/components/data.py).
    versions = [v for v in run.of_type(DATA_VERSION) if v.id == asset_id]
    if not versions:
        raise JobContractError(f"{field} names {asset_id}, which is no data version of the plan")
    return str(versions[0].inputs["properties"]["dataUri"])


def _upload_to(run: OfflineRun, field: str, url: str) -> PlannedResource:
    uploads = [r for r in run.resources if r.inputs.get("url") == url and "sha256" in r.inputs]
    if not uploads:
        raise JobContractError(f"{field}: its data version points at {url}, which nothing uploads")
    return uploads[0]


def _output_folders(job: str, outputs: Mapping[str, Any], layout: _Layout) -> dict[str, Path]:
    folders = {}
    for name, spec in outputs.items():
        field = f"job {job}: output '{name}'"
        _require_delivery(
            field, spec, "jobOutputType", "uri_folder", "ReadWriteMount", "gives uri_folder outputs"
        )
        folder = layout.data / name
        _shell_safe(field, folder)
        folder.mkdir(parents=True)
        folders[name] = folder
    return folders


def _job_variables(job: PlannedResource, layout: _Layout) -> dict[str, str]:
    """What Azure ML sets for every job of this workspace, from the plan."""
    properties = job.inputs["properties"]
    variables = {
        # Read from a job's environment by Microsoft's own clients: azureml-mlflow
        # 1.62.0.post6 (in the trainer image) azureml/mlflow/_common/constants.py, RunEnvVars.
        # A job's run id is its name (how-to-manage-models.md uses azureml://jobs/<run-id> and
        # azureml://jobs/<job-name> for the same URI).
        "AZUREML_RUN_ID": str(job.inputs["id"]),
        "AZUREML_ARM_SUBSCRIPTION": str(job.id).split("/")[2],
        "AZUREML_ARM_RESOURCEGROUP": str(job.inputs["resourceGroupName"]),
        "AZUREML_ARM_WORKSPACE_NAME": str(job.inputs["workspaceName"]),
        "AZUREML_ARM_PROJECT_NAME": str(properties["experimentName"]),
        # Azure/azureml-assets finetune_run.py reads inputs and outputs under it (_Layout.data).
        "AZUREML_CR_DATA_CAPABILITY_PATH": str(layout.data),
    }
    identity = properties.get("identity") or {}
    if identity.get("identityType") == "Managed" and identity.get("clientId"):
        # "get the user-assigned identity's client ID through the DEFAULT_IDENTITY_CLIENT_ID
        # environment variable" (how-to-identity-based-service-authentication.md, "Compute
        # cluster"); a serverless job uses the workspace's user-assigned identity its `identity`
        # names (how-to-use-serverless-compute.md, "Identity support and credential passthrough").
        variables["DEFAULT_IDENTITY_CLIENT_ID"] = str(identity["clientId"])
    return variables


def _mlflow_variables(
    trainer: ImageEnv, store: Path, properties: Mapping[str, Any]
) -> dict[str, str]:
    """MLflow's variables as a job has them, pointing at a local store (module docstring):
    MLFLOW_TRACKING_URI (jobs are "automatically" tracked in the workspace, how-to-use-mlflow-
    cli-runs.md), MLFLOW_EXPERIMENT_NAME (the job's `experiment_name`) and MLFLOW_RUN_ID, the run
    Azure ML made for the job and names after its display name (same article, "Configure the
    job name"); azureml-mlflow reads those from the job (_internal/service_context_loader.py,
    _mlflow_env_vars_set). No MLFLOW_TRACKING_TOKEN: there is no server to present it to."""
    experiment = str(properties["experimentName"])
    tracking = {"MLFLOW_TRACKING_URI": store.resolve().as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    store.mkdir(parents=True)
    created = trainer.popen(
        ["python", "-c", _CREATE_MLFLOW_RUN, experiment, str(properties["displayName"])],
        extra_env=tracking,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = created.communicate(timeout=_MLFLOW_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        created.kill()
        stdout, stderr = created.communicate()
    if created.returncode != 0:
        raise JobFailed(f"creating the job's MLflow run in the trainer image failed:\n{stderr}")
    return tracking | {"MLFLOW_EXPERIMENT_NAME": experiment, "MLFLOW_RUN_ID": stdout.split()[-1]}


@dataclass(frozen=True)
class _Process:
    node: int
    local_rank: int
    per_node: int
    nodes: int
    distributed: bool
    master_port: int

    @property
    def rank(self) -> int:
        return self.node * self.per_node + self.local_rank


def _processes(properties: Mapping[str, Any]) -> list[_Process]:
    """One process per node, or processCountPerInstance per node for a PyTorch distribution
    (reference-yaml-job-command.md: `resources.instance_count`, PyTorchConfiguration)."""
    nodes = int((properties.get("resources") or {}).get("instanceCount") or 1)
    distribution = properties.get("distribution") or {}
    if distribution and distribution.get("distributionType") != "PyTorch":
        raise JobContractError(
            f"distribution {distribution.get('distributionType')}: only PyTorch is rehearsed"
        )
    per_node = int(distribution.get("processCountPerInstance") or 1)
    port = free_port()
    return [
        _Process(node, local, per_node, nodes, bool(distribution), port)
        for node in range(nodes)
        for local in range(per_node)
    ]


def _rank_variables(process: _Process) -> dict[str, str]:
    """For a PyTorch distribution, "Azure Machine Learning sets the MASTER_ADDR, MASTER_PORT,
    WORLD_SIZE, and NODE_RANK environment variables on each node, and sets the process-level RANK
    and LOCAL_RANK environment variables" (how-to-train-distributed-gpu.md, "PyTorch")."""
    if not process.distributed:
        return {}
    return {
        "MASTER_ADDR": _LOCALHOST,  # the host of rank 0: every node is this machine
        "MASTER_PORT": str(process.master_port),  # "A free port on the machine" of rank 0
        "WORLD_SIZE": str(process.nodes * process.per_node),
        "NODE_RANK": str(process.node),
        "RANK": str(process.rank),
        "LOCAL_RANK": str(process.local_rank),
    }


def _run_processes(
    trainer: ImageEnv,
    job: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    processes: Sequence[_Process],
    layout: _Layout,
    timeout_s: float,
) -> list[Path]:
    """Start every process, wait for all; the first failure (or the deadline) stops the rest,
    as a failed process fails an Azure ML job. Returns each process's log, rank 0 first."""
    logs = [
        layout.logs / ("std_log.txt" if len(processes) == 1 else f"std_log_{p.rank}.txt")
        for p in processes
    ]
    running = []
    for process, log in zip(processes, logs, strict=True):
        with log.open("wb") as sink:
            running.append(
                trainer.popen(
                    argv,
                    extra_env={**env, **_rank_variables(process)},
                    cwd=layout.working_dir,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its group: the shell and everything it starts
                )
            )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            codes = [child.poll() for child in running]
            failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
            if failed is not None:
                raise _failure(job, logs[failed], f"exited with {codes[failed]}")
            if None not in codes:
                return logs
            if time.monotonic() > deadline:
                raise _failure(job, logs[0], f"ran past {timeout_s:.0f} s")
            time.sleep(_POLL_S)
    finally:
        # The job ends with its container: whatever a process left running goes too.
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _failure(job: str, log: Path, what: str) -> JobFailed:
    tail = log.read_text(errors="replace")[-_LOG_TAIL:]
    return JobFailed(f"job {job}: the command {what}; the end of {log}:\n{tail}")


def _shell(command: str, read_only: Sequence[Path]) -> list[str]:
    """`/bin/bash -c <command>` (Azure ML runs the command in a shell: environment variables
    expand in it, Azure/azureml-examples cli/jobs/basics/hello-world-env-var.yml). Root ignores
    file modes, and the trainer image runs as root; a read-only mount ("Mount storage location,
    as read-only", how-to-read-write-data-v2.md, "Modes") refuses root too, so for root the
    `read_only` folders are also bind-mounted read-only, in a mount namespace of the command's."""
    argv = ["/bin/bash", "-c", command]
    if os.geteuid() != 0 or not read_only:
        return argv
    mounts = " && ".join(
        f"mount --bind -o ro {shlex.quote(str(p))} {shlex.quote(str(p))}" for p in read_only
    )
    unshare = shutil.which("unshare")
    if unshare is None:
        raise _no_read_only_mount("util-linux's `unshare` is not installed")
    wrapped = [
        *(unshare, "--mount", "--propagation", "private", "--"),
        *("/bin/sh", "-c", f'{mounts} && exec "$@"', "sh"),
    ]
    probe = subprocess.run([*wrapped, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise _no_read_only_mount(probe.stderr.strip())
    return [*wrapped, *argv]


def _no_read_only_mount(why: str) -> JobFailed:
    return JobFailed(
        "cannot deliver the job's inputs read-only: as root, file modes do not bind and a "
        f"read-only bind mount was refused ({why}); run the rehearsal as a user other than "
        "root, or as root with CAP_SYS_ADMIN"
    )


def _make_read_only(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        path.chmod(0o555 if path.is_dir() else 0o444)


def _clear(folder: Path) -> None:
    """Remove a previous run's folder, read-only inputs included."""
    if folder.exists():
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(folder)


def _shell_safe(field: str, path: Path) -> None:
    if not _SHELL_SAFE.fullmatch(str(path)):
        raise JobContractError(
            f"{field}: its local path {path} has whitespace or shell syntax, which the textual "
            "${{...}} substitution would pass to the shell; use a workdir without them"
        )
