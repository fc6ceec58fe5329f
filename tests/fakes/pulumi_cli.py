"""The Pulumi CLI's project-config merge and type check, replayed without the CLI.

Before `pulumi up` (likewise preview, refresh, import, watch, and destroy when it runs the program)
starts the program, the CLI loads `Pulumi.yaml` and `Pulumi.<stack>.yaml`, merges the project's
`config:` into the stack's config, checks it, and hands the program the merged result. The CLI
cannot be installed here, so the tests replay those steps. Ported from pulumi/pulumi (commit
1b5949891b3c, 2026-08-21):

- pkg/workspace/config.go: `ValidateStackConfigAndApplyProjectConfig` -> `mergeConfig` (defaults,
  required keys, `missingStackConfigurationKeysError`, `formatMissingKeys`), then
  `validateStackConfigValues` / `validateStackConfigValue` (the type check), `createConfigValue`,
  `parseConfigKey`; pkg/cmd/pulumi/operations/up.go wraps its error as "validating stack config".
- sdk/go/common/workspace/project.go: `ValidateConfigValue`, `InferFullTypeName`,
  `IsExplicitlyTyped`, `configKeyIsNamespacedByProject`, `RewriteShorthandConfigValues`,
  `(*Project).Validate`; project.json (`configTypeDeclaration`, `simpleConfigType`).
- sdk/go/common/workspace/loaders.go: `LoadProjectBytes`, `LoadProjectStackBytes`,
  `stackConfigNamespacedWithProject`.
- sdk/go/common/resource/config/object.go: `unmarshalObject`, `MarshalString` (the text a stack
  file's value becomes: what the program reads); key.go: `ParseKey`.
- gopkg.in/yaml.v3 resolve.go (go-yaml/yaml, branch v3): which plain scalars are bools, nulls,
  numbers and timestamps. YAML 1.2 core: `yes`, `on` stay strings; an unquoted date is a
  timestamp, which yaml.v3 decodes as a Go `time.Time` and object.go stores as its `String()`.

Not replayed, because this project uses none of it: secrets (`secret: true`, `secure:` values),
ESC environments, and property-path keys (`a.b[0]`).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from phi3_infra.tooling.offline import OfflineRun


class CliConfigError(Exception):
    """What the CLI prints after `error: ` when it refuses a stack before the program starts."""


# ---- YAML as gopkg.in/yaml.v3 reads it (resolve.go: resolveTable, resolveMap, resolve) ----


@dataclass(frozen=True)
class GoTime:
    """A YAML timestamp, decoded by yaml.v3 as a Go time.Time."""

    moment: datetime.datetime  # tz-aware

    def go_string(self) -> str:
        """time.Time.String(): "2006-01-02 15:04:05.999999999 -0700 MST", as object.go stores it.
        Assumes the CLI's machine runs in UTC (CI runners do), so a zero offset is named UTC."""
        fraction = f".{self.moment.microsecond:06d}".rstrip("0").rstrip(".")
        offset = self.moment.strftime("%z")
        zone = "UTC" if offset == "+0000" else offset
        return f"{self.moment:%Y-%m-%d %H:%M:%S}{fraction} {offset} {zone}"


# resolveMap in resolve.go (YAML 1.2 core schema).
_GO_WORDS: Mapping[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), float("nan")),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), float("inf")),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), float("-inf")),
}
# yamlStyleFloat in resolve.go.
_YAML_STYLE_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
# strconv.ParseInt(s, 0, 64) / ParseUint: base prefixes 0b, 0o, 0x, or a leading 0 for octal.
_GO_INT = re.compile(
    r"^(?P<sign>[+-]?)(?:0[bB](?P<b>[01]+)|0[oO](?P<o>[0-7]+)|0[xX](?P<x>[0-9a-fA-F]+)"
    r"|0(?P<legacy>[0-7]*)|(?P<d>[1-9][0-9]*))$"
)
# parseTimestamp's layouts: "2006-1-2T15:4:5.999999999Z07:00" (also with "t"),
# "2006-1-2 15:4:5.999999999" (no zone: UTC) and "2006-1-2".
_GO_TIMESTAMP = re.compile(
    r"^(?P<date>\d{4}-\d{1,2}-\d{1,2})"
    r"(?:(?:[Tt](?P<tz_time>\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d+)?)(?P<zone>Z|[+-]\d{2}:\d{2}))"
    r"|(?: (?P<utc_time>\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d+)?)))?$"
)
_INT64 = range(-(2**63), 2**63)
_UINT64 = range(2**64)


