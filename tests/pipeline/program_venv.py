"""Where the Pulumi CLI puts the program's virtualenv, and a copy of it built the same way.

Ported from pulumi/pulumi (read at 1b5949891b3c, 2026-08):
- pkg/engine/project.go `getPwdMain`: the program directory is the project root, or `main`
  relative to it (a file's folder when `main` names a file); the program and every plugin,
  the dynamic-provider process included, start in it (pkg/engine/deployment.go passes it as the
  plugin context's Pwd; sdk/go/common/resource/plugin/plugin.go sets `cmd.Dir` to it).
- sdk/python/toolchain/pip.go: `resolveVirtualEnvironmentPath` joins a relative `virtualenv`
  to the project ROOT; `InstallDependencies` runs `python -m venv`, `pip install --upgrade pip
  setuptools wheel`, then `pip install -r requirements.txt` with the working directory and the
  file both in the PROGRAM directory (the language host passes `ProgramDirectory` as cwd,
  sdk/python/cmd/pulumi-language-python/main.go `InstallDependencies`).
- sdk/python/dist/pulumi-resource-pulumi-python, the dynamic-provider shim: a relative
  PULUMI_RUNTIME_VIRTUALENV (the raw `virtualenv` option) is joined to $PWD, the program
  directory, and `<venv>/bin/python -u -m pulumi.dynamic` runs; a missing venv is an error
  (pulumi/pulumi#7061, #7907).

The copy is cached under build/ (phi3_rehearsal.venvs); the dev lock is passed as constraints so
the versions are the ones CI tests, and the venv must not contain torch.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from phi3_rehearsal.venvs import cached_venv, pip

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK = REPO_ROOT / "requirements" / "constraints.txt"


@dataclass(frozen=True)
class ProgramLayout:
    root: Path
    program_dir: Path  # where the CLI runs the program, pip and the plugins
    venv: Path  # where `pulumi install` creates the virtualenv
    provider_venv: Path  # where the dynamic-provider shim looks for it

    @property
    def requirements(self) -> Path:
        return self.program_dir / "requirements.txt"


def program_layout(root: Path = REPO_ROOT) -> ProgramLayout:
    project = yaml.safe_load((root / "Pulumi.yaml").read_text())
    program_dir = root
    if main := project.get("main"):
        target = (root / main).resolve()
        program_dir = target if target.is_dir() else target.parent
    virtualenv = Path(project["runtime"]["options"]["virtualenv"])
    return ProgramLayout(
        root=root,
        program_dir=program_dir,
        venv=virtualenv if virtualenv.is_absolute() else root / virtualenv,
        provider_venv=virtualenv if virtualenv.is_absolute() else program_dir / virtualenv,
    )


def program_python() -> Path:
    """The interpreter of a venv built from the program's requirements alone, as Pulumi does."""
    layout = program_layout()
    inputs = [
        layout.requirements,
        REPO_ROOT / "infra" / "requirements.txt",
        REPO_ROOT / "infra" / "pyproject.toml",
        REPO_ROOT / "training_image" / "rules" / "pyproject.toml",
        LOCK,
    ]
    return cached_venv("program-venv", inputs, _install) / "bin" / "python"


def _install(venv: Path) -> None:
    layout = program_layout()
    for arguments in (
        ["--upgrade", "pip", "setuptools", "wheel"],
        ["-r", "requirements.txt", "-c", str(LOCK)],
    ):
        pip(venv, ["install", "--quiet", *arguments], cwd=layout.program_dir)
    python = str(venv / "bin" / "python")
    probe = [python, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"]
    if subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip() != "True":
        raise RuntimeError("the program's requirements installed torch: `pulumi up` must not")
