"""Each conversation is tokenized once, by the validation, and TRL trains on exactly the tokens and
labels it would have made itself."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerBase
from trl.chat_template_utils import phi3_5_chat_template

from phi3_trainer.config import parse_args
from phi3_trainer.preflight import load_tokenizer
from phi3_trainer.train import build_trainer, load_datasets
from tests.trainer.helpers import write_jsonl

CONVERSATIONS = [
    {"messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue"},
        {"role": "user", "content": "And grass?"},
        {"role": "assistant", "content": "Green"},
    ]},
    {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
]  # fmt: skip


@pytest.fixture(params=["phi3-mini-4k", "phi3.5-mini-and-128k"])
def model_dir(request: pytest.FixtureRequest, tiny_phi3: Path, tmp_path: Path) -> Path:
    """Both stock templates: TRL trains each through its own marked twin."""
    if request.param == "phi3-mini-4k":
        return tiny_phi3
    variant = tmp_path / "tiny-phi3.5"
    shutil.copytree(tiny_phi3, variant)
    (variant / "chat_template.jinja").write_text(phi3_5_chat_template)
    return variant


def setup(model: Path, tmp_path: Path, *flags: str) -> tuple[Any, Any, Any, Path]:
    data = write_jsonl(tmp_path / "train.jsonl", CONVERSATIONS)
    script, config = parse_args(
        ["--train_file", str(data), "--model_name_or_path", str(model), "--output_dir",
         str(tmp_path / "out"), "--validation_split", "0", "--max_length", "256",
         "--per_device_train_batch_size", "2", "--report_to", "none", *flags]
    )  # fmt: skip
    return script, config, load_tokenizer(script, config), data


def rows(trainer: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in trainer.train_dataset]


@pytest.mark.parametrize("packing", ["true", "false"])
@pytest.mark.parametrize("assistant_only_loss", ["true", "false"])
def test_trl_gets_the_tokens_and_labels_it_would_have_made(
    model_dir: Path, tmp_path: Path, packing: str, assistant_only_loss: str
) -> None:
    script, config, tokenizer, _ = setup(
        model_dir, tmp_path, "--packing", packing, "--assistant_only_loss", assistant_only_loss
    )
    examples, _, _ = load_datasets(script, config, tokenizer)
    assert all("input_ids" in example for example in examples)
    ours = build_trainer(script, config, tokenizer, examples, [])
    trls_own = build_trainer(script, config, tokenizer, CONVERSATIONS, [])
    assert rows(ours) and rows(ours) == rows(trls_own)


def test_each_conversation_is_tokenized_once_before_training(
    tiny_phi3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, config, tokenizer, _ = setup(tiny_phi3, tmp_path)
    rendered: list[list[dict[str, str]]] = []
    template = PreTrainedTokenizerBase.apply_chat_template

    def counting(self: Any, conversation: Any, *args: Any, **kwargs: Any) -> Any:
        rendered.append(conversation)
        return template(self, conversation, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "apply_chat_template", counting)
    train, _, _ = load_datasets(script, config, tokenizer)
    trainer = build_trainer(script, config, tokenizer, train, [])
    conversations = [c["messages"] for c in CONVERSATIONS]
    # TRL renders only small probes of its own (its stop-token check), none of the data.
    assert [c for c in rendered if c in conversations] == conversations
    assert len(rows(trainer)) > 0