def _go_int(text: str) -> int | None:
    match = _GO_INT.fullmatch(text)
    if match is None:
        return None
    sign = -1 if match["sign"] == "-" else 1
    for group, base in (("b", 2), ("o", 8), ("x", 16), ("legacy", 8), ("d", 10)):
        if match[group] is not None:
            value = sign * int(match[group] or "0", base)
            # ParseInt within int64, else ParseUint (which takes no sign) within uint64.
            unsigned = not match["sign"] and value in _UINT64
            return value if value in _INT64 or unsigned else None
    return None


def _go_timestamp(text: str) -> GoTime | None:
    match = _GO_TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day = (int(part) for part in match["date"].split("-"))
    clock, zone = match["tz_time"] or match["utc_time"] or "0:0:0", match["zone"] or "Z"
    seconds, _, fraction = clock.partition(".")
    hour, minute, second = (int(part) for part in seconds.split(":"))
    offset = datetime.timedelta(0)
    if zone != "Z":
        offset = (1 if zone[0] == "+" else -1) * datetime.timedelta(
            hours=int(zone[1:3]), minutes=int(zone[4:6])
        )
    try:
        moment = datetime.datetime(
            year,
            month,
            day,
            hour,
            minute,
            second,
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=datetime.timezone(offset),
        )
    except ValueError:  # time.Parse checks the ranges too ("month out of range", ...)
        return None
    return GoTime(moment)


def go_plain_scalar(text: str) -> Any:
    """yaml.v3's resolve() for an untagged plain scalar: the Go value it decodes into `any`."""
    if text in _GO_WORDS:
        return _GO_WORDS[text]
    hint = text[0]
    if hint == "." and _YAML_STYLE_FLOAT.fullmatch(text):
        return float(text)
    if hint in "0123456789+-":  # resolveTable's 'D' (digit) and 'S' (sign) hints
        if (moment := _go_timestamp(text)) is not None:
            return moment
        plain = text.replace("_", "")
        if (integer := _go_int(plain)) is not None:
            return integer
        if _YAML_STYLE_FLOAT.fullmatch(plain):
            return float(plain)
    return text


_PLAIN = "tag:phi3.test,2026:go-yaml-v3-plain"


