"""phi3_infra's layers, read from its import statements: each layer imports only the layers below
it (infra/README.md, "Layout"), so an Azure operation can be read, and tested, without Pulumi's
resources, and a component without the stack's configuration."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "infra" / "phi3_infra"
# Top to bottom. A module directly in phi3_infra (config, naming, build_context, ...) is the core
# every layer may use; the core itself uses only the catalog.
LAYERS = ("cli", "tooling", "program", "components", "steps", "azure", "catalog")
CORE = "core"
OUTSIDE = ("tests", "scripts", "bench", "phi3_rehearsal")


def _layer(module: str) -> str:
    """phi3_infra.<layer>[.<module>] -> layer; a top-level module other than program: core."""
    part = module.split(".")[1] if "." in module else module
    return part if part in LAYERS else CORE


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of each absolute import, `from a import b` as a.b too (b may be a module)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def _modules_imported_whole(path: Path) -> set[str]:
    """`import a.b` and `from a import b`: the modules whose every name the code can reach."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(part for part in parts if part != "__init__"), path))
    return found


def _allowed(layer: str) -> set[str]:
    if layer == CORE:
        return {CORE, "catalog"}
    return {CORE, *LAYERS[LAYERS.index(layer) :]}


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_a_module_imports_only_its_own_layer_and_those_below(module: str, path: Path) -> None:
    layer = _layer(module)
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {imported} ({_layer(imported)})"
        for line, imported in _imports(path)
        if imported.startswith("phi3_infra.")
        and _is_module(imported)
        and _layer(imported) not in _allowed(layer)
    ]
    backward = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {imported}"
        for line, imported in _imports(path)
        if imported.split(".")[0] in OUTSIDE
    ]
    assert not upward, f"{layer} imports a layer above it: {upward}"
    assert not backward, f"the package imports what uses it: {backward}"


def test_imports_are_absolute() -> None:
    """The layer rules read module paths: a relative import would escape them."""
    relative = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for _, path in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert relative == []


def test_only_the_composition_root_and_plan_time_helpers_read_the_stack_config() -> None:
    """Components, steps and Azure operations take what they use (IDs in, IDs out): the config's
    enums they may name, the configuration itself, or the config module whole, they may not."""
    config_readers = {"StackConfig", "load_stack_config", "parse_stack_config", "config_from_flat"}
    readers = {
        module
        for module, path in _modules()
        if _layer(module) in {"components", "steps", "azure", "catalog"}
        and (
            {f"phi3_infra.config.{name}" for name in config_readers}
            & {imported for _, imported in _imports(path)}
            or "phi3_infra.config" in _modules_imported_whole(path)
        )
    }
    assert readers == set()


def test_azure_operations_and_the_catalog_declare_no_resources() -> None:
    """Plain functions over the ARM client, usable by the tools without a Pulumi engine."""
    declaring = {
        f"{module}: {imported}"
        for module, path in _modules()
        if _layer(module) in {"azure", "catalog"}
        for _, imported in _imports(path)
        if imported.startswith(("pulumi_azure_native", "pulumi.dynamic"))
    }
    assert declaring == set()


def test_the_layers_cover_the_package() -> None:
    """A new folder is a layer with a place in LAYERS, not a module the rules never see."""
    folders = {
        path.relative_to(PACKAGE).parts[0] for _, path in _modules() if path.parent != PACKAGE
    }
    assert folders == set(LAYERS) - {"program"}
    assert any(_layer(module) == "program" for module, _ in _modules())
