"""Register the planned model and run the planned online deployment on this machine, as a managed
online endpoint runs a custom container.

From the offline plan: the ModelVersion's `modelUri` is resolved against the job's output folders,
the model is laid out read-only as the deployment mounts it, the server image's ENTRYPOINT starts
with the image's ENV, the deployment's `environmentVariables` and what Azure ML sets
(`AZUREML_MODEL_DIR`), the planned probes are waited on at the environment's inferenceConfig
routes, and a local gateway (gateway.py) applies the endpoint's auth and the deployment's request
settings. Every contract between the plan and the server is checked on the way and named when it
breaks: the model URI's path, each environment variable the server must read and accept, the
routes' port and the probes' routes.

Sources, MicrosoftDocs/azure-ai-docs articles/machine-learning/:
- how-to-manage-models.md, supported paths: `azureml://jobs/<job-name>/outputs/<output-name>/
  paths/<path-to-model-relative-to-the-named-output-location>`.
- how-to-deploy-custom-container.md, "Locating the mounted model": a model registered as *foo*
  version *1* is at /var/azureml-app/azureml-models/foo/1 in the container;
  concept-online-deployment-model-specification.md: `AZUREML_MODEL_DIR` points there ("the folder
  containing the root of the model artifacts"), and a registered folder keeps its own name under
  it (`models/...` for a folder `models/`). That last rule is documented for local folders and
  assumed for a job output's folder; the server searches four levels down either way.
  `AZUREML_MODEL_DIR` is the only variable Azure documents setting in a custom container.
- reference-yaml-deployment-managed-online.md, ProbeSettings: initial_delay, period, timeout,
  success_threshold, failure_threshold ("the system will try failure_threshold times before
  giving up"); the ARM properties carry them as ISO 8601 durations (`PT10S`).
- how-to-deploy-custom-container.md, "Inference config": the port and path of the liveness,
  readiness and scoring routes; probes follow Kubernetes' (same article links its probe docs):
  an HTTP probe succeeds on 200 <= status < 400 (kubernetes/kubernetes pkg/probe/http,
  DoHTTPProbe).

What differs on this machine, on purpose: the container's port is published on a free loopback
port (as `docker run -p 127.0.0.1:<free>:<port>` would), through the server's own listen settings;
probes start at once and repeat every POLL_S instead of after initialDelay every period (a ready
server is found sooner; one that never gets ready still fails at the planned limit,
initialDelay + failureThreshold x period); a probe answered 404 fails at once, since a missing
route never appears. The image's USER is not switched to; the model folder is read-only instead.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from phi3_infra.components.serving import openai_base_url
from phi3_infra.tooling.offline import OfflineRun, PlannedResource
from phi3_rehearsal.gateway import (
    SCORING_URI_PATH,
    AuthMode,
    BackgroundServer,
    EndpointRules,
    start_gateway,
)
from phi3_rehearsal.images import ImageEnv
from phi3_rehearsal.job import JOB_OUTPUT_URI
from phi3_rehearsal.ports import free_port

ML = "azure-native:machinelearningservices"
MODEL_MOUNT = "azureml-models"  # /var/azureml-app/azureml-models, under the workdir here
ROUTES = ("livenessRoute", "readinessRoute", "scoringRoute")
# The server's own settings for where it listens (serving_image/README.md): how the rehearsal
# publishes the container's port on loopback.
SERVER_HOST_VARIABLE, SERVER_PORT_VARIABLE = "PHI3_SERVER_HOST", "PHI3_SERVER_PORT"
POLL_S = 0.1
STOP_GRACE_S = 10.0
_LOG_TAIL = 3000
_ISO_DURATION = re.compile(
    r"P(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)
# Run in the server image's environment: which planned variables are settings of the server,
# whether it accepts their values, and the port it will listen on.
_SETTINGS_PROBE = """
import json, sys
from pydantic import ValidationError
from phi3_server.settings import Settings
prefix = Settings.model_config["env_prefix"]
names = json.loads(sys.argv[1])
unread = [n for n in names if n.upper().startswith(prefix)
          and n[len(prefix):].lower() not in Settings.model_fields]
try:
    port, rejected = Settings().port, []
except ValidationError as error:
    port = None
    rejected = [f"{prefix}{str(p['loc'][0]).upper()}: {p['msg']}" for p in error.errors()]