class _GoYamlLoader(yaml.SafeLoader):
    """PyYAML's parser with yaml.v3's scalar resolution instead of YAML 1.1's."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0] and value != "<<":
            return _PLAIN
        # Resolver.resolve is unannotated in types-PyYAML.
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


_GoYamlLoader.add_constructor(_PLAIN, lambda loader, node: go_plain_scalar(node.value))


def load_go_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_GoYamlLoader)  # a SafeLoader: no arbitrary objects


# ---- config values (resource/config/object.go) ----


@dataclass(frozen=True)
class ConfigValue:
    """A config.Value: the text the program reads, and whether it is a list or map (JSON text)."""

    text: str
    is_object: bool = False


def _go_float(value: float) -> str:
    """encoding/json's float64: shortest digits, plain notation from 1e-6 to 1e21, "e-7" style
    exponents outside."""
    if value != 0 and not 1e-6 <= abs(value) < 1e21:
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(value))
    return format(Decimal(repr(value)).normalize(), "f")


def _go_json(value: Any) -> str:
    """json.Marshal of a decoded YAML value (Go sorts map keys; no spaces)."""
    if isinstance(value, Mapping):
        items = sorted(value.items())
        return (
            "{"
            + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_go_json(v)}" for k, v in items)
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_go_json(item) for item in value) + "]"
    if isinstance(value, float):
        return _go_float(value)
    return json.dumps(value, ensure_ascii=False)


def _with_times_as_strings(value: Any) -> Any:
    """unmarshalObject: a time.Time inside a stack value is kept as its String()."""
    if isinstance(value, GoTime):
        return value.go_string()
    if isinstance(value, Mapping):
        return {key: _with_times_as_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_times_as_strings(item) for item in value]
    return value


def stack_value(raw: Any) -> ConfigValue:
    """A stack file's YAML value as config.Value (unmarshalObject, then MarshalString). A null is
    the empty string: yaml.v3 never calls UnmarshalYAML for it (loaders_test.go,
    TestEmptyValueWarning)."""
    raw = _with_times_as_strings(raw)
    if raw is None:
        return ConfigValue("")
    if isinstance(raw, str):
        return ConfigValue(raw)
    if isinstance(raw, bool | int | float):
        return ConfigValue(_go_json(raw))
    return ConfigValue(_go_json(raw), is_object=True)


def default_value(raw: Any) -> ConfigValue:
    """createConfigValue: a string, int or bool default as fmt's %v; anything else as JSON."""
    if isinstance(raw, bool):
        return ConfigValue("true" if raw else "false")
    if isinstance(raw, str | int):
        return ConfigValue(str(raw))
    return ConfigValue(_go_json(raw), is_object=True)


# ---- the project (workspace/project.go, loaders.go) ----


@dataclass(frozen=True)
class ItemsType:
    type: str
    items: ItemsType | None = None


@dataclass(frozen=True)
class ConfigType:
    """ProjectConfigType. `default` and `value` None is Go's nil: not given."""

    type: str | None = None  # None: untyped, never type-checked (IsExplicitlyTyped)
    items: ItemsType | None = None
    default: Any = None
    value: Any = None


@dataclass(frozen=True)
class Project:
    name: str
    config: Mapping[str, ConfigType]  # keys as written in Pulumi.yaml


_SIMPLE_TYPES = ("string", "integer", "boolean", "array", "object")  # project.json simpleConfigType
_DECLARATION_KEYS = {"type", "items", "description", "secret", "default", "value"}


def _items(raw: Any, where: str) -> ItemsType:
    """project.json configItemsType: `type` required; `items` required when it is array."""
    if not isinstance(raw, Mapping) or raw.get("type") not in _SIMPLE_TYPES:
        raise CliConfigError(f"{where}: items need a type, one of {list(_SIMPLE_TYPES)}")
    if raw["type"] == "array" and "items" not in raw:
        raise CliConfigError(f"{where}: an array's items need 'items'")
    nested = raw.get("items")
    return ItemsType(raw["type"], _items(nested, where) if nested is not None else None)


def _declaration(key: str, raw: Any, project_name: str) -> ConfigType:
    """One `config:` entry, after the JSON schema and RewriteShorthandConfigValues."""
    where = f"config.{key}"
    if isinstance(raw, str | int | bool | list):
        # Shorthand: a default in the project's namespace, a value in any other.
        if _namespaced_by_project(project_name, key):
            return ConfigType(default=raw)
        return ConfigType(value=raw)
    if not isinstance(raw, Mapping):
        raise CliConfigError(f"{where}: a string, integer, boolean, array or a declaration")
    if unknown := set(raw) - _DECLARATION_KEYS:
        raise CliConfigError(f"{where}: {sorted(unknown)} not allowed")
    if raw.get("secret"):
        raise NotImplementedError(f"{where}: secrets are not replayed")
    kind = raw.get("type")
    if kind is not None and kind not in _SIMPLE_TYPES:
        raise CliConfigError(f"{where}.type: one of {list(_SIMPLE_TYPES)}")
    items = _items(raw["items"], where) if raw.get("items") is not None else None
    return ConfigType(kind, items, raw.get("default"), raw.get("value"))


