"""Only the assistant's tokens carry loss, with packing on and off, for every stock template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from trl.chat_template_utils import phi3_5_chat_template

from phi3_trainer.config import parse_args
from phi3_trainer.preflight import load_tokenizer
from phi3_trainer.train import build_trainer
from tests.trainer.helpers import RunTrainer

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    {"messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue"},
        {"role": "user", "content": "And grass?"},
        {"role": "assistant", "content": "Green"},
    ]},
    {"messages": [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "Hi there"},
    ]},
]  # fmt: skip
# What the loss must see of each conversation, in order: each reply with its end-of-turn, and
# the end-of-text that closes the last reply.
LEARNED = ["Blue<|end|>\n", "Green<|end|>\n<|endoftext|>", "Hi there<|end|>\n<|endoftext|>"]


@pytest.fixture(params=["phi3-mini-4k", "phi3.5-mini-and-128k"])
def model_dir(request: pytest.FixtureRequest, tiny_phi3: Path, tmp_path: Path) -> Path:
    if request.param == "phi3-mini-4k":
        return tiny_phi3
    variant = tmp_path / "tiny-phi3.5"
    shutil.copytree(tiny_phi3, variant)
    (variant / "chat_template.jinja").write_text(phi3_5_chat_template)
    return variant


@pytest.mark.parametrize("packing", ["true", "false"])
def test_labels_cover_only_assistant_replies(model_dir: Path, packing: str, tmp_path: Path) -> None:
    script, config = parse_args(
        ["--train_file", "unused.jsonl", "--model_name_or_path", str(model_dir),
         "--output_dir", str(tmp_path), "--packing", packing, "--max_length", "256",
         "--per_device_train_batch_size", "2", "--report_to", "none"]
    )  # fmt: skip
    tokenizer = load_tokenizer(script, config)
    assert tokenizer.chat_template == (model_dir / "chat_template.jinja").read_text()
    trainer = build_trainer(script, config, tokenizer, CONVERSATIONS, [])
    batch = next(iter(trainer.get_train_dataloader()))
    rows = zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True)
    spans: list[str] = []
    for input_ids, labels in rows:
        assert all(label in (-100, token) for token, label in zip(input_ids, labels, strict=True))
        spans += _labelled_spans(tokenizer, input_ids, labels)
    assert sorted(spans) == sorted(LEARNED)
    if packing == "true":
        # Padding-free packing: both conversations in one row, no padding at all.
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    else:
        assert batch["input_ids"].shape[0] == 2

    loss = trainer.compute_loss(trainer.model, batch)  # type: ignore[no-untyped-call]  # TRL's
    assert loss.isfinite() and loss > 0


def _labelled_spans(tokenizer: Any, input_ids: list[int], labels: list[int]) -> list[str]:
    spans: list[str] = []
    current: list[int] = []
    for token, label in zip(input_ids, labels, strict=True):
        if label == -100 and current:
            spans.append(tokenizer.decode(current))
            current = []
        elif label != -100:
            current.append(token)
    return [*spans, tokenizer.decode(current)] if current else spans


def test_unknown_template_stops_before_training(
    tiny_phi3: Path, tmp_path: Path, run_trainer: RunTrainer
) -> None:
    custom = tmp_path / "custom"
    shutil.copytree(tiny_phi3, custom)
    (custom / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(CONVERSATIONS[1]) + "\n")
    proc = run_trainer(["--model_name_or_path", str(custom), "--train_file", str(data),
                        "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert proc.returncode == 2
    assert "has an unrecognised chat template" in proc.stderr and "Traceback" not in proc.stderr