print(json.dumps({"prefix": prefix, "unread": unread, "rejected": rejected, "port": port}))
"""


class DeploymentFailed(RuntimeError):
    """The planned deployment does not run as planned; the message names the contract."""


def iso_duration_s(text: str, key: str) -> float:
    """`PT10S`, `PT0.5S`, `PT1M30S`, `P1DT2H` -> seconds."""
    match = _ISO_DURATION.fullmatch(text)
    if not match or text in ("P", "PT"):
        raise DeploymentFailed(f"{key}: {text!r} is not an ISO 8601 duration like 'PT10S'")
    parts = {name: float(value) for name, value in match.groupdict(default="0").items()}
    return parts["days"] * 86400 + parts["hours"] * 3600 + parts["minutes"] * 60 + parts["seconds"]


@dataclass(frozen=True)
class Probe:
    name: str  # livenessProbe | readinessProbe
    path: str
    port: int
    initial_delay_s: float
    period_s: float
    timeout_s: float
    success_threshold: int
    failure_threshold: int

    @property
    def limit_s(self) -> float:
        """How long Azure keeps probing before it gives up on the container."""
        return self.initial_delay_s + self.failure_threshold * self.period_s

    def describe(self) -> str:
        return f"{self.name} GET {self.path} on port {self.port}"


@dataclass(frozen=True)
class PlannedServing:
    """The serve stage's resources as the plan registers them (ARM wire names)."""

    endpoint: PlannedResource
    deployment: PlannedResource
    environment: PlannedResource
    model: PlannedResource

    @classmethod
    def from_run(cls, run: OfflineRun) -> PlannedServing:
        deployments = run.of_type(f"{ML}:OnlineDeployment")
        if len(deployments) != 1:
            raise DeploymentFailed(
                f"the plan has {len(deployments)} online deployments; the rehearsal needs one "
                "(is 'serve' in phi3-foundry:stages?)"
            )
        (deployment,) = deployments
        properties = deployment.inputs["properties"]
        by_id = {resource.id: resource for resource in run.resources if resource.id}
        model = by_id.get(properties.get("model"))
        if model is None or model.type != f"{ML}:ModelVersion":
            raise DeploymentFailed(
                f"the deployment's model {properties.get('model')} is not registered by this "
                "plan (a modelReference?): the rehearsal serves the model of the planned job"
            )
        (endpoint,) = [
            resource
            for resource in run.of_type(f"{ML}:OnlineEndpoint")
            if resource.inputs["endpointName"] == deployment.inputs["endpointName"]
        ]
        return cls(endpoint, deployment, by_id[properties["environmentId"]], model)

    @property
    def environment_variables(self) -> dict[str, str]:
        variables = self.deployment.inputs["properties"].get("environmentVariables") or {}
        return {str(name): str(value) for name, value in variables.items()}

    def route(self, kind: str) -> tuple[str, int]:
        route = self.environment.inputs["properties"]["inferenceConfig"][kind]
        return str(route["path"]), int(route["port"])

    def probe(self, name: str, route_kind: str) -> Probe:
        settings = self.deployment.inputs["properties"][name]
        path, port = self.route(route_kind)

        def duration(key: str) -> float:
            return iso_duration_s(settings[key], f"properties.{name}.{key}")

        return Probe(
            name=name,
            path=path,
            port=port,
            initial_delay_s=duration("initialDelay"),
            period_s=duration("period"),
            timeout_s=duration("timeout"),
            success_threshold=int(settings.get("successThreshold", 1)),
            failure_threshold=int(settings["failureThreshold"]),
        )

    @property
    def auth_mode(self) -> AuthMode:
        planned = self.endpoint.inputs["properties"]["authMode"]
        try:
            return AuthMode(planned)
        except ValueError:
            raise DeploymentFailed(
                f"endpoint authMode {planned!r} is not rehearsed; known: "
                f"{[mode.value for mode in AuthMode]}"
            ) from None

    def endpoint_rules(self, keys: tuple[str, ...]) -> EndpointRules:
        requests = self.deployment.inputs["properties"]["requestSettings"]
        return EndpointRules(
            auth_mode=self.auth_mode,
            keys=keys,
            scoring_path=self.route("scoringRoute")[0],
            request_timeout_s=iso_duration_s(
                requests["requestTimeout"], "properties.requestSettings.requestTimeout"
            ),
            max_concurrent_requests_per_instance=int(requests["maxConcurrentRequestsPerInstance"]),
        )