def _namespaced_by_project(project_name: str, key: str) -> bool:
    """configKeyIsNamespacedByProject."""
    return ":" not in key or key.startswith(f"{project_name}:")


def _validate_project(project: Project) -> None:
    """(*Project).Validate, with its messages."""
    for key, declared in project.config.items():
        if declared.default is not None and declared.value is not None:
            raise CliConfigError(
                f"project config '{key}' cannot have both a 'default' and 'value' attribute"
            )
        if _namespaced_by_project(project.name, key):
            if declared.type == "array" and declared.items is None:
                raise CliConfigError(
                    f"The configuration key '{key}' declares an array but does not specify the "
                    "underlying type via the 'items' attribute"
                )
            typed_default = declared.type is not None and declared.default is not None
            if typed_default and not validate_config_value(
                str(declared.type), declared.items, declared.default
            ):
                type_name = infer_full_type_name(str(declared.type), declared.items)
                raise CliConfigError(
                    f"The default value specified for configuration key '{key}' is not of the "
                    f"expected type '{type_name}'"
                )
            continue
        if declared.type is not None:
            raise CliConfigError(
                f"Configuration key '{key}' is not namespaced by the project and should not "
                "define a type"
            )
        if declared.default is not None:
            raise CliConfigError(
                f"Configuration key '{key}' is not namespaced by the project and should not "
                "define a default value. Did you mean to use the 'value' attribute instead of "
                "'default'?"
            )
        if declared.value is None:
            raise CliConfigError(
                f"Configuration key '{key}' is namespaced and must provide an attribute 'value'"
            )


def parse_project(text: str) -> Project:
    """LoadProjectBytes: the schema's config rules, the shorthand rewrite, then Validate."""
    raw = load_go_yaml(text) or {}
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise CliConfigError("project is missing a non-empty string 'name' attribute")
    entries = raw.get("config") or {}
    project = Project(name, {key: _declaration(key, entry, name) for key, entry in entries.items()})
    _validate_project(project)
    return project


def load_project(path: Path) -> Project:
    return parse_project(path.read_text())


# ---- keys (resource/config/key.go, workspace/loaders.go) ----


def parse_key(key: str) -> tuple[str, str]:
    """ParseKey: `<namespace>:<name>`, or the old `<namespace>:config:<name>`."""
    parts = key.split(":")
    if len(parts) == 2 or (len(parts) == 3 and parts[1] == "config"):
        return parts[0], parts[-1]
    raise CliConfigError(
        f"could not parse {key} as a configuration key "
        "(configuration keys should be of the form `<namespace>:<name>`)"
    )


def _full_key(project_name: str, key: str) -> str:
    """parseConfigKey / stackConfigNamespacedWithProject: a bare key is in the project's."""
    namespace, name = parse_key(key) if ":" in key else (project_name, key)
    return f"{namespace}:{name}"


StackConfig = dict[str, ConfigValue]  # "namespace:name" -> value


def parse_stack(text: str, project: Project) -> StackConfig:
    """LoadProjectStackBytes: a `Pulumi.<stack>.yaml`'s config, keys namespaced."""
    document = load_go_yaml(text) or {}
    entries = document.get("config") or {}
    return {_full_key(project.name, key): stack_value(raw) for key, raw in entries.items()}


def load_stack(path: Path, project: Project) -> StackConfig:
    return parse_stack(path.read_text(), project)


def flat_stack_config(flat: Mapping[str, str]) -> StackConfig:
    """A stack config written as the tests write it, `namespace:key` -> the text the program
    reads: a list or map is its JSON text, which is how the CLI holds an object value."""

    def value(text: str) -> ConfigValue:
        if text.lstrip().startswith(("[", "{")):
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError:
                return ConfigValue(text)
            return ConfigValue(text, is_object=isinstance(decoded, list | dict))
        return ConfigValue(text)

    return {key: value(text) for key, text in flat.items()}


