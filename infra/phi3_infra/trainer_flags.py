"""The trainer's command line as the program must know it: which `trainerArgs` the job accepts.

`python -m phi3_trainer` reads its flags with TRL's TrlParser (TRL's copy of transformers'
HfArgumentParser) over the trainer's dataclasses (training_image/phi3_trainer/config.py). The
program's venv has neither torch nor TRL, so `scripts/trainer_flags.py` writes that parser's flags
(name, type, list-valued, choices) to `trainer_flags.json` beside this module, and
tests/pipeline/test_trainer_command.py fails when the file is stale. A value is valid when the
trainer's parser accepts the words the job command gives it and the trainer's own value rules
(phi3_training_rules.flag_rules, the package the trainer and the program share, standard library
only) accept the value: ranges, and combinations over the trainer's defaults
(in the table). A bad flag fails the plan, not the job after the image build and the GPU queue.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from phi3_training_rules import flag_rules

FLAGS_FILE = Path(__file__).with_name("trainer_flags.json")
TRAINER = "`python -m phi3_trainer`"

Scalar = str | int | float | bool
# A list is a list-valued flag's items (nargs="+").
TrainerArg = Scalar | list[Scalar]

_HUB_UPLOAD = (
    "uploads from the job to the Hugging Face Hub; the trained model stays in the project "
    "(registered as an Azure ML model)"
)
# Flags the program sets, or that must not reach the job: name -> why, with what to do instead.
REFUSED_FLAGS: Mapping[str, str] = {
    "train_file": "set by the program from phi3-foundry:trainingData",
    "validation_file": "set by the program from phi3-foundry:validationData",
    "model_name_or_path": "set by the program from phi3-foundry:baseModel",
    "output_dir": "set by the program: the job's model output, which the model is registered from",
    # TrlParser.parse_args_and_config reads --config as a YAML file path (trl/scripts/utils.py).
    "config": "reads a YAML file the job does not have; give its flags in trainerArgs instead",
    "hub_token": (
        "a secret, and the job's command is stored and shown in plain text; the job does not "
        "upload to the Hugging Face Hub"
    ),
    "trust_remote_code": (
        "runs Python code from the model's repository inside the job, with the job identity's "
        "access to the project's storage"
    ),
    # transformers' TrainingArguments: "not directly used by Trainer"; train.py resumes by --resume.
    "resume_from_checkpoint": (
        "not read by the trainer; use resume (auto, the default: the newest complete checkpoint "
        "in the job's output; never; or a checkpoint folder)"
    ),
}
# Flag families, so that a flag added upstream is refused too.
REFUSED_PREFIXES: Mapping[str, str] = {
    "push_to_hub": _HUB_UPLOAD,
    "hub_": _HUB_UPLOAD,
    "trackio_": (
        "publishes the run to a Hugging Face Space (public by default); the job logs to the "
        "project's MLflow"
    ),
}

# trl/scripts/_hf_argparser.py (TRL's copy of transformers' hf_argparser.py), string_to_bool:
# the words a bool flag accepts.
_TRUE_WORDS = ("yes", "true", "t", "y", "1")
_FALSE_WORDS = ("no", "false", "f", "n", "0")
# trl/scripts/_hf_argparser.py, _accept_none: the words an optional field reads as None.
_NONE_WORDS = ("none", "null")
# argparse (CPython 3.11 Lib/argparse.py, _negative_number_matcher): a word after a flag that
# starts with "-" is read as another flag unless it is a plain negative number.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _to_bool(word: str) -> bool:
    if word.lower() in _TRUE_WORDS:
        return True
    if word.lower() in _FALSE_WORDS:
        return False
    raise ValueError(word)


# HfArgumentParser's argparse `type` for each field type the table names.
_PARSERS: Mapping[str, Callable[[str], Scalar]] = {
    "bool": _to_bool,
    "int": int,
    "float": float,
    "str": str,
}
_CHOICES_SHOWN = 10
_EXPECTED = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text"}


@dataclass(frozen=True)
class TrainerFlag:
    name: str
    type: str  # bool, int, float or str; any other type cannot be given as text
    is_list: bool = False
    choices: tuple[str, ...] = ()
    json: bool = False  # text starting with "{" is read as a JSON object after parsing
    accepts_none: bool = False  # "none" / "null" give None (an optional field)


class TrainerArgsError(ValueError):
    """trainerArgs the job's trainer would refuse: flag name -> why, with the fix."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {why}" for name, why in problems.items()))
        self.problems = dict(problems)


@cache
def trainer_flags() -> Mapping[str, TrainerFlag]:
    """The trainer's flags, from the generated table."""
    table = json.loads(FLAGS_FILE.read_text(encoding="utf-8"))
    return {
        name: TrainerFlag(
            name=name,
            type=spec["type"],
            is_list=spec.get("list", False),
            choices=tuple(spec.get("choices", ())),
            json=spec.get("json", False),
            accepts_none=spec.get("none", False),
        )
        for name, spec in table["flags"].items()
    }


@cache
def trainer_defaults() -> Mapping[str, object]:
    """The trainer's defaults of the flags its combination rules (flag_rules.CONFLICT_FLAGS) and
    its memory estimate (memory.FLAGS) read, from the generated table."""
    table = json.loads(FLAGS_FILE.read_text(encoding="utf-8"))
    return {name: spec["default"] for name, spec in table["flags"].items() if "default" in spec}


