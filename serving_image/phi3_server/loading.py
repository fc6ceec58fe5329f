"""Find the model to serve and load it: a merged model folder, or a LoRA adapter plus its base.

Azure ML mounts a registered model under ``AZUREML_MODEL_DIR``, often a few folders down (the
model name, a version, the folder the job wrote); ``locate_model`` searches the mount for it.
Everything is checked before the server starts, so a wrong path fails in seconds with a message
that names it, not after a long load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
END_OF_TURN = "<|end|>"
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_MOUNT_SEARCH_DEPTH = 4


class ModelLocationError(ValueError):
    """The model folder is missing, ambiguous or incomplete."""


@dataclass(frozen=True)
class ModelSource:
    """``model_dir`` is a merged model, or a LoRA adapter when ``base_model_dir`` is set."""

    model_dir: Path
    base_model_dir: Path | None = None


def _is_full_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        any(folder.glob(pattern)) for pattern in _WEIGHT_PATTERNS
    )


def _is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def _folders(root: Path, depth: int) -> list[Path]:
    found = [root]
    if depth > 0:
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            found.extend(_folders(child, depth - 1))
    return found


def find_in_mount(mount: Path) -> Path:
    """The one model folder inside an Azure ML model mount; a merged model wins over an adapter."""
    if not mount.is_dir():
        raise ModelLocationError(f"AZUREML_MODEL_DIR={mount} is not a folder")
    folders = _folders(mount, _MOUNT_SEARCH_DEPTH)
    for kind, candidates in (
        ("merged models", [f for f in folders if _is_full_model(f)]),
        ("LoRA adapters", [f for f in folders if _is_adapter(f)]),
    ):
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            listed = ", ".join(str(c) for c in candidates)
            raise ModelLocationError(
                f"AZUREML_MODEL_DIR={mount} holds several {kind} ({listed}); "
                "choose one with --model-dir"
            )
    raise ModelLocationError(
        f"AZUREML_MODEL_DIR={mount} holds no model folder (config.json with safetensors "
        f"weights) and no LoRA adapter ({ADAPTER_CONFIG}) within {_MOUNT_SEARCH_DEPTH} levels"
    )


def _adapter_base(adapter_dir: Path, base_model: Path | None) -> Path:
    if base_model is None:
        config_path = adapter_dir / ADAPTER_CONFIG
        try:
            recorded = json.loads(config_path.read_text())["base_model_name_or_path"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ModelLocationError(
                f"{config_path}: cannot read base_model_name_or_path ({error}); pass --base-model"
            ) from error
        base_model = Path(recorded)
        origin = f"base_model_name_or_path in {config_path}"
    else:
        origin = "--base-model"
    if not _is_full_model(base_model):
        raise ModelLocationError(
            f"{origin} = {base_model} is not a local model folder (config.json with weights); "
            "the server never downloads weights: pass --base-model with the base model's folder"
        )
    return base_model


def locate_model(
    model_dir: Path | None, base_model: Path | None, azureml_model_dir: str | None
) -> ModelSource:
    """Resolve the flags (or Azure ML's mount) into a checked ``ModelSource``."""
    if model_dir is None:
        if not azureml_model_dir:
            raise ModelLocationError("no model: pass --model-dir or set AZUREML_MODEL_DIR")
        model_dir = find_in_mount(Path(azureml_model_dir))
    elif not model_dir.is_dir():
        raise ModelLocationError(f"--model-dir {model_dir} is not a folder")
    if _is_full_model(model_dir):
        if base_model is not None:
            raise ModelLocationError(
                f"--base-model is only for adapters, but {model_dir} is a complete model"
            )
        return ModelSource(model_dir)
    if _is_adapter(model_dir):
        return ModelSource(model_dir, _adapter_base(model_dir, base_model))
    raise ModelLocationError(
        f"{model_dir} is neither a model folder (config.json with safetensors weights) "
        f"nor a LoRA adapter ({ADAPTER_CONFIG})"
    )


def placement(device: str, dtype: str, attention: str) -> tuple[str, str, str]:
    """Resolve ``auto`` settings: CUDA in bf16 (fp16 before Ampere) when a GPU is visible, else
    CPU in fp32; torch's SDPA attention (on CUDA it dispatches to its flash/memory-efficient
    kernels)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ModelLocationError(
            "--device cuda: no CUDA device is visible to torch; use a GPU instance or --device cpu"
        )
    if dtype == "auto" and device == "cpu":
        dtype = "float32"
    elif dtype == "auto":
        # bf16 needs compute capability 8.0 (A100, A10, H100); a T4 (7.5) runs fp16 instead.
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        dtype = "bfloat16" if native_bf16 else "float16"
    return device, dtype, "sdpa" if attention == "auto" else attention


def load(
    source: ModelSource, device: str = "auto", dtype: str = "auto", attention: str = "auto"
) -> tuple[Any, Any]:
    """Load model and tokenizer for inference, placed as ``placement`` resolves it.
    An adapter is merged into its base once, so serving pays no LoRA cost per token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype, attention = placement(device, dtype, attention)
    weights_dir = source.base_model_dir or source.model_dir
    logger.info("loading %s on %s in %s with %s attention", weights_dir, device, dtype, attention)
    model: Any = AutoModelForCausalLM.from_pretrained(
        weights_dir, dtype=getattr(torch, dtype), attn_implementation=attention
    )
    if source.base_model_dir is not None:
        from peft import PeftModel

        logger.info("applying LoRA adapter %s", source.model_dir)
        model = PeftModel.from_pretrained(model, source.model_dir).merge_and_unload()
    # The adapter folder carries the fine-tuning chat template when the trainer saved one.
    tokenizer_dir = (
        source.model_dir if (source.model_dir / "tokenizer_config.json").is_file() else weights_dir
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.chat_template is None:
        raise ModelLocationError(f"{tokenizer_dir}: the tokenizer has no chat template")
    return model.to(device).eval(), tokenizer


def end_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every token that ends an answer: the generation config's, end-of-text and Phi-3's
    end-of-turn ``<|end|>``, which fine-tuned chat answers close with."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    if END_OF_TURN in tokenizer.get_vocab():
        ids.add(tokenizer.convert_tokens_to_ids(END_OF_TURN))
    return frozenset(i for i in ids if i is not None)


def served_context(config: Any) -> int:
    """Tokens a prompt and its answer may take together: the model's context, except for a
    longrope model (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini), served only up to its original
    context (4096). Past it, longrope swaps the rotary factors of every position at once, decided
    by the batch's largest position (transformers modeling_rope_utils.py,
    longrope_frequency_update), and transformers' own generation then recomputes the whole cache
    (Phi3ForCausalLM.prepare_inputs_for_generation); a cache shared by a batch of sequences of
    different lengths can do neither, so its answers would drift from the model's."""
    rope = getattr(config, "rope_parameters", None) or {}
    original = rope.get("original_max_position_embeddings")
    if rope.get("rope_type") == "longrope" and original:
        return min(int(original), int(config.max_position_embeddings))
    return int(config.max_position_embeddings)
