"""The dynamic steps run in the engine's provider process, which rebuilds each provider from the
string Pulumi stored in the state: a dill pickle naming its class in phi3_infra. That process is
`<program venv>/bin/python -m pulumi.dynamic`, with whatever environment the shell has, so a
`pulumi destroy` from a fresh shell weeks later must find every class in the program's own
virtualenv, built from the program's requirements alone (tests/pipeline/program_venv.py)."""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import pkgutil
import shutil
import subprocess
import zipfile
from pathlib import Path

import dill
import pulumi.dynamic
import pytest
from pulumi.runtime.rpc import unwrap_rpc_secret

import phi3_infra
from tests.pipeline.conftest import Plan
from tests.pipeline.program_venv import program_layout, program_python

DYNAMIC = "pulumi-python:dynamic:Resource"
RECORDED = Path(__file__).with_name("recorded")
# What the provider process does with a stored provider before any call (pulumi/pulumi
# sdk/python/lib/pulumi/dynamic/__main__.py `get_provider`): deserialize, then configure.
PROVIDER_HOST_LOAD = """
import base64, importlib, json, sys
import dill
from pulumi.dynamic import Config, ConfigureRequest
from pulumi.runtime._serialization import _deserialize

asked = json.load(sys.stdin)
loaded = {}
for name, stored in asked["stored"].items():
    provider = _deserialize(dill.loads, base64.b64decode(stored))
    provider.configure(ConfigureRequest(Config(raw_config={}, project_name="phi3-foundry")))
    loaded[name] = f"{type(provider).__module__}.{type(provider).__qualname__}"
# Providers of other configurations are stored by reference the same way: module and name.
for qualified in asked["classes"]:
    module, _, name = qualified.rpartition(".")
    getattr(importlib.import_module(module), name)
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def python() -> Path:
    return program_python()


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _provider_classes() -> set[str]:
    """Every pulumi.dynamic provider class the package and its subpackages define."""
    found = set()
    for module_info in pkgutil.walk_packages(phi3_infra.__path__, "phi3_infra."):
        module = importlib.import_module(module_info.name)
        for _, kind in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(kind, pulumi.dynamic.ResourceProvider)
                and kind.__module__ == module.__name__
            ):
                found.add(_qualified(kind))
    return found


def test_the_provider_process_looks_for_the_venv_where_pulumi_install_builds_it() -> None:
    layout = program_layout()
    assert layout.provider_venv == layout.venv, (
        f"`pulumi install` builds {layout.venv}, the dynamic-provider process looks in "
        f"{layout.provider_venv}: drop `main` from Pulumi.yaml or make `virtualenv` absolute"
    )
    assert layout.requirements.is_file()


def test_every_stored_provider_loads_from_the_program_venv_with_an_empty_environment(
    plan: Plan, python: Path, tmp_path: Path
) -> None:
    run = plan(stages='["infra", "train", "serve"]')
    stored = {r.name: unwrap_rpc_secret(r.inputs["__provider"]) for r in run.of_type(DYNAMIC)}
    expected = {
        name: _qualified(type(dill.loads(base64.b64decode(value))))
        for name, value in stored.items()
    }
    classes = _provider_classes()
    assert expected and set(expected.values()) <= classes
    result = subprocess.run(
        [str(python), "-c", PROVIDER_HOST_LOAD],
        input=json.dumps({"stored": stored, "classes": sorted(classes)}),
        cwd=tmp_path,  # outside the repository: nothing but the venv can provide phi3_infra
        env={},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


def test_providers_stored_by_an_earlier_layout_still_load(python: Path, tmp_path: Path) -> None:
    """A stack brought up before a module moved is destroyed by the moved code: the engine
    loads each step's provider from the string stored then, which names the class by its
    module path at the time (recorded/stored_providers.json, written by `pulumi up` at the
    commit it names). Moving a provider class must keep that path importable."""
    recorded = json.loads((RECORDED / "stored_providers.json").read_text())["providers"]
    result = subprocess.run(
        [str(python), "-c", PROVIDER_HOST_LOAD],
        input=json.dumps({"stored": recorded, "classes": []}),
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert set(loaded) == set(recorded)
    # Each loads as a provider the package defines today (an alias at the old path is fine).
    assert set(loaded.values()) <= _provider_classes()


def test_the_program_imports_from_its_venv_alone(python: Path, tmp_path: Path) -> None:
    """`pulumi up` runs the program in that venv: its imports need nothing from the dev venv."""
    probe = "import sys, phi3_infra.program; print('torch' in sys.modules)"
    result = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, env={}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_built_package_carries_every_module_and_data_file(python: Path, tmp_path: Path) -> None:
    """Installed from a wheel instead of the checkout, phi3_infra still has every subpackage and
    finds its data files."""
    infra = program_layout().root / "infra"
    source = tmp_path / "infra"
    for name in ("pyproject.toml", "requirements.txt"):
        (source / name).parent.mkdir(exist_ok=True)
        shutil.copy(infra / name, source / name)
    shutil.copytree(
        infra / "phi3_infra", source / "phi3_infra", ignore=shutil.ignore_patterns("__pycache__")
    )
    build = [str(python), "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "--wheel-dir", str(tmp_path), str(source)], check=True)
    (wheel,) = tmp_path.glob("phi3_infra-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    package = infra / "phi3_infra"
    files = {
        f"phi3_infra/{path.relative_to(package).as_posix()}"
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"phi3_infra/tooling/prices.json", "phi3_infra/steps/teardown.py"} <= files
    assert files <= packaged, sorted(files - packaged)