def model_source(model: PlannedResource, job_outputs: Mapping[str, Path]) -> Path:
    """The folder the ModelVersion's modelUri names, among the job's output folders."""
    uri = str(model.inputs["properties"]["modelUri"])
    match = JOB_OUTPUT_URI.fullmatch(uri)
    if match is None or not match["path"]:
        raise DeploymentFailed(
            f"contract: model URI: {uri} is not azureml://jobs/<job>/outputs/<output>/paths/<path>"
        )
    job = model.inputs["properties"].get("jobName")
    if job is not None and job != match["job"]:
        raise DeploymentFailed(f"contract: model URI: {uri} names job {match['job']}, not {job}")
    output = job_outputs.get(match["output"])
    if output is None:
        raise DeploymentFailed(
            f"contract: model URI: {uri} names output {match['output']!r}; the job's outputs "
            f"are {sorted(job_outputs)}"
        )
    folder = output / match["path"].strip("/")
    if not folder.is_dir():
        written = sorted(entry.name for entry in output.iterdir()) if output.is_dir() else []
        raise DeploymentFailed(
            f"contract: model URI: {uri} is {folder}, which the job did not write; its output "
            f"{match['output']!r} holds {written}"
        )
    return folder


def _make_writable(path: Path) -> None:
    for entry in [path, *path.rglob("*")]:
        if not entry.is_symlink():
            entry.chmod(entry.stat().st_mode | stat.S_IWUSR)


def mount_model(model: PlannedResource, source: Path, workdir: Path) -> Path:
    """Copy `source` read-only to <workdir>/azureml-models/<name>/<version>/<folder name>/ and
    return the folder standing for AZUREML_MODEL_DIR (module docstring)."""
    model_dir = workdir / MODEL_MOUNT / str(model.inputs["name"]) / str(model.inputs["version"])
    if model_dir.exists():
        _make_writable(model_dir)
        shutil.rmtree(model_dir)
    shutil.copytree(source, model_dir / source.name)
    for entry in sorted(model_dir.rglob("*"), reverse=True):  # files before their folders
        if not entry.is_symlink():
            entry.chmod(entry.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return model_dir


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-_LOG_TAIL:] if log.exists() else ""


