"""Every `python -m phi3_trainer` flag, from its parser, as the table the Pulumi program reads.

    python scripts/trainer_flags.py     # writes infra/phi3_infra/trainer_flags.json

Run it after changing the trainer's dataclasses or its TRL/transformers pins; the Pulumi program
checks `trainerArgs` against the file without importing torch or TRL (phi3_infra.trainer_flags),
and tests/pipeline/test_trainer_command.py fails while the file is stale.
"""

from __future__ import annotations

import argparse
import enum
import json
import typing
from typing import Any

from phi3_training_rules.flag_rules import CONFLICT_FLAGS
from phi3_training_rules.memory import FLAGS as MEMORY_FLAGS

# The argparse `type` HfArgumentParser gives each field type, by name: TRL 1.16 parses with its
# own copy of transformers' parser (trl/scripts/_hf_argparser.py, _parse_dataclass_field; bools
# get its string_to_bool).
_TYPE_NAMES = {"string_to_bool": "bool", "int": "int", "float": "float", "str": "str"}
_HEADER = (
    "Flags of `python -m phi3_trainer`, read from its parser by scripts/trainer_flags.py; "
    "regenerate, do not edit."
)


def describe(action: argparse.Action) -> dict[str, Any]:
    """Type, list-valuedness and choices of one flag, as the words after it are parsed."""
    kind: Any = action.type  # a class or a parsing function; either has a __name__
    choices = action.choices
    if isinstance(kind, type) and issubclass(kind, enum.Enum):  # e.g. `debug`: list[DebugOption]
        kind, choices = str, [member.value for member in kind]
    entry: dict[str, Any] = {
        # Choices are matched on the word given (make_choice_type_function maps str(choice)).
        "type": "str" if choices is not None else _TYPE_NAMES.get(kind.__name__, kind.__name__)
    }
    if action.nargs in (argparse.ONE_OR_MORE, argparse.ZERO_OR_MORE):
        entry["list"] = True
    if choices is not None:
        entry["choices"] = [str(choice) for choice in choices]
    # TRL reads "none"/"null" as None for an optional field (_hf_argparser._accept_none).
    if getattr(kind, "__qualname__", "").startswith("_accept_none."):
        entry["none"] = True
    # The program checks combinations, and estimates memory, over the defaults.
    if action.dest in CONFLICT_FLAGS | MEMORY_FLAGS:
        entry["default"] = action.default
    return entry


def _after_parsing(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """What TrainingArguments.__post_init__ (run inside parse_args) still refuses of a value the
    parser took as text (transformers training_args.py): a field typed with an enum is turned
    into it (SchedulerType, IntervalStrategy, ...: an unknown word fails there), and a
    _VALID_DICT_FIELDS text starting with "{" is read as JSON."""
    from transformers import TrainingArguments

    if name in TrainingArguments._VALID_DICT_FIELDS:
        entry["json"] = True
    field = TrainingArguments.__dataclass_fields__.get(name)
    if field is None or "choices" in entry:
        return entry
    hint = typing.get_type_hints(TrainingArguments).get(name)
    enums = [
        arg
        for arg in (typing.get_args(hint) or (hint,))
        if isinstance(arg, type) and issubclass(arg, enum.Enum)
    ]
    if enums and entry["type"] == "str":
        entry["choices"] = [str(member.value) for member in enums[0]]
    return entry


def flag_table(parser: argparse.ArgumentParser) -> dict[str, Any]:
    # Each dataclass field is one action whose first option is --<field>; the --no_<field>
    # complements of bools and --help are not. Private `_actions`, as TrlParser reads it too.
    fields = [
        action
        for action in parser._actions
        if action.nargs != 0 and action.option_strings[:1] == [f"--{action.dest}"]
    ]
    flags = {
        action.dest: _after_parsing(action.dest, describe(action))
        for action in sorted(fields, key=lambda a: a.dest)
    }
    return {"about": _HEADER, "flags": flags}


def render(parser: argparse.ArgumentParser) -> str:
    return json.dumps(flag_table(parser), indent=2) + "\n"
