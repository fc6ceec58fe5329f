"""Values and combinations of the trainer's flags that would fail or mislead only after the model
has loaded, refused while the flags are read.

Standard library only: the Pulumi program checks a stack's `trainerArgs` with these same rules
(phi3_infra.trainer_flags) before it creates anything, as it uses the trainer's data validator.

TrainingArguments.__post_init__ (transformers 5.23 training_args.py, `_validate_args`) checks
only a few values: warmup_steps >= 0, non-zero logging/eval steps for the steps strategy, whole
logging/eval/save steps above 1, torch_empty_cache_steps > 0, fp16 with bf16, schedulers that need
an evaluation, prefetch without workers. Everything else below was, before this table, a
traceback after loading (batch size 0: torch's DataLoader; a negative learning rate, betas or
epsilon: torch.optim.AdamW; a negative seed: numpy's seed), or a run that "succeeds" doing
something else (0 epochs trains nothing; a negative max_grad_norm turns clipping off; a
fractional warmup above 1 is truncated by TrainingArguments.get_warmup_steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

# numpy's legacy seed, which transformers' set_seed calls, takes 0 <= seed < 2**32.
_SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Bounds:
    """The numbers a flag takes; None (the flag's "off" or "unset") always passes."""

    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is excluded
    below: bool = False  # the maximum itself is excluded
    special: float | None = None  # one value outside the bounds with its own meaning
    special_means: str = ""
    whole_from_one: bool = False  # below 1 a fraction, from 1 on a count of steps
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, as a phrase after the flag's name; None when it is fine."""
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return None  # text or lists: the parser's type check owns them
        if self.special is not None and value == self.special:
            return None
        if not self._within(value):
            return f"must be {self.describe()}, got {value}{self.note}"
        if self.whole_from_one and value >= 1 and value != int(value):
            return f"must be a whole number of steps from 1 on (below 1: a fraction), got {value}"
        return None

    def _within(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        low = self.minimum is None or (
            value > self.minimum if self.above else value >= self.minimum
        )
        high = self.maximum is None or (
            value < self.maximum if self.below else value <= self.maximum
        )
        return low and high

    def describe(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"in {'(' if self.above else '['}{_num(self.minimum)}, {_num(self.maximum)}" + (
                ")" if self.below else "]"
            )
        text = f"above {_num(self.minimum)}" if self.above else f"at least {_num(self.minimum)}"
        if self.special is not None:
            text += f" (or {_num(self.special)}: {self.special_means})"
        return text


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and value == int(value) else str(value)


COUNT = Bounds(minimum=1)
POSITIVE = Bounds(minimum=0, above=True)
NOT_NEGATIVE = Bounds(minimum=0)
FRACTION = Bounds(minimum=0, maximum=1, below=True)
SEED = Bounds(minimum=0, maximum=_SEED_MAX)

RANGES: Mapping[str, Bounds] = {
    # Ours (config.ScriptArguments / TrainerConfig).
    "validation_split": FRACTION,
    "lora_r": COUNT,
    "lora_alpha": COUNT,
    "lora_dropout": FRACTION,
    "early_stopping_patience": COUNT,
    # transformers TrainingArguments and TRL SFTConfig.
    "per_device_train_batch_size": COUNT,
    "per_device_eval_batch_size": COUNT,
    "gradient_accumulation_steps": COUNT,
    "eval_accumulation_steps": COUNT,
    "learning_rate": POSITIVE,
    "num_train_epochs": Bounds(minimum=0, above=True, note=" (0 epochs trains nothing)"),
    "max_steps": Bounds(minimum=1, special=-1, special_means="train for --num_train_epochs"),
    "warmup_steps": Bounds(minimum=0, whole_from_one=True),
    "weight_decay": NOT_NEGATIVE,
    "adam_beta1": FRACTION,
    "adam_beta2": FRACTION,
    "adam_epsilon": NOT_NEGATIVE,
    "max_grad_norm": Bounds(minimum=0, note=" (0 turns gradient clipping off)"),
    "label_smoothing_factor": FRACTION,
    "neftune_noise_alpha": POSITIVE,
    "logging_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_delay": NOT_NEGATIVE,
    "seed": SEED,
    "data_seed": SEED,
    "dataloader_num_workers": NOT_NEGATIVE,
    "dataloader_prefetch_factor": COUNT,
    "ddp_timeout": COUNT,
    "ddp_bucket_cap_mb": COUNT,
    "dataset_num_proc": COUNT,
    "max_length": COUNT,
    "pad_to_multiple_of": COUNT,
}

GIVEN = "<given>"  # a condition that any value other than None meets


@dataclass(frozen=True)
class FlagProblem:
    """A refused flag: ``reason`` follows the flag's name (``--lr`` + ``must be above 0, ...``)."""

    flag: str
    reason: str

    def __str__(self) -> str:
        return f"--{self.flag} {self.reason}"


@dataclass(frozen=True)
class Conflict:
    """Refused when every flag in ``when`` has one of its listed values."""

    when: Mapping[str, tuple[Any, ...]]
    fix: str

    def applies(self, values: Mapping[str, Any]) -> bool:
        return all(
            name in values and _meets(values[name], wanted) for name, wanted in self.when.items()
        )

    def problem(self, values: Mapping[str, Any]) -> FlagProblem:
        first, *others = self.when
        given = ", ".join(f"--{name} {_word(values[name])}" for name in others)
        return FlagProblem(
            first, f"{_word(values[first])}{' with ' if given else ''}{given}: {self.fix}"
        )


def _meets(value: Any, wanted: tuple[Any, ...]) -> bool:
    if GIVEN in wanted:
        return value is not None
    return any(value is w if isinstance(w, bool) else _plain(value) == w for w in wanted)


def _plain(value: Any) -> Any:
    # TrainingArguments turns strategy and scheduler names into enums (IntervalStrategy, ...).
    return value.value if isinstance(value, Enum) else value


def _word(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(_plain(value))


CONFLICTS: tuple[Conflict, ...] = (
    Conflict(
        {"padding_free": (True,), "packing": (False,), "max_length": (GIVEN,)},
        # trl SFTTrainer.__init__ (1.16) raises after the model loaded: padding-free batches
        # without packing do not cut examples to max_length.
        "padding-free batches need packing to keep --max_length; packing, with its default bfd "
        "strategy, is padding-free already: leave --padding_free out or drop --packing false "
        "(or give --max_length none: examples are then never cut)",
    ),
    Conflict(
        # trl SFTTrainer._prepare_dataset (1.16): "When packing is enabled, `max_length` can't
        # be `None`", after the model loaded.
        {"max_length": (None,), "packing": (True,)},
        "packing needs --max_length, the length of a packed row",
    ),
    Conflict({"fp16": (True,), "bf16": (True,)}, "choose one of --fp16 and --bf16"),
    Conflict(
        {"lr_scheduler_type": ("reduce_lr_on_plateau", "greedy"), "eval_strategy": ("no",)},
        "this scheduler steps on evaluations: set --eval_strategy steps or epoch",
    ),
    Conflict(
        {"early_stopping_patience": (GIVEN,), "eval_strategy": ("no",)},
        "early stopping follows evaluations: set --eval_strategy steps or epoch",
    ),
    # The trainer loads the model and resumes itself (train.py): these would be ignored.
    Conflict(
        {"resume_from_checkpoint": (GIVEN,)},
        "not read by this trainer; use --resume (auto, never, or a checkpoint folder)",
    ),
    Conflict(
        {"model_init_kwargs": (GIVEN,)},
        "not read by this trainer, which loads the model itself; use --attn_implementation "
        "(the dtype follows --bf16 / --fp16)",
    ),
)

# Their defaults travel in the Pulumi program's flag table (scripts/trainer_flags.py), so that a
# stack giving only some of a combination's flags is checked against the trainer's defaults.
CONFLICT_FLAGS = frozenset(name for conflict in CONFLICTS for name in conflict.when)

# Flags whose value needs an evaluation, hence validation data (--validation_file or a
# --validation_split above 0): without it they fail inside the Trainer or do nothing.
NEED_EVALUATION: Mapping[str, tuple[Any, ...]] = {
    "early_stopping_patience": (GIVEN,),
    "load_best_model_at_end": (True,),
    "eval_on_start": (True,),
    "save_strategy": ("best",),
    "lr_scheduler_type": ("reduce_lr_on_plateau", "greedy"),
}


def problems(
    values: Mapping[str, Any], *, has_validation_data: bool | None = None
) -> list[FlagProblem]:
    """Every refused value and combination among ``values`` (flag name -> parsed value).

    The trainer passes every flag; the Pulumi program those a stack gives over the trainer's
    defaults of CONFLICT_FLAGS. ``has_validation_data`` is None where it is not known (plan
    time: the program sets --validation_file).
    """
    found = [
        FlagProblem(name, reason)
        for name, value in values.items()
        if name in RANGES and (reason := RANGES[name].problem(value))
    ]
    found += [c.problem(values) for c in CONFLICTS if c.applies(values)]
    if has_validation_data is False:
        found += [
            FlagProblem(
                name,
                f"{_word(values[name])} needs validation data: give --validation_file or a "
                "--validation_split above 0",
            )
            for name, wanted in NEED_EVALUATION.items()
            if name in values and _meets(values[name], wanted)
        ]
    return found
