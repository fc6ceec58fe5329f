"""Finding the model (flags or Azure ML's mount), serving a LoRA adapter, refusing bad set-ups."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from openai.types.chat import ChatCompletionMessageParam
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from phi3_rehearsal.ports import free_port
from phi3_server.__main__ import main
from phi3_server.loading import ModelLocationError, ModelSource, locate_model, served_context
from tests.serving.server_process import REPO_ROOT, SERVER_MODULE, serve

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


def _copy(model: Path, to: Path) -> Path:
    shutil.copytree(model, to)
    return to


def _adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter on Phi-3's fused projections, with non-zero weights so it changes answers."""
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(str(out))
    return out


def test_mount_prefers_the_merged_model(tiny_phi3: Path, tmp_path: Path) -> None:
    merged = _copy(tiny_phi3, tmp_path / "phi3-ft" / "2" / "merged")
    (tmp_path / "phi3-ft" / "2" / "adapter").mkdir()
    (tmp_path / "phi3-ft" / "2" / "adapter" / "adapter_config.json").write_text("{}")
    assert locate_model(None, None, str(tmp_path)) == ModelSource(merged)


@pytest.mark.parametrize(
    ("layout", "message_part"),
    [
        (["a/merged", "b/merged"], "several merged models"),
        ([], "holds no model folder"),
    ],
)
def test_mount_without_exactly_one_model_is_refused(
    tiny_phi3: Path, tmp_path: Path, layout: list[str], message_part: str
) -> None:
    for folder in layout:
        _copy(tiny_phi3, tmp_path / folder)
    with pytest.raises(ModelLocationError, match=message_part) as raised:
        locate_model(None, None, str(tmp_path))
    for folder in layout:
        assert str(tmp_path / folder) in str(raised.value)


def test_adapter_with_missing_base_names_its_config(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "microsoft/Phi-3-mini-4k-instruct"})
    )
    with pytest.raises(ModelLocationError, match=r"adapter_config\.json.*--base-model"):
        locate_model(tmp_path, None, None)


@pytest.mark.parametrize(
    ("argv", "message_part"),
    [
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--request-timeout", "200"], "--request-timeout"),
        (["--model-dir", "/no/such/folder"], "/no/such/folder"),
        ([], "pass --model-dir or set AZUREML_MODEL_DIR"),
    ],
)
def test_bad_configuration_exits_2_with_a_message(
    argv: list[str],
    message_part: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    assert main(argv) == 2
    assert message_part in capsys.readouterr().err


@pytest.mark.slow
def test_serves_a_lora_adapter_found_in_an_azureml_mount(tiny_phi3: Path, tmp_path: Path) -> None:
    mount = tmp_path / "azureml-models"
    adapter = _adapter(tiny_phi3, mount / "phi3-ft" / "3" / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(tiny_phi3)
    encoded: Any = tokenizer.apply_chat_template(
        cast(list[dict[str, str]], QUESTION),
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    prompt = encoded["input_ids"]

    def greedy(model: Any) -> str:
        output = model.generate(prompt, max_new_tokens=10, do_sample=False)
        return str(tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True))

    base = AutoModelForCausalLM.from_pretrained(tiny_phi3).eval()
    base_answer = greedy(base)
    expected = greedy(PeftModel.from_pretrained(base, adapter).eval())
    assert expected != base_answer, "the adapter must change the answer for this test to mean much"

    with serve(tmp_path / "logs", env={"AZUREML_MODEL_DIR": str(mount)}) as server:
        answer = server.openai().chat.completions.create(
            model="phi3", messages=QUESTION, temperature=0, max_tokens=10
        )
    assert answer.choices[0].message.content == expected


@pytest.mark.slow
def test_unloadable_weights_stop_the_process(tiny_phi3: Path, tmp_path: Path) -> None:
    """A never-ready container would only be killed by its probes; exiting 1 says why at once."""
    broken = _copy(tiny_phi3, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--model-dir",
            str(broken),
            "--port",
            str(free_port()),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "serving_image")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert f"cannot serve {broken}" in result.stderr


def test_a_longrope_model_is_served_up_to_its_original_context() -> None:
    """Past it longrope switches every position's rotary factors, by the batch's largest
    position, which a shared batch cache cannot follow."""
    from transformers import Phi3Config

    head_dim = 3072 // 32
    fields: dict[str, Any] = {
        "hidden_size": 3072,
        "num_attention_heads": 32,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {
            "rope_type": "longrope",
            "short_factor": [1.0] * (head_dim // 2),
            "long_factor": [4.0] * (head_dim // 2),
        },
    }
    longrope = Phi3Config(**fields)
    assert served_context(longrope) == 4096
    assert served_context(Phi3Config(max_position_embeddings=4096)) == 4096
    assert served_context(Phi3Config(max_position_embeddings=8192)) == 8192
