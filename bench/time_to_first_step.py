"""Time from the trainer's start to its first training step, and how much of it is tokenization.

Runs the trainer in this process (``phi3_trainer.train.train``, the same flags as ``python -m
phi3_trainer``) on generated multi-turn chats and a tiny random Phi-3, for one step, and reports:
the seconds before step 1, the seconds spent in ``apply_chat_template`` (every tokenization of a
chat, the validation's and TRL's alike) and how many times it ran.

    .venv/bin/python bench/time_to_first_step.py [--chats 3000] [--trainer training_image]

``--trainer`` is the folder that holds the ``phi3_trainer`` package, so that two versions can be
compared on the same data. Best of ``--repeats`` fresh processes, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEXT = (
    "the model answers questions about azure compute clusters training jobs data sets and "
    "deployments with short clear sentences while the user asks for details and examples"
)
WORDS = TEXT.split(" ")


def chats(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    records = []
    for _ in range(count):
        messages = []
        for _ in range(rng.randint(1, 3)):
            messages += [
                {"role": "user", "content": text(rng.randint(3, 15))},
                {"role": "assistant", "content": text(rng.randint(5, 40))},
            ]
        records.append({"messages": messages})
    return records


def measure_once(model: Path, data: Path, out: Path) -> dict[str, float]:
    """In this process (its phi3_trainer is the --trainer folder's: PYTHONPATH): train one step,
    timing what comes before it."""
    from transformers import PreTrainedTokenizerBase, Trainer

    from phi3_trainer import train as trainer_module
    from phi3_trainer.config import parse_args

    spent = {"tokenize_seconds": 0.0, "tokenize_calls": 0}
    template = PreTrainedTokenizerBase.apply_chat_template

    def timed_template(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return template(self, *args, **kwargs)
        finally:
            spent["tokenize_seconds"] += time.perf_counter() - start
            spent["tokenize_calls"] += 1

    first_step: list[float] = []
    training_step = Trainer.training_step

    def timed_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        first_step.append(first_step[0] if first_step else time.perf_counter())
        return training_step(self, *args, **kwargs)

    PreTrainedTokenizerBase.apply_chat_template = timed_template  # type: ignore[method-assign]
    Trainer.training_step = timed_step  # type: ignore[method-assign]
    script, config = parse_args(
        ["--train_file", str(data), "--model_name_or_path", str(model), "--output_dir", str(out),
         "--max_steps", "1", "--validation_split", "0.05", "--eval_strategy", "no",
         "--gradient_accumulation_steps", "1", "--save_strategy", "no", "--report_to", "none",
         "--disable_tqdm", "true", "--resume", "never", "--merge_output", "false"]
    )  # fmt: skip
    start = time.perf_counter()
    trainer_module.train(script, config)
    return {"seconds_before_step_1": round(first_step[0] - start, 3), **spent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=3000)
    parser.add_argument("--trainer", type=Path, default=REPO / "training_image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--_child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(measure_once(*args._child)))
        return 0
    from phi3_rehearsal.tiny_phi3 import build

    with tempfile.TemporaryDirectory() as work:
        model = build(Path(work) / "model", hidden_size=64, layers=2, heads=4, vocab_size=512,
                      seed=args.seed)  # fmt: skip
        data = Path(work) / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in chats(args.chats, args.seed)))
        runs = []
        # The --trainer folder's packages come before the installed ones (PYTHONPATH precedes
        # site-packages): phi3_trainer and the rules package beside it.
        trainer = args.trainer.resolve()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(trainer), str(trainer / "rules")])}
        for repeat in range(args.repeats):
            child = [sys.executable, __file__, "--trainer", str(args.trainer), "--_child",
                     str(model), str(data), str(Path(work) / f"out{repeat}")]  # fmt: skip
            done = subprocess.run(child, capture_output=True, text=True, check=False, env=env)
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                return done.returncode
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run["seconds_before_step_1"])
    share = best["tokenize_seconds"] / best["seconds_before_step_1"]
    print(json.dumps({"chats": args.chats, "trainer": str(args.trainer), **best,
                      "tokenize_share": round(share, 3), "runs": runs}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
