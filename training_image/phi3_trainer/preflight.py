"""Everything a run needs that its flags name, checked before the data or the model's weights are
read: on Azure ML a failure after that costs the image pull, the model download and the GPU.

Reads only small files: the model's config.json, its tokenizer, the chat template and, for
--resume, checkpoint records. The model is built from its config on the meta device
(accelerate's ``init_empty_weights``: "all parameters on the meta device, therefore creating an
empty model", accelerate big_modeling.py), so LoRA targets, the attention kernel and the
optimizer are checked against the real architecture without allocating or reading any weight.
Each failure is a :class:`SetupError` naming the flag and the fix.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from accelerate import init_empty_weights
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from jinja2 import TemplateError, TemplateSyntaxError
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    get_scheduler,
)
from transformers.integrations import get_reporting_integration_callbacks
from transformers.utils import is_liger_kernel_available

from phi3_trainer.chat_template import assistant_only_loss_supported
from phi3_trainer.checkpoints import resolve_resume
from phi3_trainer.config import ScriptArguments, TrainerConfig

logger = logging.getLogger(__name__)

# Files AutoTokenizer builds a tokenizer from (transformers tokenization_utils_base.py
# VOCAB_FILES_NAMES / FULL_TOKENIZER_FILE; tokenizer.model for SentencePiece ones).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# A plain conversation every chat template of this trainer must render.
PROBE_CONVERSATION = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi."},
]


class SetupError(ValueError):
    """A flag names something the run cannot use; the message says which and the fix."""


@dataclass(frozen=True)
class Setup:
    """What the checks produced and the run goes on with."""

    tokenizer: PreTrainedTokenizerBase
    assistant_only_loss: bool
    resume_from: Path | None


def prepare(script: ScriptArguments, config: TrainerConfig) -> Setup:
    """Check every file, folder and module the flags name; raise :class:`SetupError`."""
    output_dir = Path(config.output_dir or ".")
    check_output_dir(output_dir)
    try:
        resume_from = resolve_resume(script.resume, output_dir)
    except ValueError as error:
        raise SetupError(str(error)) from None
    model_config = load_model_config(script, config)
    tokenizer = load_tokenizer(script, config)
    assistant_only_loss = bool(config.assistant_only_loss) and assistant_only_loss_supported(
        tokenizer.chat_template, script.unknown_chat_template
    )
    model = empty_model(model_config, script, config)
    trained = with_lora(model, script) if script.use_lora else model
    check_optimizer_and_scheduler(config, trained)
    check_integrations(config)
    return Setup(tokenizer, assistant_only_loss, resume_from)


def check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise SetupError(f"--output_dir {output_dir}: a file, not a folder")
    existing = next(
        p for p in (output_dir.absolute(), *output_dir.absolute().parents) if p.exists()
    )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SetupError(f"--output_dir {output_dir}: {existing} is not writable")


def model_dtype(script: ScriptArguments, config: TrainerConfig) -> torch.dtype:
    """LoRA keeps the frozen base in the compute dtype; full fine-tuning keeps fp32 weights."""
    if not script.use_lora:
        return torch.float32
    return torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32


def _name(value: Any) -> str:
    """A flag's word: TrainingArguments turns optimizer and scheduler names into enums."""
    return str(getattr(value, "value", value))


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), repr(error))


def load_model_config(script: ScriptArguments, config: TrainerConfig) -> PretrainedConfig:
    """config.json of a local folder or of a Hub model, told apart as transformers does: an
    existing folder is local, anything else must be a Hub id (huggingface_hub validate_repo_id:
    "name" or "namespace/name")."""
    name = script.model_name_or_path
    flag = f"--model_name_or_path {name}"
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SetupError(f"{flag}: a file, not a model folder")
        if not (path / "config.json").is_file():
            raise SetupError(
                f"{flag}: the folder has no config.json, so it is not a model folder (give the "
                "folder save_pretrained wrote: config.json, the weights and the tokenizer)"
            )
    else:
        try:
            validate_repo_id(name)
        except HFValidationError:
            raise SetupError(
                f"{flag}: no such folder (and not a Hub model id, which is name or org/name)"
            ) from None
    try:
        loaded: PretrainedConfig = AutoConfig.from_pretrained(
            name, trust_remote_code=config.trust_remote_code
        )
        return loaded
    except (OSError, ValueError) as error:
        if path.exists():
            raise SetupError(f"{flag}: config.json cannot be read: {_first_line(error)}") from None
        raise SetupError(
            f"{flag}: not a local folder, and the Hugging Face Hub did not provide it "
            f"({_first_line(error)}); give a model folder or a Hub id such as "
            "microsoft/Phi-3-mini-4k-instruct"
        ) from None


