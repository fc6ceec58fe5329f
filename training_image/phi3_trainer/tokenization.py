"""The data checks that need the tokenizer: its special tokens in a text, a conversation's tokens.

Both take the tokenizer as loaded, for the trainer and for its data tool (prepare_data.py) alike;
:mod:`phi3_training_rules.data_validation` applies them line by line.

Tokenize once: :func:`chat_encoder` tokenizes a conversation exactly as TRL's SFTTrainer would
(trl 1.16 ``SFTTrainer._prepare_dataset``, ``tokenize_fn``, language-modeling case), so the length
the validation checks is the length trained on, and the trainer hands TRL these tokens: for a
dataset that already has ``input_ids`` TRL skips its own tokenization (``is_processed = "input_ids"
in column_names``) and still builds the labels from ``assistant_masks`` and packs.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from phi3_training_rules.data_validation import ChatEncoder, Encoding, Messages, SpecialTokenFinder


def special_token_finder(tokenizer: Any) -> SpecialTokenFinder:
    """Which of the tokenizer's special tokens a text would be read as.

    The tokenizer's own list: its added tokens marked special (Phi-3's ``<|end|>``, ``<|user|>``,
    ``<|assistant|>``, ``<|system|>``, ``<|endoftext|>``, placeholders, ...) and its named
    special tokens. huggingface/tokenizers (``added_vocabulary.rs``, ``extract_and_normalize``)
    matches tokens added with ``normalized=False`` in the raw text and the others in the
    normalized text, so each is looked for where the tokenizer would find it.
    """
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values() if t.special}
    named = set(tokenizer.all_special_tokens) - set(added)
    raw = sorted(named | {text for text, token in added.items() if not token.normalized})
    normalized = sorted(text for text, token in added.items() if token.normalized)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = backend.normalizer if backend is not None else None

    def find(text: str) -> list[str]:
        found = [token for token in raw if token in text]
        if normalized:
            plain = normalizer.normalize_str(text) if normalizer is not None else text
            found += [token for token in normalized if token in plain]
        return found

    return find


def chat_encoder(tokenizer: Any, assistant_only_loss: bool) -> ChatEncoder:
    """``input_ids`` of a conversation rendered with the chat template and, for assistant-only
    loss, ``assistant_masks`` (1 on the tokens the loss covers).

    As TRL renders it: with assistant-only loss and a template without ``{% generation %}``
    markers, TRL's marked twin of the template (``get_training_chat_template``, as in
    ``SFTTrainer.__init__``); ``apply_chat_template(tokenize=True, return_dict=True,
    return_assistant_tokens_mask=...)`` as in trl ``data_utils._tokenize``.
    """
    template = None
    if assistant_only_loss and not has_generation_markers(tokenizer.chat_template):
        template = get_training_chat_template(tokenizer)

    def encode(messages: Messages) -> Encoding:
        try:
            encoded = tokenizer.apply_chat_template(
                messages,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=assistant_only_loss,
                chat_template=template,
                tools=None,
            )
        except TemplateError as error:  # e.g. the template's raise_exception(...)
            raise ValueError(f"the chat template cannot render it: {error}") from None
        encoding = {"input_ids": list(encoded["input_ids"])}
        if assistant_only_loss:
            # TRL raises a RuntimeError for this, mid-preparation; here it is the line's problem.
            if 1 not in encoded["assistant_masks"]:
                raise ValueError(
                    "no token of it is marked as the assistant's by the chat template's "
                    "{% generation %} markers, so nothing would be learned from it"
                )
            encoding["assistant_masks"] = list(encoded["assistant_masks"])
        return encoding

    return encode
