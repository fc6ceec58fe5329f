"""Each image's runtime as its Dockerfile builds it, without Docker: its own packages, its ENV,
WORKDIR, USER and ENTRYPOINT/CMD.

The packages: a cached venv (phi3_rehearsal.venvs) from the image's requirements.txt and
constraints.txt alone, plus torch at the version the Dockerfile pins, from this machine's CPU
wheel (the Dockerfiles take the CUDA or CPU build from PyTorch's index; no resolve here may pick
another torch). So an import the dev venv satisfies but the image does not fails here too.

The settings: the final stage of the Dockerfile, read with dockerfile-parse and expanded as
Docker expands them. The base image's own configuration cannot be read without a registry, so
the stage starts from what Docker gives every container: its default PATH, and HOME and HOSTNAME
(moby/moby docs/sources/reference/run.md, "ENV (environment variables)"). Paths inside the image
become local ones: the WORKDIR is the image's folder in this repository (checked: the Dockerfile
copies the code package there under its own name), the environment the Dockerfile puts first on
PATH is the venv, Docker's default PATH directories stay the system's, and any other absolute
path (HF_HOME=/tmp/huggingface) lands under a fresh temporary folder standing for the
container's own filesystem. A non-root USER cannot be taken without root here; it is recorded.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter, extract_key_values

from phi3_infra.build_context import context_files
from phi3_rehearsal.venvs import REPO_ROOT, cached_venv, pip

# moby/moby docs/sources/reference/run.md, "ENV (environment variables)": Docker sets PATH to
# these directories unless the image sets it, HOME (from USER) and HOSTNAME.
DOCKER_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_DIRS = frozenset(PurePosixPath(entry) for entry in DOCKER_DEFAULT_PATH.split(":"))
# Same article, "USER" and "WORKDIR": a container runs as root in / unless the image says.
ROOT_USERS = frozenset({"0", "root"})
DEFAULT_WORKDIR = PurePosixPath("/")
# Dockerfile reference (docs.docker.com/reference/dockerfile/, "Environment replacement"): only
# ${variable:-word} and ${variable:+word} modify; dockerfile-parse expands neither.
MODIFIER = re.compile(r"\$\{\w+:[-+]")
TORCH_PIN = re.compile(r"\btorch==([\w.]+)(?:\+\w+)?")
NO_EXTRA_ENV: Mapping[str, str] = MappingProxyType({})


class ImageSpecError(ValueError):
    """A Dockerfile the rehearsal cannot stand in for; the message names the file and the fix."""


@dataclass(frozen=True)
class Image:
    """An image's build context in this repository and the code package its Dockerfile copies."""

    folder: Path
    package: str
    # Folders of the context that the Dockerfile installs with the requirements (local packages).
    local_packages: tuple[str, ...] = ()

    @property
    def dockerfile(self) -> Path:
        return self.folder / "Dockerfile"

    @property
    def requirements(self) -> tuple[Path, Path]:
        return self.folder / "requirements.txt", self.folder / "constraints.txt"

    @property
    def inputs(self) -> list[Path]:
        """All that the image's venv is built from: requirements.txt, constraints.txt and the
        local packages' files, as the build context sends them."""
        local = [
            self.folder / sent
            for sent in context_files(self.folder)
            if sent.split("/", 1)[0] in self.local_packages
        ]
        return [*self.requirements, *local]


IMAGES = {
    "trainer": Image(REPO_ROOT / "training_image", "phi3_trainer", local_packages=("rules",)),
    "server": Image(REPO_ROOT / "serving_image", "phi3_server"),
}


@dataclass(frozen=True)
class DockerfileSettings:
    """What a Dockerfile's final stage sets for its containers, in the image's own paths."""

    env: dict[str, str]  # ENV, expanded as Docker does, over Docker's default PATH
    workdir: PurePosixPath
    user: str | None  # None: root
    entrypoint: list[str]
    cmd: list[str]
    copies: list[tuple[list[str], PurePosixPath]]  # build-context sources -> destination
    torch_version: str | None  # of `torch==X[+build]` in its RUN lines, the build label dropped


