"""GPU training throughput and MFU of a Phi-3-mini-sized model: LoRA and full fine-tuning on packed
2048-token rows, against the GPU's bf16 matrix-multiply peak measured in the same run.

Needs only torch, transformers and peft (what the GPU machine has; TRL is not needed): the model
is transformers' Phi3ForCausalLM with Phi-3-mini's shape (hidden 3072, 32 layers, 32 heads, MLP
8192, vocabulary 32064), random weights built on the GPU, and the step is the one the trainer's
Trainer runs with its GPU defaults: bf16 autocast; full fine-tuning keeps fp32 weights and fp32
AdamW state (fused), LoRA a bf16 base with fp32 r 16 adapters on qkv_proj, o_proj, gate_up_proj,
down_proj; one 2048-token row per micro-step, --accumulation micro-steps per optimizer step.

Rows are packed with chats whose lengths follow bench/train_throughput.py's long tail (one to
three turns, replies log-normal around 100 tokens), each row filled to 2048 tokens (the last
chat cut to fit), position ids restarting at every chat, so transformers masks attention to each
chat (a block-causal mask, computed over the whole row: no variable-length kernel here). The
"causal_rows" runs train one 2048-token sequence per row, plain causal attention: the ceiling that
a variable-length kernel approaches.

MFU = model FLOPs / time / measured peak, model FLOPs per bench/mfu.py (full 6·N·t + 12·L·d·t²,
LoRA 4·N·t + 6·N_lora·t + 12·L·d·t², t each chat's tokens; recompute is not counted). The peak:
a plain bf16 8192x8192 torch.matmul, best of 3 x 2 s. Timed steps follow --warmup untimed ones.

    python bench/train_gpu.py [--steps 10] [--accumulation 8] [--budget-seconds 420]

Writes the JSON to stdout and, when $OUT is set, to $OUT/train_gpu.json. Designed to finish in
about 3 to 5 minutes on one H200 (141 GB); --budget-seconds skips the runs that would start after
it, so a slow machine still reports what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from mfu import FORMULAS, ModelShape, matmul_peak, model_flops

ROW = 2048
LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
PHI3_MINI: dict[str, Any] = {
    "hidden_size": 3072,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 8192,
    "vocab_size": 32064,
    "max_position_embeddings": 4096,
}
# --smoke: the same script on CPU with a tiny Phi-3, to check it before spending GPU time on it.
TINY = {**PHI3_MINI, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "intermediate_size": 128, "vocab_size": 512,
        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 1}  # fmt: skip
RUNS = {  # name: (fine-tuning, packed rows)
    "full_packed": ("full", True),
    "lora_packed": ("lora", True),
    "full_causal_rows": ("full", False),
    "lora_causal_rows": ("lora", False),
}


def chat_lengths(rng: random.Random) -> int:
    """Tokens of one chat, drawn as bench/train_throughput.py draws them."""
    total = 8
    for _ in range(rng.randint(1, 3)):
        prompt = max(2, round(rng.lognormvariate(math.log(32), 0.7)))
        reply = max(2, round(rng.lognormvariate(math.log(100), 1.0)))
        total += prompt + reply + 8  # role and end tokens of the template
    return total


def packed_rows(count: int, seed: int) -> list[list[int]]:
    """Chat lengths of ``count`` rows, each filled to exactly ROW tokens."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        row: list[int] = []
        while sum(row) < ROW:
            row.append(min(chat_lengths(rng), ROW - sum(row)))
        rows.append(row)
    return rows


def batch(lengths: list[int], vocab: int, device: str) -> dict[str, Any]:
    import torch

    ids = torch.randint(0, vocab, (1, ROW), device=device)
    positions = torch.cat([torch.arange(t, device=device) for t in lengths]).unsqueeze(0)
    return {"input_ids": ids, "position_ids": positions, "labels": ids}