def load_tokenizer(script: ScriptArguments, config: TrainerConfig) -> PreTrainedTokenizerBase:
    name = script.model_name_or_path
    flag = f"--model_name_or_path {name}"
    folder = Path(name).expanduser()
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise SetupError(
            f"{flag}: the folder has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the "
            "model's tokenizer into it with tokenizer.save_pretrained"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError, TypeError) as error:
        raise SetupError(f"{flag}: its tokenizer cannot be loaded: {_first_line(error)}") from None
    if config.chat_template_path:
        tokenizer.chat_template = read_chat_template(config.chat_template_path)
    if tokenizer.chat_template:
        where = (
            f"--chat_template_path {config.chat_template_path}"
            if config.chat_template_path
            else f"{flag}: its chat template"
        )
        check_chat_template(tokenizer, where)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def read_chat_template(path: str) -> str:
    """A Jinja template file, whatever its name: TRL reads only *.jinja / *.j2 names as templates
    and takes any other path for a tokenizer to clone (trl SFTTrainer.__init__, 1.16), which
    train.py keeps it from doing."""
    file = Path(path).expanduser()
    flag = f"--chat_template_path {path}"
    if file.is_dir():
        raise SetupError(
            f"{flag}: a folder; give a Jinja template file (cloning another tokenizer's template "
            "adds tokens and resizes the embeddings, which this trainer does not do)"
        )
    if not file.is_file():
        raise SetupError(f"{flag}: no such file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SetupError(f"{flag}: not UTF-8 text ({error.reason})") from None


def check_chat_template(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    """Compile and render the template as apply_chat_template will for every example."""
    try:
        tokenizer.apply_chat_template(PROBE_CONVERSATION, tokenize=False)
    except TemplateSyntaxError as error:
        raise SetupError(
            f"{where}: not a valid Jinja template: line {error.lineno}: {error.message}"
        ) from None
    except TemplateError as error:
        raise SetupError(
            f"{where}: the template fails on a plain user/assistant conversation: {error}"
        ) from None


def empty_model(
    model_config: PretrainedConfig, script: ScriptArguments, config: TrainerConfig
) -> PreTrainedModel:
    flag = f"--model_name_or_path {script.model_name_or_path}"
    with init_empty_weights():
        try:
            model: PreTrainedModel = AutoModelForCausalLM.from_config(
                model_config,
                dtype=model_dtype(script, config),
                trust_remote_code=config.trust_remote_code,
            )
        except (ValueError, ImportError) as error:
            raise SetupError(
                f"{flag}: not a causal language model transformers can build: {_first_line(error)}"
            ) from None
    if script.attn_implementation:
        try:
            model.set_attn_implementation(script.attn_implementation)
        except (ValueError, ImportError) as error:
            raise SetupError(
                f"--attn_implementation {script.attn_implementation}: {_first_line(error)}"
            ) from None
    return model


def lora_config(script: ScriptArguments) -> LoraConfig:
    targets = script.lora_target_modules
    return LoraConfig(
        r=script.lora_r,
        lora_alpha=script.lora_alpha,
        lora_dropout=script.lora_dropout,
        # PEFT takes "all-linear" only as the whole value, not as a list item (LoraConfig docs).
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        modules_to_save=script.lora_modules_to_save,
        task_type="CAUSAL_LM",
    )


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
    )


def with_lora(model: PreTrainedModel, script: ScriptArguments) -> PeftModel:
    """The meta model with its LoRA adapters, or the flag that names a module it lacks."""
    names = [name for name, _ in model.named_modules()]
    kind = type(model).__name__
    # PEFT's matching (peft tuners_utils.py check_target_module_exists: the name or a
    # ".name" suffix; utils/other.py _set_trainable: a suffix for modules_to_save).
    targets = [] if script.lora_target_modules == ["all-linear"] else script.lora_target_modules
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    unsaved = [
        m for m in script.lora_modules_to_save or [] if not any(n.endswith(m) for n in names)
    ]
    linear = ", ".join(linear_layer_names(model))
    for flag, absent, hint in (
        ("lora_target_modules", missing, f"its linear layers are {linear} (or give all-linear)"),
        ("lora_modules_to_save", unsaved, f"give some of {linear}, e.g. lm_head"),
    ):
        if absent:
            raise SetupError(
                f"--{flag} {' '.join(absent)}: {kind} (built from the model's config.json) has no "
                f"such module; {hint}"
            )
    try:
        with init_empty_weights():
            return get_peft_model(model, lora_config(script))
    except ValueError as error:
        # PEFT prints the whole module tree of an unsupported target: keep its class name.
        reason = re.sub(
            r"Target module (\w+)\(.*?\) is not", r"Target module \1 is not", str(error), flags=re.S
        )
        raise SetupError(
            f"--lora_target_modules {' '.join(script.lora_target_modules)}: "
            f"{_first_line(ValueError(reason))}"
        ) from None


def check_optimizer_and_scheduler(
    config: TrainerConfig, model: PreTrainedModel | PeftModel
) -> None:
    """Build the optimizer and scheduler the Trainer will build, on one probe parameter."""
    # The Trainer passes its model, a PeftModel for LoRA, despite the annotation.
    trained = cast(PreTrainedModel, model)
    try:
        optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(config, trained)
    except (ValueError, ImportError) as error:
        raise SetupError(f"--optim {_name(config.optim)}: {_first_line(error)}") from None
    probe = [torch.nn.Parameter(torch.zeros(1, device=config.device))]
    if "params" in kwargs or "model" in kwargs:  # GaLore, Apollo, LOMO: built from the model
        optimizer: torch.optim.Optimizer = torch.optim.SGD(probe, lr=config.learning_rate)
    else:
        try:
            optimizer = optimizer_class(probe, **kwargs)
        except (ValueError, TypeError, RuntimeError) as error:
            raise SetupError(
                f"--optim {_name(config.optim)} --optim_args {config.optim_args}: "
                f"{_first_line(error)}"
            ) from None
    scheduler_kwargs = config.lr_scheduler_kwargs
    flags = f"--lr_scheduler_type {_name(config.lr_scheduler_type)} --lr_scheduler_kwargs"
    if isinstance(scheduler_kwargs, str):  # TrainingArguments reads only "{..." as JSON
        raise SetupError(
            f'{flags} {scheduler_kwargs}: give a JSON object, e.g. {{"num_cycles": 2}}'
        )
    steps = 100  # any count: the schedule's shape is not in question here
    try:
        get_scheduler(
            config.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=config.get_warmup_steps(steps),
            num_training_steps=steps,
            scheduler_specific_kwargs=scheduler_kwargs,
        )
    except (ValueError, TypeError) as error:
        raise SetupError(f"{flags} {scheduler_kwargs}: {_first_line(error)}") from None


def check_integrations(config: TrainerConfig) -> None:
    """Trackers and kernels the Trainer would fail to set up after the model loaded."""
    report_to: Any = config.report_to
    try:
        for tracker in get_reporting_integration_callbacks(report_to):
            tracker()  # the constructors check that their package is installed
    except (ValueError, RuntimeError, ImportError) as error:
        raise SetupError(f"--report_to {' '.join(report_to)}: {_first_line(error)}") from None
    if config.use_liger_kernel and not is_liger_kernel_available():
        raise SetupError("--use_liger_kernel true: the liger-kernel package is not installed")