@dataclass(frozen=True)
class ImageEnv:
    """A container of one image, stood in for by a local venv and a clean environment."""

    name: str  # "trainer" | "server"
    python: Path  # the venv's interpreter
    env: dict[str, str]  # the container's whole environment, in local paths
    workdir: Path  # the local folder standing for WORKDIR: the image's folder
    user: str | None  # USER of the final stage (None = root), recorded, not switched to
    entrypoint: list[str]  # ENTRYPOINT (exec form), [] if none
    cmd: list[str] = field(default_factory=list)  # CMD of the final stage, [] if none

    def command(self, argv: Sequence[str]) -> list[str]:
        """What `docker run IMAGE ARGV...` runs: ENTRYPOINT + ARGV (CMD when ARGV is empty), the
        program looked up on the image's PATH as an exec-form command is ("python" is the venv's
        interpreter: its bin comes first there)."""
        command = [*self.entrypoint, *(argv or self.cmd)]
        if not command:
            raise ValueError(f"the {self.name} image has no ENTRYPOINT or CMD: pass the command")
        program = command[0]
        if "/" not in program:
            found = shutil.which(program, path=self.env.get("PATH", ""))
            if found is None:
                raise FileNotFoundError(
                    f"{program!r} is not on the {self.name} image's PATH ({self.env.get('PATH')})"
                )
            program = found
        return [program, *command[1:]]

    def popen(
        self,
        argv: Sequence[str],
        *,
        extra_env: Mapping[str, str] = NO_EXTRA_ENV,
        cwd: Path | None = None,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start `command(argv)` as the container would: with only the image's environment plus
        `extra_env` (what `docker run -e` or Azure ML adds), in WORKDIR unless `cwd` is given."""
        return subprocess.Popen(
            self.command(argv),
            env={**self.env, **extra_env},
            cwd=self.workdir if cwd is None else cwd,
            **kw,
        )


def image_env(name: str) -> ImageEnv:
    """The environment of image `name` ("trainer" or "server"); builds its venv on first use."""
    image = IMAGES.get(name)
    if image is None:
        raise ValueError(f"no image {name!r}: the images are {', '.join(IMAGES)}")
    settings = read_dockerfile(image.dockerfile)
    _check_code_copy(image, settings)
    if settings.torch_version is None:
        raise ImageSpecError(
            f"{image.dockerfile}: no `pip install torch==X` pins torch; pin it, so that no "
            "resolve can choose the torch build (the rehearsal installs the same version)"
        )
    torch = f"torch=={settings.torch_version}"
    venv = cached_venv(
        f"{name}-image-venv", image.inputs, lambda venv: _install(name, torch, venv), salt=torch
    )
    # A container's own filesystem lives as long as it does: here, as long as this process.
    container_root = Path(tempfile.mkdtemp(prefix=f"phi3-rehearsal-{name}-"))
    atexit.register(shutil.rmtree, container_root, ignore_errors=True)
    mounts = {settings.workdir: image.folder, _environment_prefix(image, settings): venv}
    env = {key: _localize(value, mounts, container_root) for key, value in settings.env.items()}
    if "HOME" not in env:
        # Docker takes HOME from the user's /etc/passwd entry, which only the image has.
        home = container_root / "home"
        home.mkdir()
        env["HOME"] = str(home)
    env.setdefault("HOSTNAME", socket.gethostname())
    return ImageEnv(
        name=name,
        python=venv / "bin" / "python",
        env=env,
        workdir=image.folder,
        user=settings.user,
        entrypoint=settings.entrypoint,
        cmd=settings.cmd,
    )


def _install(name: str, torch: str, venv: Path) -> None:
    image = IMAGES[name]
    requirements, constraints = image.requirements
    local = [str(image.folder / folder) for folder in image.local_packages]
    try:
        # As the Dockerfiles' RUN: torch pinned, the requirements and the local packages under
        # the constraints, and `pip check` to refuse any conflict.
        pip(
            venv,
            ["install", "--quiet", torch, "-r", str(requirements), *local, "-c", str(constraints)],
        )
        pip(venv, ["check"])
    except RuntimeError as error:
        raise RuntimeError(
            f"the {name} image's requirements do not install on their own: {error}"
        ) from error


def read_dockerfile(path: Path) -> DockerfileSettings:
    """The final stage's settings, each value expanded with the ENV and ARG set before it."""
    structure = DockerfileParser(str(path)).structure
    starts = [i for i, instruction in enumerate(structure) if instruction["instruction"] == "FROM"]
    if not starts:
        raise ImageSpecError(f"{path}: no FROM instruction")
    env: dict[str, str] = {"PATH": DOCKER_DEFAULT_PATH}
    args: dict[str, str] = {}
    workdir = DEFAULT_WORKDIR
    user: str | None = None
    entrypoint: list[str] = []
    cmd: list[str] = []
    copies: list[tuple[list[str], PurePosixPath]] = []
    torch_version: str | None = None
    for instruction in structure[starts[-1] + 1 :]:
        kind, value = instruction["instruction"], instruction["value"]
        _refuse_modifiers(path, instruction)
        if kind in ("ENV", "ARG"):
            # All pairs of one instruction see the values from before it, as in Docker.
            pairs = extract_key_values(
                env_replace=kind == "ENV", args=args, envs=env, instruction_value=value
            )
            (env if kind == "ENV" else args).update(pairs)
        elif kind == "WORKDIR":
            workdir = workdir / WordSplitter(value, args=args, envs=env).dequote()
        elif kind == "USER":
            user = WordSplitter(value, args=args, envs=env).dequote()
        elif kind == "ENTRYPOINT":
            # Dockerfile reference, ENTRYPOINT: it clears the base image's CMD, not this stage's.
            entrypoint = _exec_form(value)
        elif kind == "CMD":
            cmd = _exec_form(value)
        elif kind == "COPY":
            copies += _context_copy(value, args, env, workdir)
        elif kind == "RUN" and (pin := TORCH_PIN.search(value)):
            torch_version = pin.group(1)
    return DockerfileSettings(
        env=env,
        workdir=workdir,
        user=None if user is None or user.split(":")[0] in ROOT_USERS else user,
        entrypoint=entrypoint,
        cmd=cmd,
        copies=copies,
        torch_version=torch_version,
    )


def _refuse_modifiers(path: Path, instruction: Mapping[str, Any]) -> None:
    if instruction["instruction"] in ("ENV", "ARG", "WORKDIR", "USER", "COPY") and MODIFIER.search(
        instruction["value"]
    ):
        raise ImageSpecError(
            f"{path}:{instruction['startline'] + 1}: ${{VAR:-word}} / ${{VAR:+word}} is not "
            "expanded by the rehearsal; set the variable with ENV instead"
        )


def _context_copy(
    value: str, args: Mapping[str, str], env: Mapping[str, str], workdir: PurePosixPath
) -> list[tuple[list[str], PurePosixPath]]:
    """A COPY from the build context as (sources, destination); none for COPY --from."""
    words = _copy_words(value, args, env)
    if any(word.startswith("--from") for word in words):
        return []
    paths = [word for word in words if not word.startswith("--")]
    return [(paths[:-1], workdir / paths[-1])]


def _exec_form(value: str) -> list[str]:
    """ENTRYPOINT/CMD as argv: the JSON exec form, or the shell form run by `/bin/sh -c`
    (Dockerfile reference, "Shell and exec form")."""
    if value.lstrip().startswith("["):
        argv = json.loads(value)
        if not (isinstance(argv, list) and all(isinstance(arg, str) for arg in argv)):
            raise ImageSpecError(f"exec form {value!r} is not a JSON list of strings")
        return argv
    return ["/bin/sh", "-c", value]


def _copy_words(value: str, args: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    if value.lstrip().startswith("["):
        return [str(word) for word in json.loads(value)]
    words = WordSplitter(value, args=dict(args), envs=dict(env)).split()
    return [word for word in words if word is not None]


def _check_code_copy(image: Image, settings: DockerfileSettings) -> None:
    """The rehearsal runs the image's WORKDIR as the image's folder; that is faithful only if the
    Dockerfile copies the code package into WORKDIR under its own name (a directory's contents
    go to the destination itself: Dockerfile reference, COPY)."""
    expected = settings.workdir / image.package
    if settings.workdir == DEFAULT_WORKDIR:
        raise ImageSpecError(
            f"{image.dockerfile}: the final stage sets no WORKDIR; set the folder it copies "
            f"{image.package} into (WORKDIR /app)"
        )
    copied = {
        (source.rstrip("/"), destination)
        for sources, destination in settings.copies
        for source in sources
    }
    if (image.package, expected) not in copied:
        raise ImageSpecError(
            f"{image.dockerfile}: the final stage must `COPY {image.package} ./{image.package}` "
            f"into its WORKDIR ({settings.workdir}); the rehearsal stands {image.folder} in for "
            f"{settings.workdir} and needs the code at {expected}"
        )
    # A local package the requirements name (the rehearsal installs it from the folder): a
    # Dockerfile that does not copy it cannot install it (pip finds no such name on PyPI).
    for folder in image.local_packages:
        if (folder, settings.workdir / folder) not in copied:
            raise ImageSpecError(
                f"{image.dockerfile}: the final stage must `COPY {folder} ./{folder}` into its "
                f"WORKDIR ({settings.workdir}) and install it with the requirements"
            )


def _environment_prefix(image: Image, settings: DockerfileSettings) -> PurePosixPath:
    """The environment whose `bin` the Dockerfile puts first on PATH: the image's Python."""
    first = PurePosixPath(settings.env["PATH"].split(":")[0])
    if first in SYSTEM_DIRS or first.name != "bin":
        raise ImageSpecError(
            f"{image.dockerfile}: PATH ({settings.env['PATH']}) does not start with the bin of "
            "the environment the image installs its packages into; put it first with "
            "`ENV PATH=<env>/bin:$PATH`"
        )
    return first.parent


def _localize(value: str, mounts: Mapping[PurePosixPath, Path], container_root: Path) -> str:
    """An ENV value in local paths, when it is an absolute path or a `:` list of them."""
    parts = value.split(":")
    if not all(part.startswith("/") for part in parts):
        return value
    return ":".join(_local_path(PurePosixPath(part), mounts, container_root) for part in parts)


def _local_path(
    path: PurePosixPath, mounts: Mapping[PurePosixPath, Path], container_root: Path
) -> str:
    if path in SYSTEM_DIRS:
        return str(path)
    for inside, local in sorted(mounts.items(), key=lambda mount: -len(mount[0].parts)):
        if path.is_relative_to(inside):
            return str(local / path.relative_to(inside))
    local = container_root / path.relative_to("/")
    local.parent.mkdir(parents=True, exist_ok=True)  # the image's folders above it exist
    return str(local)