def check_server_settings(
    server: ImageEnv,
    environment: Mapping[str, str],
    planned: Mapping[str, str],
    serving: PlannedServing,
) -> None:
    """The server reads every planned variable meant for it, rejects none, and listens on the
    port of every inferenceConfig route."""
    result = subprocess.run(
        [str(server.python), "-c", _SETTINGS_PROBE, json.dumps(sorted(planned))],
        env=dict(environment),
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise DeploymentFailed(
            f"cannot read the server's settings in the {server.name} image's environment:\n"
            f"{result.stderr[-_LOG_TAIL:]}"
        )
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    where = "the deployment's environmentVariables"
    if found["unread"]:
        raise DeploymentFailed(
            f"contract: {where}: {', '.join(found['unread'])} is not a setting of the server "
            f"(serving_image/phi3_server/settings.py reads {found['prefix']}<field>): it would be "
            "ignored"
        )
    if found["rejected"]:
        raise DeploymentFailed(
            f"contract: {where}: the server rejects {'; '.join(found['rejected'])}"
        )
    elsewhere = [
        f"{kind}.port {port} ({path})"
        for kind in ROUTES
        for path, port in [serving.route(kind)]
        if port != found["port"]
    ]
    if elsewhere:
        raise DeploymentFailed(
            f"contract: environment {serving.environment.inputs['name']}'s inferenceConfig has "
            f"{', '.join(elsewhere)}, but the server listens on {found['port']} "
            f"({found['prefix']}PORT, from the image's ENV and the deployment's variables)"
        )


def _probe_once(url: str, timeout_s: float) -> int | None:
    try:
        return httpx.get(url, timeout=timeout_s).status_code
    except httpx.HTTPError:
        return None


def wait_for_probe(
    probe: Probe, base_url: str, process: subprocess.Popen[bytes], started: float, log: Path
) -> None:
    """Until `probe` succeeds success_threshold times in a row, or fail naming it."""
    successes, last = 0, None
    while time.monotonic() - started < probe.limit_s:
        if process.poll() is not None:
            raise DeploymentFailed(
                f"the server exited with code {process.returncode} before its {probe.describe()} "
                f"succeeded; its log ends:\n{_tail(log)}"
            )
        last = _probe_once(f"{base_url}{probe.path}", probe.timeout_s)
        if last == 404:
            raise DeploymentFailed(
                f"contract: {probe.describe()} answered 404: the server has no such route, so "
                "the deployment would never become ready (the environment's inferenceConfig)"
            )
        successes = successes + 1 if last is not None and 200 <= last < 400 else 0
        if successes >= probe.success_threshold:
            return
        time.sleep(POLL_S)
    raise DeploymentFailed(
        f"{probe.describe()} did not succeed within {probe.limit_s:g} s (initialDelay "
        f"{probe.initial_delay_s:g} s + failureThreshold {probe.failure_threshold} x period "
        f"{probe.period_s:g} s); last answer: {last or 'no connection'}; the server's log ends:\n"
        f"{_tail(log)}"
    )


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """As a container runtime stops a container: SIGTERM, then SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class RunningDeployment:
    """The started deployment behind its gateway; `stop()` (or leaving the `with`) ends both."""

    base_url: str  # the server, on its published loopback port
    gateway_url: str
    scoring_uri: str
    openai_base_url: str
    api_key: str | None  # the endpoint's primary key; None in aadToken mode
    model_dir: Path  # what AZUREML_MODEL_DIR names
    environment: dict[str, str]  # the server process's environment
    process: subprocess.Popen[bytes]
    log: Path
    _gateway: BackgroundServer

    def stop(self) -> None:
        self._gateway.stop()
        _stop_process(self.process)

    def __enter__(self) -> RunningDeployment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _endpoint_keys(run: OfflineRun, auth_mode: AuthMode) -> tuple[str, ...]:
    """The keys `pulumi up` exports for a key endpoint (program.py: primaryKey, secondaryKey)."""
    if auth_mode is not AuthMode.KEY:
        return ()
    keys = tuple(
        str(run.outputs[name]) for name in ("primaryKey", "secondaryKey") if name in run.outputs
    )
    if not keys:
        raise DeploymentFailed("a key endpoint, but the plan exports no primaryKey/secondaryKey")
    return keys


def deploy_planned(
    run: OfflineRun,
    job_outputs: Mapping[str, Path],
    server: ImageEnv,
    workdir: Path,
    *,
    host_env: Mapping[str, str] | None = None,
) -> RunningDeployment:
    """Lay out the planned model, start the planned deployment in `server`'s environment, wait
    on its probes and put the endpoint's gateway in front (module docstring).

    `host_env`: settings of this machine rather than of the plan (OMP_NUM_THREADS on shared
    cores), given to the server under the planned ones and never checked as planned."""
    serving = PlannedServing.from_run(run)
    rules = serving.endpoint_rules(_endpoint_keys(run, serving.auth_mode))
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = mount_model(serving.model, model_source(serving.model, job_outputs), workdir)
    planned = serving.environment_variables
    # What the container gets besides the image's ENV: `docker run -e` or, on Azure, the
    # deployment's environmentVariables and AZUREML_MODEL_DIR.
    added = {**(host_env or {}), **planned, "AZUREML_MODEL_DIR": str(model_dir)}
    check_server_settings(server, {**server.env, **added}, planned, serving)
    port = free_port()
    added |= {SERVER_HOST_VARIABLE: "127.0.0.1", SERVER_PORT_VARIABLE: str(port)}
    log = workdir / "server.log"
    with log.open("wb") as output:
        process = server.popen([], extra_env=added, stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        for name, route in (
            ("livenessProbe", "livenessRoute"),
            ("readinessProbe", "readinessRoute"),
        ):
            wait_for_probe(serving.probe(name, route), base_url, process, started, log)
        gateway = start_gateway(rules, base_url)
    except BaseException:
        _stop_process(process)
        raise
    scoring_uri = f"{gateway.url}{SCORING_URI_PATH}"
    return RunningDeployment(
        base_url=base_url,
        gateway_url=gateway.url,
        scoring_uri=scoring_uri,
        openai_base_url=openai_base_url(scoring_uri),
        api_key=rules.keys[0] if rules.keys else None,
        model_dir=model_dir,
        environment={**server.env, **added},
        process=process,
        log=log,
        _gateway=gateway,
    )
