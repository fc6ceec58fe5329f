"""The tiny Phi-3 behaves like a real Phi-3 checkpoint where the other tests rely on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_cli_writes_a_loadable_phi3_with_stock_template(tmp_path: Path, repo_root: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer
    from trl.chat_template_utils import phi3_chat_template

    out = tmp_path / "tiny"
    proc = subprocess.run(
        [sys.executable, "scripts/make_tiny_phi3.py", str(out), "--layers", "1"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout.splitlines()[-1])["path"] == str(out.resolve())
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "phi3" and config.num_hidden_layers == 1
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == phi3_chat_template
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    for special in ("<|end|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"):
        assert tokenizer.tokenize(special) == [special]
    generation = json.loads((out / "generation_config.json").read_text())
    assert set(generation["eos_token_id"]) == {
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        tokenizer.convert_tokens_to_ids("<|end|>"),
    }


def test_cli_rejects_heads_that_do_not_divide_hidden(tmp_path: Path, repo_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/make_tiny_phi3.py", str(tmp_path / "x"), "--heads", "5"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--hidden-size 64 must be divisible by --heads 5" in proc.stderr
