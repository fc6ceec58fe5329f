"""Each image's environment as its Dockerfile builds it (phi3_rehearsal.images): the settings of
the real Dockerfiles, Docker's expansion rules, the image's own packages, and its entrypoint run
through it with nothing of the dev venv's environment."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from phi3_rehearsal import images
from phi3_rehearsal.images import Image, ImageEnv, ImageSpecError, image_env, read_dockerfile

REPO_ROOT = Path(__file__).resolve().parents[2]
# moby/moby docs/sources/reference/run.md, "ENV (environment variables)": a container's PATH.
DOCKER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the Dockerfiles' ENV set and Docker adds (HOME, HOSTNAME); nothing else may reach them.
COMMON_ENV = {
    "PATH",
    "AZUREML_CONDA_ENVIRONMENT_PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "HF_HOME",
    "PYTHONPATH",
    "HOME",
    "HOSTNAME",
}
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def trainer() -> ImageEnv:
    return image_env("trainer")


@pytest.fixture(scope="module")
def server() -> ImageEnv:
    return image_env("server")


def _run(argv: list[str], env: ImageEnv) -> subprocess.CompletedProcess[str]:
    """`docker run --entrypoint ARGV[0] IMAGE ARGV[1:]`: past the ENTRYPOINT, in the container."""
    return subprocess.run(
        argv, env=env.env, cwd=env.workdir, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def _assert_runtime_layout(env: ImageEnv, folder: str) -> None:
    venv = env.python.parents[1]
    assert env.workdir == REPO_ROOT / folder
    assert env.env["PYTHONPATH"] == str(env.workdir)  # ENV PYTHONPATH=/app, WORKDIR /app
    assert env.env["PATH"] == f"{venv / 'bin'}:{DOCKER_PATH}"
    assert env.env["AZUREML_CONDA_ENVIRONMENT_PATH"] == str(venv)
    # HF_HOME=/tmp/huggingface: in a folder of the rehearsal's own, next to HOME, not the repo's.
    hf_home, home = Path(env.env["HF_HOME"]), Path(env.env["HOME"])
    assert hf_home.parts[-2:] == ("tmp", "huggingface") and hf_home.parents[1] == home.parent
    assert not hf_home.is_relative_to(REPO_ROOT) and home.is_dir()
    assert {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}.items() <= env.env.items()


def test_the_server_runs_its_dockerfiles_settings(server: ImageEnv) -> None:
    _assert_runtime_layout(server, "serving_image")
    assert set(server.env) == COMMON_ENV | {
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "PHI3_SERVER_HOST",
        "PHI3_SERVER_PORT",
        "PHI3_SERVER_DEVICE",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
    }
    assert {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PHI3_SERVER_HOST": "0.0.0.0",
        "PHI3_SERVER_PORT": "5001",
        "PHI3_SERVER_DEVICE": "cpu",  # the default build, TORCH_VARIANT=cpu
    }.items() <= server.env.items()
    assert server.entrypoint == ["python", "-m", "phi3_server"]
    assert server.cmd == []
    # `docker run IMAGE --help`: the arguments follow the ENTRYPOINT, python is the image's.
    assert server.command(["--help"]) == [str(server.python), "-m", "phi3_server", "--help"]


def test_the_trainer_runs_its_dockerfiles_settings(trainer: ImageEnv) -> None:
    _assert_runtime_layout(trainer, "training_image")
    assert set(trainer.env) == COMMON_ENV
    # No ENTRYPOINT: Azure ML runs the job's command as it is.
    assert trainer.entrypoint == [] and trainer.cmd == []
    assert trainer.command(["python", "-V"]) == [str(trainer.python), "-V"]


def test_the_server_image_runs_as_a_non_root_user_and_the_trainer_as_root(
    server: ImageEnv, trainer: ImageEnv
) -> None:
    assert server.user == "10001:10001"
    assert trainer.user is None


def test_env_workdir_user_and_entrypoint_are_expanded_as_docker_does(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM busybox AS build\n"
        "ENV FROM_BUILD_STAGE=1\n"
        "USER 1000\n"
        "FROM python:3.11-slim\n"
        "ARG TAG=v1\n"
        # Dockerfile reference, "Environment replacement": def=hello, ghi=bye.
        "ENV abc=hello\n"
        "ENV abc=bye def=$abc\n"
        "ENV ghi=${abc} TAGGED=/opt/$TAG \\\n"
        '    SPACED="a b"\n'
        "ENV PATH=/opt/env/bin:$PATH\n"
        "WORKDIR /srv\n"
        "WORKDIR $abc\n"
        "USER root:root\n"
        "ENTRYPOINT exec python -m srv\n"
        'CMD ["--verbose"]\n'
    )
    settings = read_dockerfile(dockerfile)
    assert settings.env == {
        "PATH": f"/opt/env/bin:{DOCKER_PATH}",
        "abc": "bye",
        "def": "hello",
        "ghi": "bye",
        "TAGGED": "/opt/v1",
        "SPACED": "a b",
    }
    assert str(settings.workdir) == "/srv/bye"
    assert settings.user is None
    assert settings.entrypoint == ["/bin/sh", "-c", "exec python -m srv"]
    assert settings.cmd == ["--verbose"]


def test_a_variable_modifier_is_refused_not_expanded_wrongly(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nENV HF_HOME=${XDG_CACHE_HOME:-/tmp}/hf\n")
    with pytest.raises(ImageSpecError, match=r"Dockerfile:2: \$\{VAR:-word\}"):
        read_dockerfile(dockerfile)


def test_an_image_whose_code_is_not_copied_into_its_workdir_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_dockerfile = (REPO_ROOT / "serving_image" / "Dockerfile").read_text()
    moved = server_dockerfile.replace(
        "COPY phi3_server ./phi3_server", "COPY phi3_server /srv/phi3_server"
    )
    assert moved != server_dockerfile
    (tmp_path / "Dockerfile").write_text(moved)
    monkeypatch.setitem(images.IMAGES, "server", Image(tmp_path, "phi3_server"))
    with pytest.raises(ImageSpecError, match=r"must `COPY phi3_server ./phi3_server` into"):
        image_env("server")


@pytest.mark.parametrize(
    ("image", "module"),
    [
        ("server", "openai"),  # the dev venv's client, not the server's
        ("trainer", "prometheus_client"),  # the server's metrics, not the trainer's
        ("trainer", "pulumi"),
    ],
)
def test_a_package_the_dev_venv_has_fails_in_the_image_that_lacks_it(
    image: str, module: str, request: pytest.FixtureRequest
) -> None:
    assert importlib.util.find_spec(module) is not None, f"the dev venv lacks {module}"
    env: ImageEnv = request.getfixturevalue(image)
    result = _run([str(env.python), "-c", f"import {module}"], env)
    assert result.returncode != 0
    assert f"No module named '{module}'" in result.stderr


@pytest.mark.parametrize(
    ("image", "package"), [("server", "phi3_server"), ("trainer", "phi3_trainer")]
)
def test_every_module_of_the_image_package_imports_in_its_image(
    image: str, package: str, request: pytest.FixtureRequest
) -> None:
    env: ImageEnv = request.getfixturevalue(image)
    importer = (
        f"import importlib, pkgutil, {package}\n"
        f"for module in pkgutil.iter_modules({package}.__path__, '{package}.'):\n"
        "    importlib.import_module(module.name)\n"
        f"print({package}.__file__)\n"
    )
    result = _run([str(env.python), "-c", importer], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(env.workdir / package / "__init__.py")


def test_the_server_entrypoint_runs_in_its_image_with_a_clean_environment(
    server: ImageEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHI3_SERVER_PORT", "1")  # the dev shell's: the image must not see it
    process = server.popen(["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, err
    assert out.startswith("usage: python -m phi3_server") and "--port" in out


def test_the_trainer_module_runs_in_its_image_with_a_clean_environment(
    trainer: ImageEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHI3_DEV_SHELL_ONLY", "1")
    argv = ["python", "-m", "phi3_trainer", "--help"]
    process = trainer.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, err
    assert out.startswith("usage: python -m phi3_trainer") and "--train_file" in out

    # The environment the process was started with (os.environ may gain LC_CTYPE: PEP 538).
    probe = (
        "import json, os, sys\n"
        "started = open('/proc/self/environ', 'rb').read().decode().split('\\0')\n"
        "env = dict(entry.split('=', 1) for entry in started if entry)\n"
        "print(json.dumps([env, sys.prefix, os.getcwd()]))\n"
    )
    process = trainer.popen(
        ["python", "-c", probe], extra_env={"AZUREML_RUN_ID": "run-1"}, stdout=subprocess.PIPE
    )
    seen, prefix, cwd = json.loads(process.communicate(timeout=TIMEOUT_S)[0])
    assert seen == {**trainer.env, "AZUREML_RUN_ID": "run-1"}
    assert Path(prefix) == trainer.python.parents[1] and Path(cwd) == trainer.workdir


def test_the_server_image_installs_exactly_its_pinned_set(server: ImageEnv) -> None:
    listing = _run([str(server.python), "-m", "pip", "list", "--format=json"], server)
    assert listing.returncode == 0, listing.stderr
    installed = {
        package["name"].lower().replace("_", "-"): package["version"]
        for package in json.loads(listing.stdout)
        if package["name"] not in ("pip", "setuptools")  # they come with the venv
    }
    lines = (REPO_ROOT / "serving_image" / "constraints.txt").read_text().splitlines()
    pins = (line.lower().replace("_", "-").partition("==") for line in lines)
    assert installed == {name: version for name, _, version in pins if not name.startswith("#")}
