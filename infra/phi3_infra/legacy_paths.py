"""The module paths the dynamic providers had before phi3_infra's layers, kept importable.

A stack's state stores each dynamic step's provider as a dill pickle that names its class by
module path (pulumi/pulumi sdk/python/lib/pulumi/dynamic/dynamic.py, `serialize_provider`: a
class defined in an importable module is pickled by reference), and the provider process of a
later `pulumi destroy` unpickles it first, which imports that module and reads the attribute
(CPython Lib/pickle.py, `Unpickler.find_class`). A stack brought up before d890579 named the
modules below; each old path is a module whose attributes are read from the new one (PEP 562
module `__getattr__`). A later `pulumi up` does not rewrite them: a step's diff compares its
named inputs only (steps/base.py), so the engine keeps its old outputs, and the delete unpickles
the provider stored there (pulumi/pulumi sdk/python/lib/pulumi/dynamic/__main__.py, `Delete`).
The old paths stay in the state until each step is replaced or updated, so these stay too.
The targets are named as strings and imported only when an old path is: the one place the core
reaches a layer above it (tests/infra/test_layers.py cannot see it).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

# Old module -> the module its providers live in now.
MOVED = {
    "phi3_infra.data": "phi3_infra.steps.blob_upload",
    "phi3_infra.images": "phi3_infra.steps.registry_build",
    "phi3_infra.training": "phi3_infra.steps.job_completion",
    "phi3_infra.serving": "phi3_infra.steps.endpoint_traffic",
    "phi3_infra.rollout": "phi3_infra.steps.rollout_check",
    "phi3_infra.teardown": "phi3_infra.steps.teardown",
}


class _Forwarding(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module; importlib sets its __spec__ and __name__

    def exec_module(self, module: ModuleType) -> None:
        target = importlib.import_module(self._target)
        module.__getattr__ = lambda name: getattr(target, name)  # type: ignore[method-assign]


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Consulted after the path finders, so a module that exists always wins."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        moved_to = MOVED.get(fullname)
        return (
            None
            if moved_to is None
            else importlib.machinery.ModuleSpec(fullname, _Forwarding(moved_to))
        )


def install() -> None:
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
