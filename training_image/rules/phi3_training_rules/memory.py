"""Memory per GPU of a fine-tuning run, estimated from the model's shape and the trainer's flags.

Standard library only: the trainer decides activation checkpointing with it while it reads its
flags (config.py), and the Pulumi program refuses at plan time a configuration that cannot fit the
GPU size it chose (phi3_infra.fit), as it uses the trainer's data validator and flag rules.

What a training step holds at its peak (the end of the forward pass, when the backward starts),
summed: with gradient accumulation (default 16 micro-steps) the gradients of earlier micro-steps
live through the next forward, so every part below coexists.

- Weights, gradients, optimizer state. How train.py loads the model (preflight.model_dtype): full
  fine-tuning keeps fp32 weights and trains under bf16/fp16 autocast (accelerate's mixed precision
  for TrainingArguments bf16/fp16), so each parameter costs 4 (weight) + 4 (gradient) + 8 (AdamW's
  two moments, in the parameter's dtype) bytes. LoRA loads the frozen base in the compute dtype (2
  bytes) and trains adapters that PEFT upcasts to fp32 (get_peft_model's autocast_adapter_dtype,
  which TRL 1.16 SFTTrainer leaves on outside DeepSpeed ZeRO-3): 16 bytes per adapter parameter.
  Full fine-tuning over several processes is sharded (phi3_trainer.sharding, FSDP2): those 16
  bytes per parameter are divided across the processes.
- Weight copies. Autocast caches its bf16 copy of each fp32 weight that requires a gradient until
  the forward ends, and the linear layers keep them for the backward: 2 bytes per linear
  parameter (measured with saved-tensor hooks in tests/trainer/test_memory.py). Sharded, FSDP2
  gathers the layers in the compute dtype instead (accelerate sets the policy's param_dtype from
  the mixed precision): the root group (embeddings, head, final norm), which FSDP2 does not
  reshard after the forward, plus the running layer, the prefetched one and one layer of
  unsharded gradients.
- Activations: the tensors autograd saves for the backward, per decoder layer and token, counted
  from transformers 5.23 modeling_phi3.py and checked against saved-tensor hooks on a real tiny
  Phi-3 (tests/trainer/test_memory.py). The approach is Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", section 4.1 (sbh(34 + 5as/h) bytes per
  GPT layer in 16-bit), adapted to Phi-3: fused qkv_proj and gate_up_proj (one output tensor each,
  kept whole by the views that use it), SwiGLU instead of GeLU, RMSNorm computed in fp32, no
  dropout, grouped-query attention, and SDPA / flash attention, which keep the output and the
  log-sum-exp instead of the s x s scores (only eager attention keeps them). Frozen weights need
  no saved input (LoRA), adapters add their dropout mask and their inputs. With activation
  checkpointing (transformers, non-reentrant torch.utils.checkpoint per decoder layer) each layer
  keeps only its input, and the backward recomputes one layer at a time.
- Attention masks: packed rows without a variable-length kernel (sdpa, eager) get a mask over the
  whole flattened row: transformers builds it once (a bool per pair of tokens), and SDPA keeps an
  additive copy in the compute dtype in every layer (measured on CPU; CUDA's memory-efficient
  kernel, which packed rows take without flash-attention, keeps its attn_bias for the backward as
  well: aten _scaled_dot_product_efficient_attention_backward takes it). That is the quadratic
  cost of packing without flash-attention; with a mask, grouped-query attention also repeats the
  key and value heads (transformers passes SDPA enable_gqa only without one).
- Loss head: TRL 1.16's SFTTrainer never materialises the logits (trl/trainer/utils.py
  add_fused_lm_head, ChunkedLogProbFunction): it projects tiles of at most 4096 tokens x 32768
  vocabulary entries in the compute dtype, so the (tokens x vocab) fp32 logits that older
  estimates count do not exist; the backward adds the fp32 gradient of the last hidden states.

Not counted: the CUDA context, cuBLAS/NCCL workspaces and allocator fragmentation, which the
headroom (USABLE_FRACTION) covers; the optimizer step's temporaries (activations are free then).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from phi3_training_rules.attention import PACKED_VARLEN, choose
from phi3_training_rules.sharding import shards_full_fine_tuning

logger = logging.getLogger(__name__)

GB = 10**9  # Azure's size pages give GPU memory in GB
# A configuration fits when its estimate is at most this share of the GPU's memory; the rest is
# for what the estimate leaves out (the CUDA context, library workspaces, fragmentation).
USABLE_FRACTION = 0.9
# The trainer's flags the estimate reads (the program's flag table carries their defaults).
FLAGS = frozenset(
    {
        "use_lora",
        "lora_r",
        "lora_dropout",
        "lora_target_modules",
        "lora_modules_to_save",
        "bf16",
        "fp16",
        "max_length",
        "per_device_train_batch_size",
        "activation_checkpointing",
        "gradient_checkpointing",
        "attn_implementation",
        "packing",
        "packing_strategy",
        "padding_free",
        "optim",
    }
)
# TRL ChunkedLogProbFunction (trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE, and
# trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE): the largest logits tile it projects.
_LOSS_TILE_TOKENS = 4096
_LOSS_TILE_VOCAB = 32768
# Attention kernels that run packed rows per sequence (cu_seqlens), with no mask over the row.
_VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", PACKED_VARLEN)
# Phi-3's linear modules per decoder layer (Phi3Attention, Phi3MLP): what PEFT's all-linear
# adapts (every linear layer but the output one).
LINEAR_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Phi-3 config.json (transformers Phi3Config) that decide its memory."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """From config.json's keys; Phi3Config reads a missing num_key_value_heads as the heads."""
        heads = int(config["num_attention_heads"])
        return cls(
            hidden_size=int(config["hidden_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            intermediate_size=int(config["intermediate_size"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_width(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each decoder layer's linear module (Phi3Attention, Phi3MLP)."""
        h, i = self.hidden_size, self.intermediate_size
        shapes = ((h, h + 2 * self.kv_width), (h, h), (h, 2 * i), (i, h))
        return dict(zip(LINEAR_MODULES, shapes, strict=True))

    @property
    def layer_linear_parameters(self) -> int:
        return sum(n * m for n, m in self.linear_shapes().values())

    @property
    def layer_parameters(self) -> int:
        return self.layer_linear_parameters + 2 * self.hidden_size  # and two RMSNorm weights

    @property
    def root_parameters(self) -> int:
        """Outside the decoder layers: embeddings, the LM head unless tied, the final norm."""
        embeddings = self.vocab_size * self.hidden_size
        return embeddings * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def parameters(self) -> int:
        return self.num_hidden_layers * self.layer_parameters + self.root_parameters

    def module_parameters(self, name: str) -> int:
        """Parameters of every module with this name (PEFT matches modules_to_save by name)."""
        per_layer = {n: a * b for n, (a, b) in self.linear_shapes().items()} | {
            "input_layernorm": self.hidden_size,
            "post_attention_layernorm": self.hidden_size,
        }
        if name in per_layer:
            return self.num_hidden_layers * per_layer[name]
        return {
            "embed_tokens": self.vocab_size * self.hidden_size,
            "lm_head": self.vocab_size * self.hidden_size,
            "norm": self.hidden_size,
        }.get(name, 0)


# Known Phi-3 Hub models, from their config.json on the Hugging Face Hub:
# - Phi-3-medium-4k-instruct: huggingface.co/microsoft/Phi-3-medium-4k-instruct/blame/
#   3da3d15332f10c59cea141411e265df623628a2e/config.json (hidden 5120, 40 layers, intermediate
#   17920, 40 heads, 10 key-value heads, vocabulary 32064, untied).
# - Phi-3-medium-128k-instruct: huggingface.co/microsoft/Phi-3-medium-128k-instruct/blob/
#   refs%2Fpr%2F5/config.json (the same numbers; only the RoPE scaling differs).
# - Phi-3-mini-4k-instruct: transformers' Phi3Config defaults (configuration_phi3.py, documented
#   as that checkpoint's configuration), as copies of its config.json on the Hub give them; the
#   microsoft repository's own file was not readable here. 3,821,079,552 parameters, as keras-hub
#   records for the preset (keras_hub/src/models/phi3/phi3_presets.py).
# - Phi-3-mini-128k-instruct: keras-hub records the same parameter count for its preset.
# - Phi-3.5-mini-instruct: the same shape, per copies of its config.json on the Hub and the same
#   weight files' sizes as Phi-3-mini (huggingface.co/microsoft/Phi-3.5-mini-instruct/tree).
_PHI3_MINI = ModelShape(3072, 32, 8192, 32, 32, 32064)
_PHI3_MEDIUM = ModelShape(5120, 40, 17920, 40, 10, 32064)
KNOWN_MODELS: Mapping[str, ModelShape] = {
    "microsoft/Phi-3-mini-4k-instruct": _PHI3_MINI,
    "microsoft/Phi-3-mini-128k-instruct": _PHI3_MINI,
    "microsoft/Phi-3.5-mini-instruct": _PHI3_MINI,
    "microsoft/Phi-3-medium-4k-instruct": _PHI3_MEDIUM,
    "microsoft/Phi-3-medium-128k-instruct": _PHI3_MEDIUM,
}


def model_shape(name_or_path: str) -> ModelShape | None:
    """A local model folder's config.json, else a known Hub id; None when neither says."""
    config_file = Path(name_or_path).expanduser() / "config.json"
    if config_file.is_file():
        try:
            return ModelShape.from_config(json.loads(config_file.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError):
            return None  # preflight names what is wrong with the folder
    return KNOWN_MODELS.get(name_or_path)


def precision(bf16: bool | None, fp16: bool, gpu: bool) -> str:
    """The compute dtype (bf16, fp16 or fp32), as TrainerConfig.__post_init__ settles an unset
    --bf16 (every GPU size the program knows supports bf16: A100, H100, H200)."""
    if fp16:
        return "fp16"
    if bf16 is None:
        return "bf16" if gpu else "fp32"
    return "bf16" if bf16 else "fp32"


@dataclass(frozen=True)
class TrainingSetup:
    """What the trainer's flags and the job's shape say about memory."""

    use_lora: bool
    lora_r: int
    lora_dropout: float
    lora_targets: tuple[str, ...]
    lora_modules_to_save: tuple[str, ...]
    precision: str
    max_length: int
    batch_size: int
    activation_checkpointing: bool
    attention: str
    flattened_rows: bool  # packing or padding_free: a micro-batch is one row of all its tokens
    optimizer: str
    processes: int
    gpu: bool

    @classmethod
    def from_flags(
        cls, values: Mapping[str, Any], *, processes: int, gpu: bool, checkpointing: bool
    ) -> TrainingSetup:
        """From the trainer's flag values (every name in FLAGS); ``checkpointing`` is what runs
        when neither checkpointing flag is set."""
        given = values["activation_checkpointing"]
        if given is None:
            given = values["gradient_checkpointing"]
        targets = tuple(values["lora_target_modules"])
        return cls(
            use_lora=bool(values["use_lora"]),
            lora_r=int(values["lora_r"]),
            lora_dropout=float(values["lora_dropout"]),
            lora_targets=LINEAR_MODULES if targets == ("all-linear",) else targets,
            lora_modules_to_save=tuple(values["lora_modules_to_save"] or ()),
            precision=precision(values["bf16"], bool(values["fp16"]), gpu),
            # No --max_length (no packing): examples are never cut; Phi-3's 4k context stands in.
            max_length=int(values["max_length"] or 4096),
            batch_size=int(values["per_device_train_batch_size"]),
            activation_checkpointing=checkpointing if given is None else bool(given),
            attention=choose(values) or "sdpa",  # what the trainer loads (attention.py)
            flattened_rows=bool(values["packing"] or values["padding_free"]),
            optimizer=str(getattr(values["optim"], "value", values["optim"])),
            processes=processes,
            gpu=gpu,
        )

    @property
    def sharded(self) -> bool:
        return shards_full_fine_tuning(self.use_lora, self.processes)

    @property
    def tokens(self) -> int:
        return self.batch_size * self.max_length


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU at the peak of a training step, by part (the names the messages show)."""

    parts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, gpu_bytes: int) -> bool:
        return self.total <= usable_bytes(gpu_bytes)

    def describe(self) -> str:
        """'about 70.1 GB (weights 15.3 GB, ...)', in GB of 10^9 bytes."""
        parts = ", ".join(f"{name} {gigabytes(size)}" for name, size in self.parts.items() if size)
        return f"about {gigabytes(self.total)} ({parts})"


def usable_bytes(gpu_bytes: int) -> int:
    return int(gpu_bytes * USABLE_FRACTION)


def gigabytes(size: int) -> str:
    return f"{size / GB:.1f} GB"


_OPTIMIZER_MOMENTS = (
    (("sgd", "adafactor"), 0),
    (("lion", "rmsprop", "adagrad"), 1),
    (("ademamix",), 3),
)


def _bytes(precision_name: str) -> int:
    return 4 if precision_name == "fp32" else 2


def _optimizer_state_bytes(optimizer: str, parameter_bytes: int) -> float:
    """Per trained parameter. AdamW and its variants (the default, adamw_torch_fused; any name not
    listed here) keep two moments in the parameter's dtype, AdEMAMix three; Lion, RMSprop and
    Adagrad one; SGD (no momentum by default) and Adafactor (factored) next to nothing; 8-bit and
    4-bit variants a byte or half a byte per moment."""
    name = optimizer.lower()
    moments = next(
        (count for words, count in _OPTIMIZER_MOMENTS if any(w in name for w in words)), 2
    )
    width = 1 if "8bit" in name else 0.5 if "4bit" in name else parameter_bytes
    return moments * width


def layer_activation_bytes(shape: ModelShape, setup: TrainingSetup) -> int:
    """Bytes autograd keeps for the backward from one decoder layer, for all the step's tokens."""
    h, i, a = shape.hidden_size, shape.intermediate_size, shape.num_attention_heads
    kv = shape.kv_width
    c = _bytes(setup.precision)  # what autocast computes in
    stream = _residual_bytes(setup)
    full = not setup.use_lora
    # RMSNorm (Phi3RMSNorm): its fp32 input and 1/rms per token; the normalised input when its
    # weight trains.
    norms = 2 * (4 * h + 4 + (stream * h if full else 0))
    if kv < h and (setup.attention == "eager" or mask_elements(setup)):
        # Grouped-query attention with a mask (or eager): transformers repeats the key and value
        # heads (repeat_kv; SDPA's enable_gqa only without a mask, sdpa_attention.py
        # use_gqa_in_sdpa), so the rotated query and the repeated key and value are kept.
        attention = 3 * c * h
    else:
        # The fused qkv output (the value view keeps all of it), the rotated query and key.
        attention = c * (h + 2 * kv) + c * (h + kv)
    if setup.attention == "eager":
        # Softmax in fp32 over the whole row, and its copy in the compute dtype.
        attention += a * _row_length(setup) * (4 + (c if c != 4 else 0))
    else:
        attention += c * h + 4 * a  # the attention output and its log-sum-exp per head
    # The fused gate_up output (silu's input view keeps it) and silu(gate).
    mlp = 3 * c * i
    per_token = norms + attention + mlp
    if full:
        per_token += c * (3 * h + i)  # the inputs of qkv, o, gate_up and down, in autocast's dtype
    else:
        per_token += sum(_lora_bytes(shape, setup, name) for name in setup.lora_targets)
    return per_token * setup.tokens


def _lora_bytes(shape: ModelShape, setup: TrainingSetup, target: str) -> int:
    """Per token, for one adapted module: its dropout mask (a bool on CUDA, native_dropout; the
    input's fp32 on CPU), the adapter's input in the compute dtype and lora_A's output."""
    if target not in shape.linear_shapes():
        return 0  # not a Phi-3 module; preflight refuses it before anything loads
    features = shape.linear_shapes()[target][0]
    c = _bytes(setup.precision)
    mask = (1 if setup.gpu else 4) if setup.lora_dropout > 0 else 0
    return (mask + c) * features + c * setup.lora_r


def _residual_bytes(setup: TrainingSetup) -> int:
    """The residual stream between layers: fp32 over fp32 weights (full fine-tuning, unsharded);
    the weights' dtype for LoRA's base and FSDP2's gathered parameters."""
    return _bytes(setup.precision) if setup.use_lora or setup.sharded else 4


def _row_length(setup: TrainingSetup) -> int:
    return setup.tokens if setup.flattened_rows else setup.max_length


def mask_elements(setup: TrainingSetup) -> int:
    """Entries of the attention mask over the step's rows: packed rows hold several sequences,
    padded batches padding; none with a variable-length kernel, nor for one unpadded row (SDPA
    runs it as causal, transformers masking_utils sdpa_mask)."""
    if setup.attention in _VARLEN_ATTENTION or not (setup.flattened_rows or setup.batch_size > 1):
        return 0
    rows = 1 if setup.flattened_rows else setup.batch_size
    return rows * _row_length(setup) ** 2


def _trained_state(shape: ModelShape, setup: TrainingSetup) -> tuple[float, float, float, float]:
    """Weights, gradients, optimizer state and weight copies (see the module's doc)."""
    c = _bytes(setup.precision)
    if setup.use_lora:
        base = c  # preflight.model_dtype: the frozen base in the compute dtype
        shapes = shape.linear_shapes()
        adapters = shape.num_hidden_layers * sum(
            setup.lora_r * sum(shapes[t]) for t in setup.lora_targets if t in shapes
        )
        # modules_to_save: a trained copy of each, beside the frozen original, in its dtype.
        saved = sum(shape.module_parameters(m) for m in setup.lora_modules_to_save)
        return (
            base * (shape.parameters + saved) + 4 * adapters,
            4 * adapters + base * saved,
            adapters * _optimizer_state_bytes(setup.optimizer, 4)
            + saved * _optimizer_state_bytes(setup.optimizer, base),
            c * adapters if c != 4 else 0,  # autocast's cached casts of the fp32 adapters
        )
    share = setup.processes if setup.sharded else 1
    state = 4 * shape.parameters / share
    optimizer = shape.parameters * _optimizer_state_bytes(setup.optimizer, 4) / share
    if setup.sharded:
        copies = c * (shape.root_parameters + 3 * shape.layer_parameters)
    else:
        copies = c * shape.num_hidden_layers * shape.layer_linear_parameters if c != 4 else 0
    return state, state, optimizer, copies


def estimate(shape: ModelShape, setup: TrainingSetup) -> MemoryEstimate:
    """Bytes per GPU at the peak of a training step (see the module's doc for each part)."""
    c, stream = _bytes(setup.precision), _residual_bytes(setup)
    tokens, h, layers = setup.tokens, shape.hidden_size, shape.num_hidden_layers
    weights, gradients, optimizer, copies = _trained_state(shape, setup)
    one_layer = layer_activation_bytes(shape, setup)
    # Outside the layers: rotary cos/sin; the final norm (fp32 input, 1/rms, and the normalised
    # input when its weight trains); the loss head's saved hidden states and per-token
    # statistics; the token ids a trained embedding keeps.
    trained = 0 if setup.use_lora else stream * h + 8
    outside = tokens * (2 * shape.head_dim * stream + 4 * h + 4 + trained + stream * h + 18)
    # The mask transformers builds once (boolean for SDPA; additive for eager, in the stream's
    # dtype), and the additive copy SDPA makes of it in each layer (see the module's doc).
    mask = mask_elements(setup)
    shared_mask, layer_mask = (stream * mask, 0) if setup.attention == "eager" else (mask, c * mask)
    if setup.activation_checkpointing:
        # Each layer keeps its input; the backward recomputes one layer at a time.
        activations = layers * stream * h * tokens + one_layer + outside
        masks = shared_mask + layer_mask
    else:
        activations = layers * one_layer + outside
        masks = shared_mask + layers * layer_mask
    vocab = min(shape.vocab_size, _LOSS_TILE_VOCAB)
    # One logits tile in the compute dtype, the fp32 gradient of the hidden states; with fp32
    # weights under autocast the tile's cast of the head's weight; sharded, the head's unsharded
    # fp32 gradient before its reduce-scatter.
    loss_head = c * min(tokens, _LOSS_TILE_TOKENS) * vocab + 4 * h * tokens
    if not setup.use_lora:
        loss_head += 4 * vocab * h if setup.sharded else (c * vocab * h if c != 4 else 0)
    parts = {
        "weights": weights,
        "gradients": gradients,
        "optimizer state": optimizer,
        "gathered layers" if setup.sharded else "weight copies": copies,
        "activations" + (" (checkpointed)" if setup.activation_checkpointing else ""): activations,
        "attention masks": masks,
        "loss head": loss_head,
    }
    return MemoryEstimate({name: math.ceil(size) for name, size in parts.items()})


@dataclass(frozen=True)
class CheckpointingChoice:
    """Whether to recompute activations, from both estimates against the GPU's memory."""

    enabled: bool
    without: MemoryEstimate
    checkpointed: MemoryEstimate
    gpu_bytes: int

    @property
    def fits(self) -> bool:
        return (self.checkpointed if self.enabled else self.without).fits(self.gpu_bytes)

    def message(self) -> str:
        usable = f"{gigabytes(usable_bytes(self.gpu_bytes))} usable of {gigabytes(self.gpu_bytes)}"
        without = f"without activation checkpointing {self.without.describe()}"
        if not self.enabled:
            return f"activation checkpointing off: {without} fits the GPU ({usable})"
        state = "on" if self.fits else "on, and the run may still not fit"
        return (
            f"activation checkpointing {state}: {without} does not fit the GPU ({usable}); "
            f"with it {self.checkpointed.describe()}"
        )


def choose_checkpointing(
    shape: ModelShape, setup: TrainingSetup, gpu_bytes: int
) -> CheckpointingChoice:
    """On only when the run without it would not fit the GPU."""
    without = estimate(shape, replace(setup, activation_checkpointing=False))
    checkpointed = estimate(shape, replace(setup, activation_checkpointing=True))
    return CheckpointingChoice(not without.fits(gpu_bytes), without, checkpointed, gpu_bytes)


def default_checkpointing(
    values: Mapping[str, Any], model: str, processes: int, gpu_bytes: int | None
) -> bool:
    """--activation_checkpointing when the user set neither checkpointing flag, logged.

    On a GPU: from the estimate against its memory. On CPU: on, as before this estimate existed.
    A CPU run has no memory of its own to check against (the host's is shared with every other
    process, and swap turns an overrun into slowness rather than an error), and CPU runs are the
    tests and the local rehearsal, which should run the code path large models take on a GPU.
    """
    if gpu_bytes is None:
        logger.info("activation checkpointing on: no GPU, so no device memory to size it by")
        return True
    shape = model_shape(model)
    if shape is None:
        logger.info(
            "activation checkpointing on: the shape of %s is not known before it loads "
            "(not a local folder with config.json, nor one of %s)",
            model,
            ", ".join(KNOWN_MODELS),
        )
        return True
    setup = TrainingSetup.from_flags(values, processes=processes, gpu=True, checkpointing=False)
    choice = choose_checkpointing(shape, setup, gpu_bytes)
    (logger.info if choice.fits else logger.warning)("%s", choice.message())
    return choice.enabled
