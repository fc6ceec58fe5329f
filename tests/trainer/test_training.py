"""End-to-end runs of ``python -m phi3_trainer`` on the tiny Phi-3 (CPU, seconds each)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.helpers import (
    FAST_FLAGS,
    TRAINER_ENV,
    TRAINER_MODULE,
    RunTrainer,
    chat,
    greedy_reply,
    write_jsonl,
)

pytestmark = pytest.mark.slow

PROMPTS = [
    "Hello there", "How are you?", "What is Azure?", "Tell me a joke", "Explain LoRA",
    "Good morning", "What time is it?", "Name a color", "Where is Paris?", "Count to three",
]  # fmt: skip


def test_full_fine_tune_learns_a_prompt_dependent_pattern(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, run_trainer: RunTrainer
) -> None:
    out = tmp_path / "out"
    validation = write_jsonl(tmp_path / "val.jsonl", [chat("What comes after 3?", "4")])
    proc = run_trainer(
        ["--model_name_or_path", str(tiny_phi3), "--train_file", str(next_number_file),
         "--validation_file", str(validation), "--output_dir", str(out), "--use_lora", "false",
         "--learning_rate", "3e-3", "--max_steps", "100", "--save_steps", "50",
         "--activation_checkpointing", "false", *FAST_FLAGS]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 100
    assert metrics["train_loss_last_logged"] < metrics["train_loss_first_logged"] / 4
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert (
        metrics["eval_history"] and metrics["eval_loss"] < metrics["eval_history"][0]["eval_loss"]
    )
    assert metrics["tokens_seen"] > 0 and metrics["tokens_per_second"] > 0
    assert not (out / "adapter").exists() and (out / "merged" / "model.safetensors").is_file()
    replies = {n: greedy_reply(out / "merged", f"What comes after {n}?") for n in range(10)}
    right = [n for n, reply in replies.items() if reply == f"{(n + 1) % 10}<|end|>"]
    assert len(right) >= 8, replies
    # The saved tokenizer keeps the stock template (not TRL's training twin) for serving.
    stock = (tiny_phi3 / "chat_template.jinja").read_text()
    assert (out / "merged" / "chat_template.jinja").read_text() == stock

    run = json.loads((out / "run.json").read_text())
    data_hash = hashlib.sha256(next_number_file.read_bytes()).hexdigest()
    assert run["data"]["files"][str(next_number_file)]["sha256"] == data_hash
    assert run["seed"] == 42 and run["assistant_only_loss"] is True
    assert set(run["versions"]) >= {"python", "torch", "transformers", "trl", "peft"}
    assert run["training_args"]["learning_rate"] == 3e-3
    # Packed rows attend per chat unless told otherwise; the saved model does not carry it.
    assert run["script_args"]["attn_implementation"] == "packed_varlen"
    assert "packed_varlen" not in (out / "merged" / "config.json").read_text()


def test_lora_without_packing_learns_a_reply_and_writes_adapter_and_merged_model(
    tmp_path: Path, tiny_phi3: Path, run_trainer: RunTrainer
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [chat(p, "I am Phi.") for p in PROMPTS * 2])
    out = tmp_path / "out"
    # Default activation checkpointing stays on here: the path real runs take.
    proc = run_trainer(
        ["--model_name_or_path", str(tiny_phi3), "--train_file", str(data), "--output_dir",
         str(out), "--packing", "false", "--learning_rate", "1e-2", "--max_steps", "60",
         "--validation_split", "0.1", *FAST_FLAGS]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_loss_last_logged"] < metrics["train_loss_first_logged"] - 0.3
    assert greedy_reply(out / "merged", "A prompt it never saw") == "I am Phi.<|end|>"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_phi3.resolve())
    assert set(adapter_config["target_modules"]) == {
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    }
    base = AutoModelForCausalLM.from_pretrained(tiny_phi3)
    with_adapter = PeftModel.from_pretrained(base, out / "adapter")
    tokenizer: Any = AutoTokenizer.from_pretrained(out / "adapter")
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )  # fmt: skip
    output = with_adapter.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(output[0][inputs["input_ids"].shape[1] :]) == "I am Phi.<|end|>"
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["train_examples"] == 18 and run["data"]["eval_examples"] == 2
    assert run["script_args"]["attn_implementation"] is None  # padded rows: transformers' sdpa


def test_invalid_data_fails_before_the_model_is_loaded(
    tmp_path: Path, tiny_phi3: Path, run_trainer: RunTrainer
) -> None:
    # Tokenizer but no weights: reaching the model load would fail with a different error.
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_phi3, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps(chat("ok", "fine")) + "\n"
        + json.dumps({"messages": [{"role": "assistant", "content": "first"}]}) + "\n"
        + "{oops\n"
        + json.dumps(chat("q", "x " * 300)) + "\n"
    )  # fmt: skip
    validation = write_jsonl(tmp_path / "val.jsonl", [{"text": "no messages"}])
    out = tmp_path / "out"
    proc = run_trainer(
        ["--model_name_or_path", str(no_weights), "--train_file", str(train),
         "--validation_file", str(validation), "--output_dir", str(out), *FAST_FLAGS]
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    for location in (f"{train}:2: ", f"{train}:3: ", f"{train}:4: ", f"{validation}:1: "):
        assert location in proc.stderr
    assert "longer than max_length 128" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_logs_to_mlflow_in_one_run_within_the_parameter_limit(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, repo_root: Path
) -> None:
    store = tmp_path / "mlruns"
    env = {**TRAINER_ENV, "MLFLOW_TRACKING_URI": store.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", TRAINER_MODULE, "--model_name_or_path", str(tiny_phi3),
         "--train_file", str(next_number_file), "--output_dir", str(tmp_path / "out"),
         "--max_steps", "3", "--validation_split", "0.1",
         *[f for f in FAST_FLAGS if f not in ("--report_to", "none")]],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [p for p in store.glob("*/*") if p.is_dir() and (p / "params").is_dir()]
    # Azure ML's MLflow rejects runs with too many parameters; the Trainer would log ~250.
    assert 0 < len(list((run / "params").iterdir())) <= 100
    assert {"train_loss", "eval_loss", "eval_perplexity"} <= {
        p.name for p in (run / "metrics").iterdir()
    }


def test_early_stopping_merges_and_records_the_best_checkpoint(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, run_trainer: RunTrainer
) -> None:
    out = tmp_path / "out"
    # A learning rate this high overfits the 8 held-out examples within a few evaluations.
    # Evaluating every 4 steps with the default --save_steps 200 checks that checkpoints
    # follow the evaluations: otherwise the best evaluation has no checkpoint to load.
    proc = run_trainer(
        ["--model_name_or_path", str(tiny_phi3), "--train_file", str(next_number_file),
         "--output_dir", str(out), "--use_lora", "false", "--learning_rate", "3e-2",
         "--max_steps", "200", "--eval_strategy", "steps", "--eval_steps", "4",
         "--validation_split", "0.2", "--early_stopping_patience", "2",
         "--activation_checkpointing", "false", *FAST_FLAGS]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] < 200
    best = min(metrics["eval_history"], key=lambda h: h["eval_loss"])
    assert best["step"] < metrics["global_step"]  # the last model is not the best one
    assert metrics["best_eval_loss"] == pytest.approx(best["eval_loss"])
    assert metrics["best_checkpoint"] == str(out / f"checkpoint-{best['step']}")

    from safetensors.torch import load_file

    best_weights = load_file(out / f"checkpoint-{best['step']}" / "model.safetensors")
    merged_weights = load_file(out / "merged" / "model.safetensors")
    assert best_weights.keys() == merged_weights.keys()
    assert all(torch.equal(best_weights[k], merged_weights[k]) for k in best_weights)


def test_a_chat_template_file_not_named_jinja_is_used(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, run_trainer: RunTrainer
) -> None:
    # TRL reads only *.jinja / *.j2 paths as templates and took this one for a tokenizer to
    # clone, failing after the model loaded.
    template = tmp_path / "phi3-template.txt"
    template.write_text((tiny_phi3 / "chat_template.jinja").read_text())
    out = tmp_path / "out"
    proc = run_trainer(
        ["--model_name_or_path", str(tiny_phi3), "--train_file", str(next_number_file),
         "--output_dir", str(out), "--chat_template_path", str(template), "--max_steps", "1",
         "--validation_split", "0", *FAST_FLAGS]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "merged" / "chat_template.jinja").read_text() == template.read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["training_args"]["chat_template_path"] == str(template)
    assert run["assistant_only_loss"] is True