def build_model(finetuning: str, shape: dict[str, Any], attention: str, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, Phi3Config

    config = Phi3Config(**shape, use_cache=False)
    dtype = torch.float32 if finetuning == "full" else torch.bfloat16
    torch.manual_seed(0)
    # Random weights made where they train; .to(dtype) rather than a dtype argument, whose name
    # differs between transformers 4 and 5 (the GPU machine's version is not pinned here).
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attention).to(dtype)
    if finetuning == "lora":
        from peft import LoraConfig, get_peft_model

        # PEFT keeps the adapters in fp32 over a bf16 base (autocast_adapter_dtype).
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    model.train()
    return model


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measure(name: str, args: argparse.Namespace, peak: float) -> dict[str, Any]:
    import torch

    finetuning, packed = RUNS[name]
    device, model_shape = ("cpu", TINY) if args.smoke else ("cuda", PHI3_MINI)
    model = build_model(finetuning, model_shape, args.attention, device)
    shape = ModelShape.of(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    vocab = model_shape["vocab_size"]
    rows_per_step = args.accumulation
    steps = args.warmup + args.steps
    rows = (
        packed_rows(steps * rows_per_step, args.seed)
        if packed
        else [[ROW]] * (steps * rows_per_step)
    )
    batches = [batch(r, vocab, device) for r in rows]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = 0.0
    for step in range(steps):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        for micro in range(rows_per_step):
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = model(**batches[step * rows_per_step + micro]).loss / rows_per_step
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    seconds = time.perf_counter() - start
    timed = rows[args.warmup * rows_per_step :]
    flops = model_flops(shape, [t for row in timed for t in row], finetuning == "lora")
    result = {
        "finetuning": finetuning,
        "rows": "packed chats, block-causal mask" if packed else "one sequence, causal",
        "flops_formula": FORMULAS[finetuning],
        "N_matmul_params": shape.matmul_params,
        "N_lora_params": shape.lora_params,
        "timed_steps": args.steps,
        "tokens_per_step": rows_per_step * ROW,
        "chats_per_row": round(sum(len(r) for r in timed) / len(timed), 1),
        "seconds": round(seconds, 3),
        "tokens_per_second": round(len(timed) * ROW / seconds, 1),
        "model_tflops_per_second": round(flops / seconds / 1e12, 1),
        "mfu": round(flops / seconds / peak, 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)
        if device == "cuda"
        else None,
        "last_loss": round(float(loss) * rows_per_step, 4),
    }
    del model, optimizer, batches, trainable, loss
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--accumulation", type=int, default=8, help="2048-token rows per step")
    parser.add_argument("--attention", default="sdpa")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--budget-seconds", type=float, default=420)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU, 1 step: a check")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.accumulation = 1, 1, 2

    import peft
    import torch
    import transformers

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench/train_gpu.py needs a CUDA GPU (or --smoke, a CPU check)")
    began = time.perf_counter()
    device, size, seconds = ("cpu", 256, 0.1) if args.smoke else ("cuda", 8192, 2.0)
    peak = matmul_peak(device, torch.bfloat16, size, seconds=seconds)
    result: dict[str, Any] = {
        "gpu": "cpu (--smoke)" if args.smoke else torch.cuda.get_device_name(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "peak_bf16_matmul_tflops": round(peak / 1e12, 1),
        "peak_measured_by": f"bf16 {size}x{size} torch.matmul, best of 3 x {seconds} s, this run",
        "runs": {},
        "skipped": [],
    }
    for name in args.runs:
        if time.perf_counter() - began > args.budget_seconds:
            result["skipped"].append(name)
            continue
        result["runs"][name] = measure(name, args, peak)
        print(f"{name}: {json.dumps(result['runs'][name])}", file=sys.stderr, flush=True)
    full = result["runs"].get("full_packed")
    if full and not args.smoke:  # issue 14's target for full fine-tuning
        result["full_fine_tuning_mfu_at_least_0.40"] = full["mfu"] >= 0.40
    result["elapsed_seconds"] = round(time.perf_counter() - began, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "train_gpu.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
