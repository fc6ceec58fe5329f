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
from transformers import (
    AutoModelForCausalLM,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from trl import SFTTrainer

import phi3_trainer.packed_attention  # noqa: F401 (registers packed_varlen with transformers)
from phi3_trainer import sharding
from phi3_trainer.checkpoints import (
    METRICS_FILE,
    RUN_RECORD,
    finished_run_metrics,
    mark_complete,
)
from phi3_trainer.config import ScriptArguments, TrainerConfig
from phi3_trainer.preflight import Setup, lora_config, model_dtype, prepare
from phi3_trainer.tokenization import chat_encoder, special_token_finder
from phi3_training_rules import attention
from phi3_training_rules.data_validation import (
    InvalidDataError,
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
# A conversation ({"messages": [...]}) with its tokens ("input_ids", "assistant_masks"), which TRL
# trains on as they are; a bare conversation would be tokenized by TRL itself.
Example = dict[str, Any]


class Phi3SFTTrainer(SFTTrainer):
    """Adds perplexity next to every evaluation loss, so trackers and metrics.json show both."""

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = perplexity(logs["eval_loss"])
        super().log(logs, *args, **kwargs)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        self.is_fsdp_enabled = sharding.enable_fsdp_on_cpu(self.accelerator, self.args)


class ThroughputCallback(TrainerCallback):
    """Tokens per second over this process's training time (a resumed run counts its own part)."""

    tokens, seconds = 0, 0.0  # a run with nothing left to train

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
    """Evaluate the last step exactly once, inside training, so trackers log it in the same run.

    At the last step's end, so that the last checkpoint (saved after the evaluation in the same
    step, Trainer._maybe_log_save_evaluate) records it. Once: the Trainer evaluates again at the
    end of the epoch that training stopped in when --eval_strategy is epoch (transformers
    DefaultFlowCallback.on_epoch_end, 5.23), at the same step.
    """

    evaluated_step = -1

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if state.global_step >= state.max_steps:
            control.should_evaluate = True

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.evaluated_step = state.global_step

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if state.global_step == self.evaluated_step:
            control.should_evaluate = False


class NothingLeftToTrain(Exception):
    """The checkpoint resumed from is at or past the last step of this run's schedule."""


class StopIfNothingLeftCallback(TrainerCallback):
    """Stops a resumed run before its first step when the schedule is already complete.

    The Trainer would run one more step before it checks for the end (transformers
    Trainer._run_epoch steps, then DefaultFlowCallback.on_step_end stops), changing the model.
    By on_train_begin it has loaded the checkpoint's weights and state and counted the steps
    this run's flags and data make, so the end is its own.
    """

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if state.global_step >= state.max_steps:
            raise NothingLeftToTrain


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


def load_datasets(
    script: ScriptArguments, config: TrainerConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Validate every file in full, then apply --on_invalid; returns train, eval, data record.

    Each conversation is tokenized once, by the validation, as TRL would (tokenization.py); the
    examples carry those tokens, so TRL does not tokenize again.
    """
    files = [script.train_file, *([script.validation_file] if script.validation_file else [])]
    encode = chat_encoder(tokenizer, bool(config.assistant_only_loss))
    find_special_tokens = special_token_finder(tokenizer)
    reports = [
        validate_chat_jsonl(
            f,
            encode=encode,
            max_length=config.max_length,
            find_special_tokens=find_special_tokens,
        )
        for f in files
    ]
    problems = [p for r in reports for p in r.problems]
    if problems and (script.on_invalid == "fail" or any(p.line == 0 for p in problems)):
        raise InvalidDataError(problems)
    for problem in problems:
        logger.warning("dropped: %s", problem)
    train_report: ValidationReport = reports[0]
    train, evaluation = examples(train_report), examples(reports[1]) if len(reports) > 1 else []
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


def examples(report: ValidationReport) -> list[Example]:
    return [
        {**record, **encoding}
        for record, encoding in zip(report.records, report.encodings, strict=True)
    ]


def load_model(script: ScriptArguments, config: TrainerConfig) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(
        script.model_name_or_path,
        dtype=model_dtype(script, config),
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
    train_examples: list[Example],
    eval_examples: list[Example],
    callbacks: list[TrainerCallback] | None = None,
) -> Phi3SFTTrainer:
    """Load the model and wire the SFT trainer; the data must already be validated."""
    from datasets import Dataset

    callbacks = [*(callbacks or []), MarkCheckpointCompleteCallback()]
    if eval_examples:
        callbacks.append(FinalEvaluationCallback())
    else:
        config.eval_strategy = "no"
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    # The tokenizer already has the template (preflight.load_tokenizer); given the path, TRL
    # would take a name other than *.jinja / *.j2 for a tokenizer to clone and fail.
    template_path, config.chat_template_path = config.chat_template_path, None
    try:
        trainer = Phi3SFTTrainer(
            model=load_model(script, config),
            args=config,
            train_dataset=Dataset.from_list(train_examples),
            eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
            processing_class=tokenizer,
            peft_config=lora_config(script) if script.use_lora else None,
            callbacks=callbacks,
        )
    finally:
        config.chat_template_path = template_path
    # First, so that no other callback (a tracker starting its run) acts on a run that stops.
    trainer.callback_handler.callbacks.insert(0, StopIfNothingLeftCallback())
    return trainer


def train(script: ScriptArguments, config: TrainerConfig) -> dict[str, Any]:
    """Check everything, train (resuming if asked), write outputs; returns metrics.json.

    A folder whose run finished (run.json, written last) is left as it is with --resume auto:
    a resubmitted job or a retry after the outputs were written trains and writes nothing.
    """
    output_dir = Path(config.output_dir or ".")
    finished = finished_run_metrics(output_dir) if script.resume == "auto" else None
    if finished is not None:
        logger.info(
            "%s holds a finished run (%s, step %s): nothing to train, nothing rewritten. To train "
            "again, give another --output_dir or --resume never.",
            output_dir,
            RUN_RECORD,
            finished.get("global_step"),
        )
        return finished
    script.model_name_or_path = absolute_if_local(script.model_name_or_path)
    if config.report_to and "mlflow" in config.report_to:
        os.environ.setdefault("MLFLOW_MAX_LOG_PARAMS", MLFLOW_PARAM_LIMIT)
    script.attn_implementation = attention.choose({**vars(script), **vars(config)})
    setup = prepare(script, config)
    config.assistant_only_loss = setup.assistant_only_loss
    train_examples, eval_examples, data_record = load_datasets(script, config, setup.tokenizer)
    throughput = ThroughputCallback()
    trainer = build_trainer(
        script, config, setup.tokenizer, train_examples, eval_examples, [throughput]
    )
    del train_examples, eval_examples  # the trainer's datasets hold them now
    if trainer.is_world_process_zero():
        # This run replaces whatever the folder held: until it finishes, nothing is finished.
        (output_dir / RUN_RECORD).unlink(missing_ok=True)
    train_metrics = run_training(trainer, setup)
    metrics = collect_metrics(trainer, train_metrics, throughput)
    weights = sharding.gathered_weights(trainer)  # every rank sends its shards to rank 0
    if trainer.is_world_process_zero():
        write_outputs(trainer, script, config, setup, metrics, data_record, weights)
    trainer.accelerator.wait_for_everyone()
    return metrics


def run_training(trainer: SFTTrainer, setup: Setup) -> dict[str, float]:
    """The Trainer's own metrics; none when the checkpoint resumed from already ended the run
    (killed after its last checkpoint, before the outputs): its weights are what gets written."""
    resume_from = setup.resume_from
    try:
        return trainer.train(
            resume_from_checkpoint=str(resume_from) if resume_from else None
        ).metrics
    except NothingLeftToTrain:
        logger.info(
            "%s is at step %d of %d: nothing left to train; writing the outputs from it",
            resume_from,
            trainer.state.global_step,
            trainer.state.max_steps,
        )
        return {}


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
    setup: Setup,
    metrics: dict[str, Any],
    data_record: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Models, metrics.json, then run.json: written last and whole, it marks the run finished.

    ``weights``: the gathered full weights of a sharded model (its parameters hold shards).
    """
    out = Path(config.output_dir or ".")
    tokenizer, resume_from = setup.tokenizer, setup.resume_from
    model = trainer.accelerator.unwrap_model(trainer.model)
    if script.use_lora:
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        model = model.merge_and_unload() if script.merge_output else None
    if model is not None:
        model.config.use_cache = True  # training turns the cache off; serving wants it on
        model.save_pretrained(out / "merged", state_dict=weights)
        tokenizer.save_pretrained(out / "merged")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    run = {
        "script_args": asdict(script),
        "training_args": config.to_dict(),  # type: ignore[no-untyped-call]  # inherited, unannotated in transformers
        "seed": config.seed,
        "assistant_only_loss": config.assistant_only_loss,
        "resumed_from": str(resume_from) if resume_from else None,
        "data": data_record,
        "versions": {"python": platform.python_version(), **{n: version(n) for n in LIBRARIES}},
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "command": sys.argv,
    }
    partial = out / f"{RUN_RECORD}.partial"
    partial.write_text(json.dumps(run, indent=2, default=str) + "\n")
    partial.replace(out / RUN_RECORD)  # atomic: a kill leaves no half-written record
