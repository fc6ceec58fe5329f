"""Command-line and YAML configuration, parsed the way TRL's own scripts do it.

Two dataclasses: :class:`ScriptArguments` (what to train on, LoRA, resume, data policy) and
:class:`TrainerConfig`, TRL's ``SFTConfig`` with defaults for Phi-3-mini on one A100 80GB. Every
``SFTConfig``/``TrainingArguments`` field stays a flag; ``--config FILE.yaml`` sets any of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NoReturn

from trl.scripts.utils import TrlParser
from trl.trainer.sft_config import SFTConfig

from phi3_trainer import sharding
from phi3_training_rules import flag_rules, memory

# Phi-3 fuses q/k/v and gate/up into single projections; these are its four linear module names.
PHI3_LORA_TARGETS = list(memory.LINEAR_MODULES)


@dataclass
class ScriptArguments:
    train_file: str = field(
        metadata={"help": "Training data: chat JSONL, one {'messages': [...]}."}
    )
    model_name_or_path: str = field(
        default="microsoft/Phi-3-mini-4k-instruct",
        metadata={"help": "Hub id or local folder of a Phi-3 / Phi-3.5 model."},
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Validation chat JSONL; when absent a seeded split is used."},
    )
    validation_split: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the training file held out for evaluation when no validation file "
            "is given (shuffled with --seed); 0 disables evaluation."
        },
    )
    on_invalid: Literal["fail", "drop"] = field(
        default="fail",
        metadata={
            "help": "Invalid or too-long examples: report and stop, or report and drop them."
        },
    )
    unknown_chat_template: Literal["fail", "train_on_all_tokens"] = field(
        default="fail",
        metadata={
            "help": "A chat template without {%% generation %%} markers that is not a stock "
            "Phi-3 one: stop, or fall back to loss on every token."
        },
    )
    resume: str = field(
        default="auto",
        metadata={
            "help": "'auto': continue from the newest complete checkpoint in --output_dir if any; "
            "'never': start afresh; or a checkpoint folder."
        },
    )
    use_lora: bool = field(
        default=True, metadata={"help": "LoRA fine-tuning; --use_lora false for full fine-tuning."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(PHI3_LORA_TARGETS),
        metadata={
            "help": "Modules LoRA adapts (Phi-3's fused projections by default), or all-linear; "
            "checked against the model's module names before it loads."
        },
    )
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata={"help": "Modules trained in full beside the adapter (e.g. lm_head)."},
    )
    merge_output: bool = field(
        default=True,
        metadata={"help": "Write merged/: the full model in safetensors with the tokenizer."},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel, e.g. sdpa or flash_attention_2."}
    )

    @property
    def has_validation_data(self) -> bool:
        return bool(self.validation_file or self.validation_split)


@dataclass
class TrainerConfig(SFTConfig):
    """``SFTConfig`` with defaults for Phi-3-mini (3.8B) LoRA on one A100 80GB."""

    output_dir: str | None = field(
        default="outputs", metadata={"help": "Checkpoints, adapter, merged model and records."}
    )
    max_length: int | None = field(default=2048, metadata={"help": "Tokens per packed sequence."})
    packing: bool = field(default=True, metadata={"help": "Pack examples (padding-free)."})
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Compute the loss on assistant tokens only."}
    )
    learning_rate: float = field(
        default=2e-4, metadata={"help": "Peak learning rate (use about 1e-5 for full fine-tuning)."}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Scheduler type."})
    warmup_steps: float = field(
        default=0.03, metadata={"help": "Warm-up steps; below 1, a fraction of all steps."}
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the data."})
    # Packing is padding-free: a micro-batch is flattened into one sequence, and without a
    # variable-length attention kernel (flash-attn) attention grows with the square of that
    # length. So one packed row of max_length per micro-step, and accumulation for the update
    # (16 x 2048 = 32k tokens).
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Rows per step."})
    per_device_eval_batch_size: int = field(default=1, metadata={"help": "Rows per eval step."})
    gradient_accumulation_steps: int = field(default=16, metadata={"help": "Steps per update."})
    # transformers renamed gradient_checkpointing to activation_checkpointing; both stay None
    # here so that whichever the user sets wins, and parse_args decides otherwise.
    activation_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute activations to save memory (default: on only when the memory "
            "estimate does not fit the GPU without it; on without a GPU)."
        },
    )
    gradient_checkpointing: bool | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "Deprecated alias of --activation_checkpointing."}
    )
    bf16: bool | None = field(  # type: ignore[assignment]
        default=None,
        metadata={"help": "bf16 mixed precision; default: on where the GPU supports it."},
    )
    eval_strategy: str = field(
        default="epoch", metadata={"help": "When to evaluate (off without validation data)."}
    )
    save_strategy: str = field(default="steps", metadata={"help": "When to checkpoint."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=3, metadata={"help": "Checkpoints kept."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    # transformers reads any other word as "no" and counts nothing: hence the choices.
    include_num_input_tokens_seen: str = field(
        default="non_padding",
        metadata={"help": "Count tokens seen.", "choices": ["all", "non_padding", "no"]},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without a lower eval loss; checkpoints then "
            "follow the evaluations, and the best one is what gets written out."
        },
    )
    report_to: None | str | list[str] = field(  # noqa: RUF036 (the order HfArgumentParser reads)
        default=None,
        metadata={"help": "Trackers; default: mlflow when MLFLOW_TRACKING_URI is set, else none."},
    )

    def __post_init__(self) -> None:
        import torch

        # Neither flag given: on for now; parse_args sizes it by the GPU
        # (phi3_training_rules.memory).
        self.activation_checkpointing_unset = (
            self.activation_checkpointing is None and self.gradient_checkpointing is None
        )
        if self.activation_checkpointing_unset:
            self.activation_checkpointing = True
        if self.report_to is None:
            self.report_to = "mlflow" if os.environ.get("MLFLOW_TRACKING_URI") else "none"
        cuda = torch.cuda.is_available()
        # Without a GPU, say so: accelerate then runs torchrun workers as CPU DDP (gloo) instead
        # of as independent copies of the same job.
        self.use_cpu = self.use_cpu or not cuda
        if self.bf16 is None:
            self.bf16 = cuda and torch.cuda.is_bf16_supported() and not self.fp16
            self.fp16 = self.fp16 or (cuda and not self.bf16)
        if self.early_stopping_patience is not None and self.eval_strategy != "no":
            self._checkpoint_every_evaluation()  # with "no": refused by flag_rules
        super().__post_init__()  # type: ignore[no-untyped-call]  # inherited, unannotated in transformers

    def _checkpoint_every_evaluation(self) -> None:
        """Early stopping keeps the best evaluation's weights: each evaluation needs a checkpoint.

        Set before ``TrainingArguments.__post_init__`` so that its consistency checks see them.
        """
        self.load_best_model_at_end = True
        self.metric_for_best_model = "eval_loss"
        if self.save_strategy != "best":  # "best" saves at exactly the evaluations that matter
            self.save_strategy = self.eval_strategy
        if self.eval_strategy == "steps":
            # Unset eval_steps falls back to logging_steps, as TrainingArguments does it.
            self.eval_steps = self.eval_steps or self.logging_steps
            self.save_steps = self.eval_steps


def make_parser() -> TrlParser:
    dataclass_types: list[Any] = [ScriptArguments, TrainerConfig]
    return TrlParser(dataclass_types, prog="python -m phi3_trainer")


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, TrainerConfig]:
    """Flags, with ``--config FILE.yaml`` for defaults (flags given on the command line win).

    A bad value or combination exits with status 2 and the message, like argparse's own errors,
    instead of a traceback from the dataclasses' checks or, later, from the Trainer.
    """
    parser = make_parser()
    try:
        script_args, training_args = parser.parse_args_and_config(args=argv)
    # TrainingArguments.__post_init__ raises these for values it reads: ValueError for most,
    # TypeError for an unknown --accelerator_config key, ImportError for --deepspeed without it.
    except (ValueError, TypeError, ImportError) as error:
        _refuse(parser, [str(error)])
    values = {
        f.name: getattr(obj, f.name) for obj in (script_args, training_args) for f in fields(obj)
    }
    problems = flag_rules.problems(values, has_validation_data=script_args.has_validation_data)
    if problems:
        _refuse(parser, [str(problem) for problem in problems])
    if training_args.activation_checkpointing_unset:
        training_args.activation_checkpointing = training_args.gradient_checkpointing = (
            memory.default_checkpointing(
                values, script_args.model_name_or_path, sharding.world_size(), gpu_memory()
            )
        )
    try:
        sharding.configure(script_args, training_args)  # FSDP2 for full fine-tuning on N GPUs
    except sharding.ShardingError as error:
        _refuse(parser, [str(error)])
    return script_args, training_args


def gpu_memory() -> int | None:
    """Bytes of memory of this process's GPU (torchrun's LOCAL_RANK); None without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = int(os.environ.get("LOCAL_RANK", "0"))
    return int(torch.cuda.get_device_properties(device).total_memory)


def _refuse(parser: TrlParser, problems: list[str]) -> NoReturn:
    # Not parser.error(): its usage line lists every SFTConfig flag and buries the message.
    lines = "".join(f"{parser.prog}: error: {problem}\n" for problem in problems)
    parser.exit(2, lines)
