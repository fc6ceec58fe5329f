"""Fine-tune a Phi-3 model with TRL's SFTTrainer: validate, train, write the outputs."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from trl import SFTTrainer

from phi3_trainer.chat_template import assistant_only_loss_supported
from phi3_trainer.checkpoints import mark_complete, resolve_resume
from phi3_trainer.config import ScriptArguments, TrainerConfig
from phi3_trainer.data_validation import (
    ChatRecord,
    InvalidDataError,
    Messages,
    Problem,
    ValidationReport,
    sha256_of,
    split_records,
    validate_chat_jsonl,
)

logger = logging.getLogger("phi3_trainer")

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers")
# Azure ML's MLflow rejects a run that logs too many parameters; the Trainer logs ~250 otherwise.
MLFLOW_PARAM_LIMIT = "100"


class Phi3SFTTrainer(SFTTrainer):
    """Adds perplexity next to every evaluation loss, so trackers and metrics.json show both."""

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
        super().log(logs, *args, **kwargs)


class ThroughputCallback(TrainerCallback):
    """Tokens per second over this process's training time (a resumed run counts its own part)."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.start_tokens, self.start_time = state.num_input_tokens_seen, time.perf_counter()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.seconds = time.perf_counter() - self.start_time
        self.tokens = state.num_input_tokens_seen - self.start_tokens


class FinalEvaluationCallback(TrainerCallback):
    """Evaluate at the last step, inside training, so trackers log it in the same run."""

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if state.global_step >= state.max_steps:
            control.should_evaluate = True


class MarkCheckpointCompleteCallback(TrainerCallback):
    """Once every rank has written its part of a checkpoint, mark it complete for --resume."""

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        PartialState().wait_for_everyone()
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
            mark_complete(checkpoint, state.global_step, args.world_size)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else math.inf


def load_tokenizer(script: ScriptArguments, config: TrainerConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        script.model_name_or_path, trust_remote_code=config.trust_remote_code
    )
    if config.chat_template_path:
        tokenizer.chat_template = Path(config.chat_template_path).read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_datasets(
    script: ScriptArguments, config: TrainerConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[ChatRecord], list[ChatRecord], dict[str, Any]]:
    """Validate every file in full, then apply --on_invalid; returns train, eval, data record."""

    def count_tokens(messages: Messages) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    files = [script.train_file, *([script.validation_file] if script.validation_file else [])]
    reports = [
        validate_chat_jsonl(f, count_tokens=count_tokens, max_length=config.max_length)
        for f in files
    ]
    problems = [p for r in reports for p in r.problems]
    if problems and (script.on_invalid == "fail" or any(p.line == 0 for p in problems)):
        raise InvalidDataError(problems)
    for problem in problems:
        logger.warning("dropped: %s", problem)
    train_report: ValidationReport = reports[0]
    train, evaluation = train_report.records, reports[1].records if len(reports) > 1 else []
    if not script.validation_file and script.validation_split > 0:
        try:
            train, evaluation = split_records(train, script.validation_split, config.seed)
        except ValueError as error:
            raise InvalidDataError([Problem(script.train_file, 0, str(error))]) from error
    if not train:
        raise InvalidDataError(problems) if problems else ValueError("no training examples")
    record = {
        "files": {
            f: {"sha256": sha256_of(f), "valid": len(r.records)}
            for f, r in zip(files, reports, strict=True)
        },
        "dropped": [str(p) for p in problems],
        "train_examples": len(train),
        "eval_examples": len(evaluation),
        "validation_split": None if script.validation_file else script.validation_split,
        "split_seed": config.seed,
    }
    return train, evaluation, record


def load_model(script: ScriptArguments, config: TrainerConfig) -> PreTrainedModel:
    # LoRA keeps the frozen base in the compute dtype; full fine-tuning keeps fp32 master weights.
    half = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    return AutoModelForCausalLM.from_pretrained(
        script.model_name_or_path,
        dtype=half if script.use_lora else torch.float32,
        attn_implementation=script.attn_implementation,
        trust_remote_code=config.trust_remote_code,
    )


def absolute_if_local(name_or_path: str) -> str:
    # A LoRA adapter records its base as given; a relative folder would not resolve elsewhere.
    return str(Path(name_or_path).resolve()) if Path(name_or_path).is_dir() else name_or_path


