"""Flags and YAML: TRL-style dataclasses with Phi-3-mini defaults; --help stays light."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from trl.trainer.sft_config import SFTConfig

from phi3_trainer.config import PHI3_LORA_TARGETS, make_parser, parse_args
from phi3_training_rules import flag_rules


def test_defaults_suit_phi3_mini_lora(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    script, config = parse_args(["--train_file", "train.jsonl"])
    assert script.model_name_or_path == "microsoft/Phi-3-mini-4k-instruct"
    assert script.use_lora and script.lora_target_modules == PHI3_LORA_TARGETS
    assert script.resume == "auto" and script.on_invalid == "fail"
    assert config.packing and config.assistant_only_loss and config.activation_checkpointing
    assert config.max_length == 2048 and config.eval_strategy == "epoch"
    assert config.report_to == [] or config.report_to == ["none"]
    # No GPU here: neither bf16 nor fp16, so the run is plain fp32 on CPU.
    assert not config.bf16 and not config.fp16


def test_mlflow_is_used_when_a_tracking_uri_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/mlruns")
    _, config = parse_args(["--train_file", "t.jsonl"])
    assert config.report_to == ["mlflow"]


def test_yaml_config_sets_values_and_flags_override_it(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "train_file: data/train.jsonl\nlora_r: 64\nlearning_rate: 1.0e-4\npacking: false\n"
        "lora_target_modules: [qkv_proj, o_proj]\n"
    )
    script, config = parse_args(["--config", str(yaml_file), "--lora_r", "8"])
    assert script.train_file == "data/train.jsonl" and script.lora_r == 8
    assert script.lora_target_modules == ["qkv_proj", "o_proj"]
    assert config.learning_rate == 1e-4 and not config.packing


def test_every_sft_config_field_is_a_flag() -> None:
    options = set(make_parser()._option_string_actions)
    missing = [
        f.name for f in dataclasses.fields(SFTConfig) if f.init and f"--{f.name}" not in options
    ]
    assert not missing


# Each of these used to pass the parser and then fail after the model loaded (a traceback from
# torch's DataLoader or optimizer, numpy's seed, TRL's trainer), or "succeed" doing something
# else (0 epochs trained nothing; a fractional warm-up above 1 was truncated).
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--validation_split", "1.5"], "--validation_split must be in [0, 1), got 1.5"),
        (["--early_stopping_patience", "0"], "--early_stopping_patience must be at least 1"),
        (
            ["--early_stopping_patience", "2", "--eval_strategy", "no"],
            "--early_stopping_patience 2 with --eval_strategy no: early stopping follows "
            "evaluations",
        ),
        (
            ["--early_stopping_patience", "2", "--validation_split", "0"],
            "--early_stopping_patience 2 needs validation data",
        ),
        (
            ["--per_device_train_batch_size", "0"],
            "--per_device_train_batch_size must be at least 1, got 0",
        ),
        (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size must be at least 1"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least"),
        (["--learning_rate", "-1"], "--learning_rate must be above 0, got -1.0"),
        (["--learning_rate", "nan"], "--learning_rate must be above 0, got nan"),
        (["--num_train_epochs", "0"], "--num_train_epochs must be above 0, got 0.0"),
        (
            ["--max_steps", "0"],
            "--max_steps must be at least 1 (or -1: train for --num_train_epochs), got 0",
        ),
        (
            ["--packing", "false", "--padding_free", "true"],
            "--padding_free true with --packing false, --max_length 2048: padding-free batches "
            "need packing",
        ),
        (["--max_length", "none"], "--max_length None with --packing true: packing needs"),
        (["--warmup_steps", "2.5"], "--warmup_steps must be a whole number of steps from 1 on"),
        (["--adam_beta1", "1"], "--adam_beta1 must be in [0, 1), got 1.0"),
        (["--adam_epsilon", "-0.1"], "--adam_epsilon must be at least 0"),
        (["--weight_decay", "-0.1"], "--weight_decay must be at least 0"),
        (["--max_grad_norm", "-1"], "(0 turns gradient clipping off)"),
        (["--label_smoothing_factor", "1"], "--label_smoothing_factor must be in [0, 1)"),
        (["--save_steps", "0"], "--save_steps must be above 0, got 0"),
        (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["--dataloader_num_workers", "-1"], "--dataloader_num_workers must be at least 0"),
        (["--pad_to_multiple_of", "0"], "--pad_to_multiple_of must be at least 1, got 0"),
        (["--max_length", "0"], "--max_length must be at least 1, got 0"),
        (["--lora_r", "0"], "--lora_r must be at least 1, got 0"),
        (["--lora_alpha", "0"], "--lora_alpha must be at least 1, got 0"),
        (["--lora_dropout", "1"], "--lora_dropout must be in [0, 1), got 1.0"),
        (["--resume_from_checkpoint", "ckpt"], "not read by this trainer; use --resume"),
        (["--model_init_kwargs", '{"dtype": "bfloat16"}'], "not read by this trainer"),
        (["--accelerator_config", '{"not_a_key": 1}'], "unexpected keyword argument 'not_a_key'"),
        (
            [
                "--load_best_model_at_end",
                "true",
                "--save_strategy",
                "epoch",
                "--validation_split",
                "0",
            ],
            "--load_best_model_at_end true needs validation data",
        ),
        (
            ["--lr_scheduler_type", "reduce_lr_on_plateau", "--validation_split", "0"],
            "--lr_scheduler_type reduce_lr_on_plateau needs validation data",
        ),
        (["--save_strategy", "best", "--validation_split", "0"], "--save_strategy best needs"),
    ],
)
def test_bad_values_are_named(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--train_file", "t.jsonl", *flags])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags",
    [
        ["--max_steps", "-1"],
        ["--warmup_steps", "0.5"],
        ["--warmup_steps", "10"],
        ["--max_grad_norm", "0"],
        ["--save_total_limit", "0"],
        ["--seed", "0"],
        ["--packing", "false", "--padding_free", "true", "--max_length", "none"],
        ["--lora_dropout", "0"],
    ],
)
def test_values_at_the_edges_pass(flags: list[str]) -> None:
    parse_args(["--train_file", "t.jsonl", *flags])


def test_every_bad_value_is_listed_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--train_file", "t", "--per_device_train_batch_size", "0", "--seed", "-3"])
    err = capsys.readouterr().err
    assert "--per_device_train_batch_size must be" in err and "--seed must be" in err


# Numeric flags without a range, and why: any other numeric flag needs a rule in flag_rules.
UNBOUNDED = {
    "local_rank": "set by the launcher (torchrun), not by users",
    "router_aux_loss_coef": "mixture-of-experts models only; any weight means something",
    "save_total_limit": "0 or less keeps every checkpoint (transformers rotate_checkpoints)",
    "torch_empty_cache_steps": "TrainingArguments.__post_init__ checks it",
}


def test_every_numeric_flag_has_a_range_or_a_reason_not_to() -> None:
    numeric = {
        action.dest
        for action in make_parser()._actions
        # TRL wraps the type of an optional field, keeping its name (_hf_argparser._accept_none).
        if getattr(action.type, "__name__", None) in ("int", "float")
        and action.option_strings[:1] == [f"--{action.dest}"]
    }
    assert numeric - set(UNBOUNDED) <= set(flag_rules.RANGES)
    assert set(UNBOUNDED) <= numeric


@pytest.mark.parametrize(
    ("flags", "every"),
    [(["--eval_steps", "4"], 4), (["--logging_steps", "7"], 7)],  # eval_steps falls back
)
def test_early_stopping_checkpoints_at_every_step_evaluation(flags: list[str], every: int) -> None:
    _, config = parse_args(
        ["--train_file", "t.jsonl", "--early_stopping_patience", "2", "--eval_strategy", "steps",
         "--save_steps", "200", *flags]
    )  # fmt: skip
    assert config.load_best_model_at_end and config.metric_for_best_model == "eval_loss"
    assert config.save_strategy == "steps" and config.save_steps == config.eval_steps == every


def test_early_stopping_checkpoints_every_epoch_evaluation() -> None:
    _, config = parse_args(["--train_file", "t.jsonl", "--early_stopping_patience", "2"])
    assert config.eval_strategy == config.save_strategy == "epoch"
    assert config.load_best_model_at_end


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--on_invalid", "ignore"], "--on_invalid/--on-invalid: invalid choice: 'ignore'"),
        # transformers counts nothing for a word other than all, non_padding or no.
        (["--include_num_input_tokens_seen", "yes"], "invalid choice: 'yes'"),
    ],
)
def test_bad_choices_are_named(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--train_file", "t.jsonl", *flags])
    assert message in capsys.readouterr().err


def test_either_checkpointing_flag_turns_it_off() -> None:
    _, config = parse_args(["--train_file", "t.jsonl", "--activation_checkpointing", "false"])
    assert not config.activation_checkpointing and not config.gradient_checkpointing
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):
        _, config = parse_args(["--train_file", "t.jsonl", "--gradient_checkpointing", "false"])
    assert not config.activation_checkpointing and not config.gradient_checkpointing


def test_help_lists_flags_without_loading_the_trainer(repo_root: Path) -> None:
    code = (
        "import sys\nfrom phi3_trainer.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "loaded = {'trl.trainer.sft_trainer', 'phi3_trainer.train'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo_root / "training_image",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--train_file", "--use_lora", "--resume", "--packing", "--assistant_only_loss"):
        assert flag in proc.stdout
