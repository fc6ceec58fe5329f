"""Server configuration: command-line flags, each also settable as ``PHI3_SERVER_<NAME>``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Azure ML managed online endpoints cut every request off at 180 s.
AZURE_REQUEST_TIMEOUT_CAP_S = 180.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PHI3_SERVER_",
        cli_prog_name="python -m phi3_server",
        cli_kebab_case=True,
        protected_namespaces=(),
    )

    model_dir: Path | None = Field(
        None,
        description="merged model folder or LoRA adapter folder "
        "(unset: searched for under $AZUREML_MODEL_DIR)",
    )
    base_model: Path | None = Field(
        None,
        description="base model folder for an adapter "
        "(unset: base_model_name_or_path from its adapter_config.json)",
    )
    host: str = Field("127.0.0.1", description="address to listen on (the image sets 0.0.0.0)")
    port: int = Field(5001, ge=1, le=65535, description="port to listen on")
    api_key: SecretStr | None = Field(
        None,
        description="require 'Authorization: Bearer KEY' (prefer the env var "
        "PHI3_SERVER_API_KEY: flags show in the process list)",
    )
    served_model_name: str = Field("phi3", min_length=1, description="model id in the API")
    max_concurrent_requests: int = Field(
        32,
        ge=1,
        description="requests admitted at once (running + queued); more get 429 with "
        "Retry-After. Match the deployment's max_concurrent_requests_per_instance",
    )
    max_batch_size: int = Field(16, ge=1, description="sequences decoded together per step")
    prefill_chunk_tokens: int = Field(
        512,
        ge=16,
        description="prompt tokens prefilled between two decode steps: bounds how long a new "
        "long prompt delays the running answers",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the model runs (auto: cuda when a GPU is visible)"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype (auto: bfloat16 on cuda, float32 on cpu)"
    )
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto",
        description="attention kernel (auto: torch's scaled_dot_product_attention, which picks "
        "its flash kernel on cuda; flash_attention_2 needs the flash-attn package)",
    )
    request_timeout: float = Field(
        90.0,
        gt=0,
        lt=AZURE_REQUEST_TIMEOUT_CAP_S,
        description="seconds a request may take, queueing included (Azure's cap is 180)",
    )
    default_max_tokens: int = Field(
        512, ge=1, description="answer length limit when a request sets none"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body accepted")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
