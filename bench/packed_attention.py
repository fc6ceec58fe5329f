"""Time per token of a training step on packed rows of short chats: sdpa (a block-diagonal mask
over the whole row) against packed_varlen (attention per chat), rows of 256 and of 2048 tokens.

The same chats (log-normal lengths, median 90 tokens, at most 256) packed by TRL's own best-fit
decreasing packer and collated by its padding-free collator, one row per step, forward and
backward of a random Phi-3 (hidden 256, 4 layers, 8 heads by default) in fp32 on --threads
core(s). Best of --repeats passes over all rows, since the machine may be shared.

    .venv/bin/python bench/packed_attention.py [--chats 300] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

IMPLEMENTATIONS = ("sdpa", "packed_varlen")
ROWS = (256, 2048)


def chat_lengths(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [min(256, max(8, round(rng.lognormvariate(math.log(90), 0.7)))) for _ in range(count)]


def seconds_per_token(
    implementation: str, row: int, lengths: list[int], args: argparse.Namespace
) -> float:
    import torch
    from datasets import Dataset
    from transformers import Phi3Config, Phi3ForCausalLM
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    import phi3_trainer.packed_attention  # noqa: F401 (registers packed_varlen)

    rng = random.Random(args.seed)
    chats = [[rng.randrange(3, 512) for _ in range(n)] for n in lengths]
    dataset = Dataset.from_dict({"input_ids": chats, "labels": chats})
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batches = [collate([example]) for example in pack_dataset(dataset, row, "bfd", {})]
    torch.manual_seed(args.seed)
    config = Phi3Config(
        vocab_size=512, hidden_size=args.hidden_size, intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, max_position_embeddings=4096, pad_token_id=0,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = Phi3ForCausalLM(config).train()
    model.set_attn_implementation(implementation)
    best = math.inf
    for _ in range(args.repeats):
        start = time.perf_counter()
        for batch in batches:
            inputs: dict[str, Any] = {k: v for k, v in batch.items() if k != "seq_idx"}
            model(**inputs, use_cache=False).loss.backward()
        best = min(best, time.perf_counter() - start)
    return best / sum(lengths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    lengths = chat_lengths(args.chats, args.seed)
    micros = {
        (name, row): 1e6 * seconds_per_token(name, row, lengths, args)
        for name in IMPLEMENTATIONS
        for row in ROWS
    }
    for (name, row), value in micros.items():
        print(f"{name:14s} rows of {row:4d} tokens: {value:7.1f} us/token")
    baseline = micros[("sdpa", 256)]
    result = {
        "chats": args.chats,
        "tokens": sum(lengths),
        "us_per_token": {f"{name}/{row}": round(value, 1) for (name, row), value in micros.items()},
        # Each 2048-token row against the 256-token rows of today's path (sdpa).
        "ratio_2048_to_256_sdpa": {
            name: round(micros[(name, 2048)] / baseline, 2) for name in IMPLEMENTATIONS
        },
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