def refusal(name: str) -> str | None:
    """Why the program does not pass this flag to the job, or None if it may."""
    if name in REFUSED_FLAGS:
        return REFUSED_FLAGS[name]
    return next((why for prefix, why in REFUSED_PREFIXES.items() if name.startswith(prefix)), None)


def command_words(value: TrainerArg) -> list[str]:
    """The words after `--<name>` in the job command. HfArgumentParser gives a list field
    nargs="+" (one word per item) and reads bools with string_to_bool (trl/scripts/
    _hf_argparser.py, HfArgumentParser._parse_dataclass_field; transformers' hf_argparser.py
    is the same)."""
    return [flag_word(item) for item in (value if isinstance(value, list) else [value])]


def flag_word(item: object) -> str:
    """A flag value as the command line spells it (booleans lowercase, as TrlParser reads them)."""
    return ("true" if item else "false") if isinstance(item, bool) else str(item)


def parse_trainer_args(args: Mapping[str, object]) -> dict[str, TrainerArg]:
    """Check every flag against the trainer's parser; raise one TrainerArgsError listing each
    bad one with the reason."""
    flags = trainer_flags()
    problems: dict[str, str] = {}
    checked: dict[str, TrainerArg] = {}
    for name, value in args.items():
        flag = flags.get(name)
        why = refusal(name) or (None if flag else _unknown(name, flags))
        if flag and not why:
            try:
                checked[name] = _checked_value(flag, value)
            except ValueError as error:
                why = str(error)
        if why:
            problems[name] = why
    for problem in flag_rules.problems({**trainer_defaults(), **parsed_values(checked)}):
        problems.setdefault(problem.flag, problem.reason)
    if problems:
        raise TrainerArgsError(problems)
    return checked


def parsed_values(args: Mapping[str, TrainerArg]) -> dict[str, object]:
    """The values the trainer's parser makes of checked trainerArgs (parse_trainer_args' result)."""
    flags = trainer_flags()
    return {name: _parsed(flags[name], value) for name, value in args.items()}


def _parsed(flag: TrainerFlag, value: TrainerArg) -> object:
    """The value the trainer's parser makes of the words (a list stays the words)."""
    parse = _PARSERS.get(flag.type)
    if isinstance(value, list) or parse is None:
        return value
    word = flag_word(value)
    return None if _is_none(flag, word) else parse(word)


def _is_none(flag: TrainerFlag, word: str) -> bool:
    return flag.accepts_none and word.lower() in _NONE_WORDS


def _unknown(name: str, flags: Mapping[str, TrainerFlag]) -> str:
    negated = flags.get(name.removeprefix("no_"))
    if name.startswith("no_") and negated and negated.type == "bool":
        return f"not a flag name here; write {negated.name}: false"
    allowed = [flag for flag in flags if refusal(flag) is None]
    close = difflib.get_close_matches(name.lower().replace("-", "_"), allowed, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"not a flag of {TRAINER}{hint} (`python -m phi3_trainer --help` lists them)"


def _checked_value(flag: TrainerFlag, value: object) -> TrainerArg:
    """The value the job gets; ValueError with the reason where the trainer would refuse it."""
    if not isinstance(value, list):
        return _checked_item(flag, value)
    if not flag.is_list:
        raise ValueError(f"takes one value, got a list {value!r}")
    if not value:
        raise ValueError("needs at least one item (or leave the flag out for its default)")
    return [_checked_item(flag, item) for item in value]


def _check_json_and_choice(flag: TrainerFlag, word: str, item: object) -> None:
    """A JSON flag's text must parse; a flag with choices takes one of them."""
    if flag.json and word.startswith("{"):
        try:
            json.loads(word)
        except json.JSONDecodeError as error:
            raise ValueError(f"is read as JSON, and {word!r} is not valid JSON: {error}") from None
    if flag.choices and word not in flag.choices:
        close = difflib.get_close_matches(word, flag.choices, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        allowed = (
            ", ".join(flag.choices)
            if len(flag.choices) <= _CHOICES_SHOWN
            else f"its {len(flag.choices)} choices (`python -m phi3_trainer --help` lists them)"
        )
        raise ValueError(f"expects one of {allowed}, got {item!r}{hint}")


def _checked_item(flag: TrainerFlag, item: object) -> Scalar:
    if item is None:
        raise ValueError("null is not a value; leave the flag out for the trainer's default")
    if isinstance(item, Mapping):
        raise ValueError("takes text, not a map (a flag that takes JSON takes it as a string)")
    if not isinstance(item, str | int | float | bool):
        raise ValueError(f"takes text, numbers or true/false, got {item!r}")
    parse = _PARSERS.get(flag.type)
    if parse is None:
        raise ValueError(
            f"its type ({flag.type}) cannot be given on the command line; leave it out"
        )
    word = flag_word(item)
    if _is_none(flag, word):
        return item
    if word.startswith("-") and not _NEGATIVE_NUMBER.match(word):
        raise ValueError(f"{word!r} starts with '-', which the trainer's parser takes for a flag")
    try:
        parsed = parse(word)
    except ValueError:
        raise ValueError(f"expects {_EXPECTED[flag.type]}, got {item!r}") from None
    _check_json_and_choice(flag, word, item)
    # Bools become true/false, so that rules reading them (merge_output) see what the trainer
    # will; other values stay as given, since the job's name hashes them.
    return parsed if flag.type == "bool" else item