def build_trainer(
    script: ScriptArguments,
    config: TrainerConfig,
    tokenizer: PreTrainedTokenizerBase,
    train_records: list[ChatRecord],
    eval_records: list[ChatRecord],
    callbacks: list[TrainerCallback] | None = None,
) -> Phi3SFTTrainer:
    """Load the model and wire the SFT trainer; the data must already be validated."""
    from datasets import Dataset

    callbacks = [*(callbacks or []), MarkCheckpointCompleteCallback()]
    if eval_records:
        callbacks.append(FinalEvaluationCallback())
    else:
        config.eval_strategy = "no"
    if config.early_stopping_patience:
        if not eval_records:
            raise ValueError("--early_stopping_patience needs validation data")
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    return Phi3SFTTrainer(
        model=load_model(script, config),
        args=config,
        train_dataset=Dataset.from_list(train_records),
        eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
        processing_class=tokenizer,
        peft_config=lora_config(script) if script.use_lora else None,
        callbacks=callbacks,
    )


def train(script: ScriptArguments, config: TrainerConfig) -> dict[str, Any]:
    """Validate everything, train (resuming if asked), write outputs; returns metrics.json."""
    script.model_name_or_path = absolute_if_local(script.model_name_or_path)
    if config.report_to and "mlflow" in config.report_to:
        os.environ.setdefault("MLFLOW_MAX_LOG_PARAMS", MLFLOW_PARAM_LIMIT)
    tokenizer = load_tokenizer(script, config)
    if config.assistant_only_loss:
        config.assistant_only_loss = assistant_only_loss_supported(
            tokenizer.chat_template, script.unknown_chat_template
        )
    train_records, eval_records, data_record = load_datasets(script, config, tokenizer)
    resume_from = resolve_resume(script.resume, config.output_dir or ".")
    throughput = ThroughputCallback()
    trainer = build_trainer(script, config, tokenizer, train_records, eval_records, [throughput])
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics = collect_metrics(trainer, result.metrics, throughput)
    if trainer.is_world_process_zero():
        write_outputs(trainer, script, config, tokenizer, metrics, data_record, resume_from)
    trainer.accelerator.wait_for_everyone()
    return metrics


def lora_config(script: ScriptArguments) -> LoraConfig:
    return LoraConfig(
        r=script.lora_r,
        lora_alpha=script.lora_alpha,
        lora_dropout=script.lora_dropout,
        target_modules=script.lora_target_modules,
        modules_to_save=script.lora_modules_to_save,
        task_type="CAUSAL_LM",
    )


def collect_metrics(
    trainer: SFTTrainer,
    train_metrics: dict[str, float],
    throughput: ThroughputCallback,
) -> dict[str, Any]:
    history = trainer.state.log_history
    final_eval = next((h for h in reversed(history) if "eval_loss" in h), {})
    return {
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train_loss": train_metrics.get("train_loss"),
        "train_loss_first_logged": next((h["loss"] for h in history if "loss" in h), None),
        "train_loss_last_logged": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "eval_loss": final_eval.get("eval_loss"),
        "eval_perplexity": final_eval.get("eval_perplexity"),
        "eval_history": [
            {k: h[k] for k in ("epoch", "step", "eval_loss", "eval_perplexity")}
            for h in history
            if "eval_loss" in h
        ],
        # With early stopping the best checkpoint, not the last step, is what gets saved.
        "best_eval_loss": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "tokens_seen": trainer.state.num_input_tokens_seen,
        "tokens_this_run": throughput.tokens,
        "train_seconds_this_run": round(throughput.seconds, 3),
        "tokens_per_second": round(throughput.tokens / throughput.seconds, 1)
        if throughput.seconds
        else None,
        "world_size": trainer.args.world_size,
    }


def write_outputs(
    trainer: SFTTrainer,
    script: ScriptArguments,
    config: TrainerConfig,
    tokenizer: PreTrainedTokenizerBase,
    metrics: dict[str, Any],
    data_record: dict[str, Any],
    resume_from: Path | None,
) -> None:
    out = Path(config.output_dir or ".")
    model = trainer.accelerator.unwrap_model(trainer.model)
    if script.use_lora:
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        model = model.merge_and_unload() if script.merge_output else None
    if model is not None:
        model.config.use_cache = True  # training turns the cache off; serving wants it on
        model.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    run = {
        "script_args": asdict(script),
        "training_args": config.to_dict(),
        "seed": config.seed,
        "assistant_only_loss": config.assistant_only_loss,
        "resumed_from": str(resume_from) if resume_from else None,
        "data": data_record,
        "versions": {"python": platform.python_version(), **{n: version(n) for n in LIBRARIES}},
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "command": sys.argv,
    }
    (out / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
