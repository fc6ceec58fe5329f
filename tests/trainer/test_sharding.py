"""Full fine-tuning sharded with FSDP2 across processes: chosen while the flags are read, the same
losses and weights as one process with the same global batch, and sharded checkpoints that resume
to the same end. The CPU runs use two gloo workers, as Azure ML's PyTorch distribution starts one
process per GPU with the same entrypoint."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_trainer import sharding
from phi3_trainer.config import ScriptArguments, TrainerConfig, parse_args
from tests.trainer.helpers import TRAINER_ENV, TRAINER_MODULE

# fp32 throughout (CPU). Sharding changes only the order in which gradients are summed (a
# reduce-scatter over two ranks instead of one sum): rounding differences of a few fp32 epsilons
# (1.2e-7) per step, measured at 9e-8 relative on the losses and 4e-7 on the weights after six
# steps. A sharding fault (gradients summed instead of averaged, a rank's rows dropped or counted
# twice, a shard left un-updated) moves the next loss by the size of a step's change, 0.1 or more
# here: the tolerances sit 100x above the rounding and 4 orders of magnitude below such a fault.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5
STEPS, SAVED_AT = 6, 3
GLOBAL_ROWS = 4  # packed rows per optimizer step in both layouts


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Keeps the variables a sharded run exports for the model loader out of the other tests."""
    for name in ("ACCELERATE_USE_FSDP", "FSDP_CPU_RAM_EFFICIENT_LOADING"):
        monkeypatch.setenv(name, "false")
    return monkeypatch


def configured(
    world_size: int, monkeypatch: pytest.MonkeyPatch, *flags: str
) -> tuple[ScriptArguments, TrainerConfig]:
    """The flags read as in a job of ``world_size`` processes. Read here in one process (several
    would start a process group while parsing), then configured for the job's size."""
    script, config = parse_args(["--train_file", "t.jsonl", "--report_to", "none", *flags])
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    sharding.configure(script, config)
    return script, config


def test_full_fine_tuning_on_several_processes_shards_with_fsdp2(
    isolated_env: pytest.MonkeyPatch,
) -> None:
    _, config = configured(8, isolated_env, "--use_lora", "false")
    plugin = config.fsdp_plugin_args
    assert config.fsdp and plugin is not None
    assert plugin["fsdp_version"] == 2 and plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    # Activation checkpointing moves to FSDP's own (the Trainer refuses both at once).
    assert plugin["activation_checkpointing"] is True
    assert not config.activation_checkpointing and not config.gradient_checkpointing


@pytest.mark.parametrize(
    ("world_size", "flags"),
    [(1, ["--use_lora", "false"]), (2, []), (4, ["--use_lora", "true"])],
    ids=["full-fine-tuning-one-process", "lora-two-processes", "lora-four-processes"],
)
def test_one_process_and_lora_keep_replicas(
    world_size: int, flags: list[str], isolated_env: pytest.MonkeyPatch
) -> None:
    _, config = configured(world_size, isolated_env, *flags)
    assert not config.fsdp and config.fsdp_plugin_args is None
    assert config.activation_checkpointing  # the Trainer's own, as before


def test_fsdp_on_one_process_is_refused_before_anything_loads(
    isolated_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    isolated_env.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--train_file", "t.jsonl", "--use_lora", "false", "--fsdp"])
    assert stopped.value.code == 2
    message = capsys.readouterr().err
    assert "--fsdp needs more than one process (WORLD_SIZE is 1)" in message
    assert "Traceback" not in message


def run_trainer(processes: int, out: Path, model: Path, data: Path, repo: Path) -> Path:
    """The job's own command, under torchrun with gloo workers when ``processes`` > 1."""
    launcher = (
        [str(Path(sys.executable).with_name("torchrun")), "--standalone",
         "--nproc_per_node", str(processes), "-m", TRAINER_MODULE]
        if processes > 1 else [sys.executable, "-m", TRAINER_MODULE]
    )  # fmt: skip
    rows = GLOBAL_ROWS // processes // 2
    proc = subprocess.run(
        [*launcher, "--model_name_or_path", str(model), "--train_file", str(data),
         "--output_dir", str(out), "--use_lora", "false", "--learning_rate", "1e-3",
         "--max_steps", str(STEPS), "--save_steps", str(SAVED_AT), "--validation_split", "0.1",
         "--eval_strategy", "no", "--max_length", "128", "--per_device_train_batch_size",
         str(rows), "--gradient_accumulation_steps", "2", "--warmup_steps", "0",
         "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true"],
        cwd=repo, env=TRAINER_ENV, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def losses(out: Path) -> list[float]:
    history = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [h["loss"] for h in history["log_history"] if "loss" in h]


def weights(out: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return dict(load_file(out / "merged" / "model.safetensors"))


def assert_close_weights(got: dict[str, object], want: dict[str, object], atol: float) -> None:
    import torch

    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert isinstance(tensor, torch.Tensor)
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=atol, msg=name)


@pytest.mark.slow
def test_two_sharded_workers_match_one_and_resume_to_the_same_end(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, repo_root: Path
) -> None:
    args = (tiny_phi3, next_number_file, repo_root)
    one = run_trainer(1, tmp_path / "one", *args)
    two = run_trainer(2, tmp_path / "two", *args)

    # Sharded: each rank wrote its own part of the weights and of the optimizer state.
    checkpoint = two / f"checkpoint-{SAVED_AT}"
    shards = sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    assert (checkpoint / "optimizer_0").is_dir() and not (checkpoint / "model.safetensors").exists()

    expected = losses(one)
    assert len(expected) == STEPS and expected[0] - expected[-1] > 0.1  # it learned something
    assert losses(two) == pytest.approx(expected, rel=LOSS_RTOL)
    for key in ("train_loss", "eval_loss"):
        got, want = (json.loads((o / "metrics.json").read_text())[key] for o in (two, one))
        assert math.isclose(got, want, rel_tol=LOSS_RTOL), key
    # merged/ holds the whole model gathered from the shards, as one process writes it.
    assert_close_weights(weights(two), weights(one), WEIGHT_ATOL)

    # A run stopped after its checkpoint at step 3 (that checkpoint, as the run left it) resumes
    # under sharding to the uninterrupted run's end.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(checkpoint, resumed / checkpoint.name)
    run_trainer(2, resumed, *args)
    run = json.loads((resumed / "run.json").read_text())
    assert run["resumed_from"] == str(resumed / checkpoint.name)
    assert losses(resumed) == pytest.approx(losses(two), rel=1e-6)
    assert_close_weights(weights(resumed), weights(two), 1e-6)
