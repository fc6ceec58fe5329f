"""A stack's `Pulumi.<stack>.yaml` read as the engine hands its config to the program.

Read by the offline plan, the rehearsal, the teardown audit and the expiry job alike; apart from
the offline run (phi3_infra.tooling.offline), so that those tools never import Pulumi's mocks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

PROJECT = "phi3-foundry"


def stack_file_config(path: Path, project: str = PROJECT) -> dict[str, str]:
    """A `Pulumi.<stack>.yaml`'s config as the engine passes it: namespaced keys, text values."""
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: 'config' must be a mapping of key to value")
    flat: dict[str, str] = {}
    for key, value in config.items():
        full_key = key if ":" in key else f"{project}:{key}"
        flat[full_key] = _config_text(value)
    return flat


def _config_text(value: Any) -> str:
    """YAML scalars as the CLI passes them (`true`, `3`, `2027-01-31`), lists and maps as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)
