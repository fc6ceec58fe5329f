"""Flags and YAML: TRL-style dataclasses with Phi-3-mini defaults; --help stays light."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from trl.trainer.sft_config import SFTConfig

from phi3_trainer.config import PHI3_LORA_TARGETS, make_parser, parse_args


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


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--validation_split", "1.5"], "--validation_split must be in [0, 1), got 1.5"),
        (["--early_stopping_patience", "0"], "--early_stopping_patience must be at least 1"),
        (
            ["--early_stopping_patience", "2", "--eval_strategy", "no"],
            "--early_stopping_patience needs an --eval_strategy other than 'no'",
        ),
        (
            ["--early_stopping_patience", "2", "--validation_split", "0"],
            "--early_stopping_patience needs validation data",
        ),
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


def test_bad_choices_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--train_file", "t.jsonl", "--on_invalid", "ignore"])
    assert "--on_invalid/--on-invalid: invalid choice: 'ignore'" in capsys.readouterr().err


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