def program_config(config: StackConfig) -> dict[str, str]:
    """What the program reads: every key as text (objects as JSON)."""
    return {key: value.text for key, value in config.items()}


# ---- the merge and the type check (pkg/workspace/config.go) ----

_GO_ATOI = re.compile(r"^[+-]?[0-9]+$")


def infer_full_type_name(type_name: str, items: ItemsType | None) -> str:
    """InferFullTypeName: array<...> whenever items are given."""
    if items is not None:
        return f"array<{infer_full_type_name(items.type, items.items)}>"
    return type_name


def validate_config_value(type_name: str, items: ItemsType | None, value: Any) -> bool:
    """ValidateConfigValue, in its order: string, integer, boolean, object, else an array."""
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return True
        if isinstance(value, float):  # YAML and JSON numbers: a whole float passes
            return value.is_integer()
        # strconv.Atoi: optional sign and decimal digits only, within int64.
        return isinstance(value, str) and bool(_GO_ATOI.fullmatch(value)) and int(value) in _INT64
    if type_name == "boolean":
        return value in ("true", "false") if isinstance(value, str) else isinstance(value, bool)
    if type_name == "object":
        return isinstance(value, dict)
    if not isinstance(value, list) or items is None:
        return False
    return all(validate_config_value(items.type, items.items, item) for item in value)


def _missing_keys_error(missing: list[str], stack: str) -> CliConfigError:
    """missingStackConfigurationKeysError with formatMissingKeys: sorted, 'a', 'b' and 'c'."""
    quoted = [f"'{key}'" for key in sorted(missing)]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
    noun = "value" if len(missing) == 1 else "values"
    return CliConfigError(
        f"validating stack config: Stack '{stack}' is missing configuration {noun} {listed}"
    )


def _check_types(project: Project, stack: str, config: StackConfig) -> None:
    """validateStackConfigValues: typed keys in sorted order; the first mismatch is the error."""
    for key in sorted(project.config):
        declared = project.config[key]
        if declared.type is None:
            continue  # untyped: any value, never checked
        # Present: a missing typed key of the project was reported above, and other namespaces
        # cannot declare a type (Validate).
        stored = config[_full_key(project.name, key)]
        content = json.loads(stored.text) if stored.is_object else stored.text
        if not validate_config_value(declared.type, declared.items, content):
            type_name = infer_full_type_name(declared.type, declared.items)
            raise CliConfigError(
                f"validating stack config: Stack '{stack}' with configuration key '{key}' "
                f"must be of type '{type_name}'"
            )


def apply_project_config(project: Project, stack: str, config: StackConfig) -> StackConfig:
    """ValidateStackConfigAndApplyProjectConfig: the stack's config with the project's defaults
    and values filled in, or the CLI's error. A key of the project's namespace declared with
    neither `default` nor `value` is required; keys of other namespaces never are; stack keys
    the project does not declare pass untouched."""
    merged = dict(config)
    missing = []
    for key in sorted(project.config):
        declared = project.config[key]
        full_key = _full_key(project.name, key)
        if full_key in merged:
            continue
        if declared.default is None and declared.value is None:
            if full_key.split(":", 1)[0] == project.name:
                missing.append(key)
            continue
        given = declared.default if declared.default is not None else declared.value
        merged[full_key] = default_value(given)
    if missing:
        raise _missing_keys_error(missing, stack)
    _check_types(project, stack, merged)
    return merged


RunOffline = Callable[[Callable[[], Mapping[str, Any]], Mapping[str, str], str], OfflineRun]


def through_cli(run_offline: RunOffline, project: Project) -> RunOffline:
    """`run_offline` as `pulumi up` would start the program: the stack's config merged and
    checked by the CLI first, and the program given the merged config."""

    def run(
        program: Callable[[], Mapping[str, Any]], config: Mapping[str, str], stack: str
    ) -> OfflineRun:
        merged = apply_project_config(project, stack, flat_stack_config(config))
        return run_offline(program, program_config(merged), stack)

    return run
