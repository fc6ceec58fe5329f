"""Decide how assistant-only loss works for the tokenizer's chat template, before training.

TRL computes the assistant mask from ``{% generation %}`` markers. Stock Phi-3 templates have
none, but TRL 1.16 swaps in a marked twin when the template is, character for character, one it
knows: Phi-3-mini-4k-instruct's (``phi3``) or the one Phi-3.5-mini-instruct and the current
Phi-3-mini-128k-instruct ship (``phi3_5``: it skips an empty system message). Anything else would
make TRL raise deep inside the trainer, after the model is loaded; we decide here instead.
"""

from __future__ import annotations

import logging
from typing import Literal

from trl.chat_template_utils import has_generation_markers, phi3_5_chat_template, phi3_chat_template

logger = logging.getLogger(__name__)

# Template text -> the Phi-3 variants that ship it.
STOCK_PHI3_TEMPLATES = {
    phi3_chat_template: "Phi-3-mini-4k-instruct",
    phi3_5_chat_template: "Phi-3.5-mini-instruct / Phi-3-mini-128k-instruct",
}


class UnsupportedChatTemplateError(ValueError):
    """The template cannot mark assistant tokens and no fallback was allowed."""


def assistant_only_loss_supported(
    chat_template: str | dict[str, str] | None,
    on_unknown: Literal["fail", "train_on_all_tokens"],
) -> bool:
    """True when the template can mask assistant tokens; False to fall back to full-sequence loss.

    Raises :class:`UnsupportedChatTemplateError` for an unknown template unless ``on_unknown``
    allows the fallback.
    """
    if isinstance(chat_template, dict):
        chat_template = chat_template.get("default")
    if chat_template and (
        has_generation_markers(chat_template) or chat_template in STOCK_PHI3_TEMPLATES
    ):
        return True
    what = "has no chat template" if not chat_template else "has an unrecognised chat template"
    if on_unknown == "train_on_all_tokens":
        logger.warning("The tokenizer %s: the loss covers every token, not only replies.", what)
        return False
    raise UnsupportedChatTemplateError(
        f"The tokenizer {what}, so the assistant's tokens cannot be told apart for the loss. "
        f"Supported: the stock templates of {', '.join(STOCK_PHI3_TEMPLATES.values())}, or any "
        "template with {% generation %} markers (pass one with --chat_template_path). "
        "Or pass --unknown_chat_template train_on_all_tokens, or --assistant_only_loss false."
    )
