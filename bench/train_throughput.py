"""Training throughput: the trainer's default (packed, padding-free) against a padded baseline.

Same random Phi-3 (hidden 256, 4 layers by default), same chat data with a long-tailed spread of
lengths, same trainer code path (LoRA, assistant-only loss, activation checkpointing), one epoch
each. The default packs examples into one padding-free row of --max-length tokens per step (the
trainer's default geometry); the baseline pads batches of --baseline-batch-size examples to their
longest. Reports real (non-padding) tokens per second, their ratio, and each padding fraction.
Runs alternate --repeats times and the best of each counts, since the machine may be shared.

    .venv/bin/python bench/train_throughput.py [--examples 128] [--max-length 512] [--json OUT]

CPU only here: the MFU of LoRA on a Phi-3-mini-sized model needs a GPU and is not measured.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "training_image")]

TEXT = (
    "the model answers questions about azure compute clusters training jobs data sets and "
    "deployments with short clear sentences while the user asks for details examples numbers "
    "plus code reasons steps and summaries of what happened in each run"
)
WORDS = TEXT.split(" ")


def chat_data(examples: int, seed: int, max_length: int, tokenizer: Any) -> list[dict[str, Any]]:
    """Short prompts and long-tailed replies, lengths drawn in tokens (log-normal, as in
    instruction-tuning sets: most replies are short, a few run to the length limit)."""
    rng = random.Random(seed)
    word_tokens = {w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in WORDS}

    def text(median_tokens: float, sigma: float, cap: int) -> tuple[str, int]:
        target = min(cap, max(2, round(rng.lognormvariate(math.log(median_tokens), sigma))))
        words, used = [], 0
        while used < target:
            words.append(rng.choice(WORDS))
            used += word_tokens[words[-1]]
        return " ".join(words), used

    budget = max_length - 16  # room for the chat template's role and end tokens
    records = []
    for _ in range(examples):
        prompt, prompt_tokens = text(32, 0.7, budget // 4)
        reply, _ = text(100, 1.0, budget - prompt_tokens - 2)  # a word may overshoot by 2
        records.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return records


def measure(
    model_dir: Path, records: list[dict[str, Any]], packing: bool, batch_size: int, args: Any
) -> dict[str, Any]:
    import torch

    from phi3_trainer.config import parse_args
    from phi3_trainer.train import build_trainer, load_tokenizer

    script, config = parse_args(
        ["--train_file", "unused.jsonl", "--model_name_or_path", str(model_dir),
         "--output_dir", tempfile.mkdtemp(prefix="bench-"), "--packing", str(packing).lower(),
         "--max_length", str(args.max_length),
         "--per_device_train_batch_size", str(batch_size),
         "--gradient_accumulation_steps", "1", "--num_train_epochs", "1", "--save_strategy", "no",
         "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1000",
         "--seed", str(args.seed)]
    )  # fmt: skip
    torch.manual_seed(args.seed)
    trainer = build_trainer(script, config, load_tokenizer(script, config), records, [])
    real = total = 0
    for batch in trainer.get_train_dataloader():
        ids = batch["input_ids"]
        total += ids.numel()
        real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else ids.numel()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {
        "packing": packing,
        "batch_size": batch_size,
        "steps": trainer.state.global_step,
        "real_tokens": real,
        "tokens_processed": total,
        "padding_fraction": round(1 - real / total, 4),
        "seconds": round(seconds, 2),
        "real_tokens_per_second": round(real / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--baseline-batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from scripts.make_tiny_phi3 import build

    model_dir = build(
        Path(tempfile.mkdtemp(prefix="bench-phi3-")),
        hidden_size=args.hidden_size, layers=args.layers, heads=8, vocab_size=512, seed=args.seed,
    )  # fmt: skip
    from transformers import AutoTokenizer

    # Replies stay within max_length so neither run truncates: the same tokens reach both.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    records = chat_data(args.examples, args.seed, args.max_length, tokenizer)
    runs: dict[str, list[dict[str, Any]]] = {"default_packed": [], "baseline_padded": []}
    for _ in range(args.repeats):
        runs["default_packed"].append(measure(model_dir, records, True, 1, args))
        runs["baseline_padded"].append(
            measure(model_dir, records, False, args.baseline_batch_size, args)
        )
    best = {
        name: max(results, key=lambda r: r["real_tokens_per_second"])
        for name, results in runs.items()
    }
    result = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": {"hidden_size": args.hidden_size, "layers": args.layers, "finetuning": "lora"},
        "examples": args.examples,
        "max_length": args.max_length,
        **best,
        "speedup_real_tokens_per_second": round(
            best["default_packed"]["real_tokens_per_second"]
            / best["baseline_padded"]["real_tokens_per_second"],
            2,
        ),
        "all_runs_real_tokens_per_second": {
            name: [r["real_tokens_per_second"] for r in results] for name, results in runs.items()
        },
        "mfu": "not measured: no GPU in this environment",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
