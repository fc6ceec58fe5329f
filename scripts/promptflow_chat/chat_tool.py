"""Prompt flow tool: one chat turn against the deployed Phi-3 endpoint's OpenAI-compatible route."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from openai import OpenAI
from promptflow.connections import CustomConnection
from promptflow.core import tool

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

BASE_URL_ENV = "PHI3_OPENAI_BASE_URL"
API_KEY_ENV = "PHI3_API_KEY"


def _endpoint(connection: CustomConnection | None) -> tuple[str, str]:
    """The base URL and key: from the connection when one is bound, else from the environment."""
    if connection is not None:
        return connection.configs["api_base"], connection.secrets["api_key"]
    base_url = os.environ.get(BASE_URL_ENV)
    if not base_url:
        raise ValueError(
            f"No endpoint: bind a custom connection (api_base, secret api_key) to the chat node's "
            f"'connection' input, or set {BASE_URL_ENV} (and {API_KEY_ENV})."
        )
    # The local server accepts any key when it runs without --api-key; the client needs one anyway.
    return base_url, os.environ.get(API_KEY_ENV) or "unused"


@tool
def chat(
    question: str,
    system_prompt: str = "",
    temperature: float = 0.0,
    max_tokens: int = 128,
    connection: CustomConnection | None = None,
) -> str:
    base_url, api_key = _endpoint(connection)
    client = OpenAI(base_url=base_url, api_key=api_key, timeout=170, max_retries=2)
    messages: list[ChatCompletionMessageParam] = (
        [{"role": "system", "content": system_prompt}] if system_prompt else []
    )
    messages.append({"role": "user", "content": question})
    completion = client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=messages,
        temperature=temperature,
        max_tokens=max_tokens,
    )
    return completion.choices[0].message.content or ""
