"""Training throughput and MFU: the trainer's defaults against TRL's own CLI, `trl sft`, with its
best flags and with its plain defaults, on the same model, data and core(s).

Three runs, each a subprocess of this same venv pinned to the same --threads core(s), one epoch of
the same chats (multi-turn, reply lengths long-tailed in tokens), the same random Phi-3 (hidden 256,
4 layers by default), LoRA r 16 / alpha 32 on Phi-3's four projections (--finetuning full: none),
no checkpoints and no tracker (neither is training throughput):

- phi3_trainer: `python -m phi3_trainer` with its defaults (padding-free packed rows of
  --max-length, one row per micro-step, 16 accumulation steps, assistant-only loss, activation
  checkpointing);
- trl_best: `trl sft --packing --packing_strategy bfd --padding_free --assistant_only_loss`;
- trl_plain: `trl sft` with its plain defaults (padded batches of 8, loss on every token).

Tokens/s counts the chats' own tokens, the same for all three (each trains on every chat once, no
chat is cut). MFU = model FLOPs / train time / peak, the model FLOPs per bench/mfu.py (full
6·N·t + 12·L·d·t², LoRA 4·N·t + 6·N_lora·t + 12·L·d·t², per chat of t tokens; recompute and
padding are not model FLOPs), the peak a plain fp32 matrix multiply measured in this run on the
same core(s). Train time is each run's own Trainer `train_runtime`; wall time (start-up,
tokenization and model loading too) is printed beside it. Runs alternate --repeats times and the
best of each counts, since the machine may be shared.

    .venv/bin/python bench/train_throughput.py [--quick] [--finetuning lora|full] [--json OUT]

--quick: a smoke run (tiny model, 16 chats, one repeat, about a minute), not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mfu import FORMULAS, ModelShape, matmul_peak, model_flops

REPO = Path(__file__).resolve().parent.parent

TEXT = (
    "the model answers questions about azure compute clusters training jobs data sets and "
    "deployments with short clear sentences while the user asks for details examples numbers "
    "plus code reasons steps and summaries of what happened in each run"
)
WORDS = TEXT.split(" ")
LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
# What every run shares: one epoch, the same length limit, no checkpoint, no tracker, no bars.
COMMON = ["--num_train_epochs", "1", "--save_strategy", "no", "--report_to", "none",
          "--disable_tqdm", "true"]  # fmt: skip
TRL_LORA = ["--use_peft", "--lora_r", "16", "--lora_alpha", "32", "--lora_target_modules",
            *LORA_TARGETS]  # fmt: skip
TRL_BEST = ["--packing", "--packing_strategy", "bfd", "--padding_free", "--assistant_only_loss"]
TRAIN_RUNTIME = re.compile(r"'train_runtime': '?([0-9.]+)'?")


def chat_data(examples: int, seed: int, max_length: int, tokenizer: Any) -> list[dict[str, Any]]:
    """One to three turns; short prompts and long-tailed replies, lengths drawn in tokens
    (log-normal, as in instruction-tuning sets: most replies are short, a few run long)."""
    rng = random.Random(seed)
    word_tokens = {w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in WORDS}

    def text(median_tokens: float, sigma: float, cap: int) -> tuple[str, int]:
        target = min(cap, max(2, round(rng.lognormvariate(math.log(median_tokens), sigma))))
        words, used = [], 0
        while used < target:
            words.append(rng.choice(WORDS))
            used += word_tokens[words[-1]]
        return " ".join(words), used

    records = []
    for _ in range(examples):
        turns = rng.randint(1, 3)
        budget = (max_length - 8) // turns - 8  # room for the template's role and end tokens
        messages = []
        for _ in range(turns):
            prompt, prompt_tokens = text(32, 0.7, budget // 4)
            reply, _ = text(100, 1.0, budget - prompt_tokens - 2)  # a word may overshoot by 2
            messages += [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": reply},
            ]
        records.append({"messages": messages})
    return records


def chat_lengths(records: list[dict[str, Any]], tokenizer: Any) -> list[int]:
    """Tokens of each chat as the chat template renders it for training."""
    render = tokenizer.apply_chat_template
    return [
        len(render(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in records
    ]


def commands(model: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    lora = args.finetuning == "lora"
    shared = ["--model_name_or_path", str(model), "--max_length", str(args.max_length), *COMMON]
    # TRL's SFTConfig asks for bf16 and refuses a machine without a GPU unless told --use_cpu.
    trl = [str(Path(sys.executable).with_name("trl")), "sft", "--dataset_name", str(data),
           *shared, "--use_cpu", "true", *(TRL_LORA if lora else [])]  # fmt: skip
    ours = [sys.executable, "-m", "phi3_trainer", "--train_file", str(data / "train.jsonl"),
            *shared, "--validation_split", "0", "--resume", "never", "--use_lora",
            str(lora).lower()]  # fmt: skip
    return {
        "phi3_trainer": [*ours, "--output_dir", str(out / "phi3_trainer")],
        "trl_best": [*trl, *TRL_BEST, "--output_dir", str(out / "trl_best")],
        "trl_plain": [*trl, "--output_dir", str(out / "trl_plain")],
    }


def run(command: list[str], cores: set[int], threads: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    start = time.perf_counter()
    proc = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )  # fmt: skip
    wall = time.perf_counter() - start
    found = TRAIN_RUNTIME.findall(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {"train_seconds": float(found[-1]), "wall_seconds": round(wall, 2)}


def fastest(
    results: list[dict[str, Any]], tokens: int, flops: float, peak: float
) -> dict[str, Any]:
    """The repeat with the shortest train time, with its tokens/s and MFU."""
    best = min(results, key=lambda r: r["train_seconds"])
    seconds = best["train_seconds"]
    return {
        **best,
        "tokens_per_second": round(tokens / seconds, 1),
        "mfu": round(flops / seconds / peak, 4),
        "all_train_seconds": [r["train_seconds"] for r in results],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, not a measurement")
    parser.add_argument("--finetuning", choices=["lora", "full"], default="lora")
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="cores each run is pinned to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.examples, args.max_length, args.repeats = 16, 128, 1
        args.hidden_size, args.layers = 64, 2
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        result = measure(args, Path(work))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build the model and data under ``work``, measure the peak, run the three, compare."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi3_rehearsal.tiny_phi3 import build

    model_dir = build(
        work / "model", hidden_size=args.hidden_size, layers=args.layers, heads=8,
        vocab_size=512, seed=args.seed,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    records = chat_data(args.examples, args.seed, args.max_length, tokenizer)
    lengths = chat_lengths(records, tokenizer)
    data = work / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    lora = args.finetuning == "lora"
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    adapters = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS)
    shape = ModelShape.of(get_peft_model(base, adapters) if lora else base)
    flops = model_flops(shape, lengths, lora)

    cores = set(sorted(os.sched_getaffinity(0))[: args.threads])
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(args.threads)
    peak_size, peak_seconds = (512, 0.3) if args.quick else (1024, 1.0)
    peak = matmul_peak("cpu", torch.float32, peak_size, seconds=peak_seconds)

    planned = commands(model_dir, data, work / "out", args)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in planned}
    for _ in range(args.repeats):
        for name, command in planned.items():
            runs[name].append(run(command, cores, args.threads))
    tokens = sum(lengths)
    best = {name: fastest(results, tokens, flops, peak) for name, results in runs.items()}
    ours = best["phi3_trainer"]["tokens_per_second"]
    return {
        "mode": "quick smoke run, not a measurement" if args.quick else "measurement",
        "device": "cpu",
        "cores": sorted(cores),
        "threads": args.threads,
        "model": {
            "hidden_size": args.hidden_size,
            "layers": args.layers,
            "finetuning": args.finetuning,
            "N_matmul_params": shape.matmul_params,
            "N_lora_params": shape.lora_params,
        },
        "data": {"chats": len(records), "max_length": args.max_length, "tokens": tokens},
        "flops_formula": FORMULAS[args.finetuning],
        "model_flops_per_epoch": flops,
        "peak_flops_per_second": round(peak),
        "peak_measured_by": f"fp32 {peak_size}x{peak_size} torch.matmul, best of 3 x "
        f"{peak_seconds} s, same core(s), this run",
        "runs": best,
        "ratios": {
            "phi3_trainer_vs_trl_best": round(ours / best["trl_best"]["tokens_per_second"], 2),
            "phi3_trainer_vs_trl_plain": round(ours / best["trl_plain"]["tokens_per_second"], 2),
        },
        "commands": {name: " ".join(c) for name, c in planned.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
