"""Plain helpers for the trainer tests (data writers, generation from a saved model)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# The module the training job's command runs; every end-to-end test runs the same one.
TRAINER_MODULE = "phi3_trainer"
# The run_trainer fixture (tests/trainer/conftest.py): `python -m phi3_trainer ARGS`.
RunTrainer = Callable[..., subprocess.CompletedProcess[str]]
TRAINER_ENV = {
    **os.environ,
    "PYTHONPATH": "training_image",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
# Short sequences, no tracker, no progress bars: a tiny run takes seconds on 2 shared cores.
FAST_FLAGS = [
    "--max_length", "128",
    "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "1",
    "--warmup_steps", "0",
    "--logging_steps", "5",
    "--report_to", "none",
    "--disable_tqdm", "true",
]  # fmt: skip


def chat(user: str, assistant: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def next_number_records(repeats: int = 4) -> list[dict[str, Any]]:
    """A pattern that depends on the prompt: the reply is the digit after the one asked about."""
    return [
        chat(f"What comes after {i}?", str((i + 1) % 10)) for _ in range(repeats) for i in range(10)
    ]


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def greedy_reply(model_dir: Path, user: str, max_new_tokens: int = 8) -> str:
    """Generate from a saved model folder the way the server does: chat template, greedy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    reply: str = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :])
    return reply
