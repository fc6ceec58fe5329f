"""Assistant-only loss is decided from the chat template before any model is loaded."""

from __future__ import annotations

import pytest
from trl.chat_template_utils import (
    phi3_5_chat_template,
    phi3_5_training_chat_template,
    phi3_chat_template,
)

from phi3_trainer.chat_template import (
    UnsupportedChatTemplateError,
    assistant_only_loss_supported,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
)


@pytest.mark.parametrize(
    "template",
    [phi3_chat_template, phi3_5_chat_template, phi3_5_training_chat_template],
    ids=["phi3-mini-4k", "phi3.5-mini-and-128k", "generation-markers"],
)
def test_stock_phi3_templates_and_marked_templates_mask_assistant_tokens(template: str) -> None:
    assert assistant_only_loss_supported(template, "fail") is True


@pytest.mark.parametrize("template", [CHATML, phi3_chat_template + " ", None])
def test_unknown_template_fails_with_the_way_out(template: str | None) -> None:
    with pytest.raises(UnsupportedChatTemplateError) as caught:
        assistant_only_loss_supported(template, "fail")
    message = str(caught.value)
    assert "--unknown_chat_template train_on_all_tokens" in message
    assert "--chat_template_path" in message and "Phi-3-mini-4k-instruct" in message


def test_unknown_template_may_fall_back_to_full_sequence_loss() -> None:
    assert assistant_only_loss_supported(CHATML, "train_on_all_tokens") is False
