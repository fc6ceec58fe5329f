"""`make demo`: the rehearsal of the demo stack end to end; every stage must work for exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = 7


@pytest.mark.slow
def test_demo_rehearses_the_demo_stack_trains_serves_and_answers(tmp_path: Path) -> None:
    workdir = tmp_path / "rehearsal"
    proc = subprocess.run(
        [sys.executable, "scripts/rehearse.py", "--stack", "demo", "--workdir", str(workdir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for stage in range(1, STAGES + 1):
        assert f"[{stage}/{STAGES}]" in out
    # The planned job ran: its command as the program generates it, substituted.
    assert "python -m phi3_trainer --train_file ${{inputs.train}}" in out
    assert "/cap/data-capability/wd/INPUT_train/" in out
    assert out.count("      Q: ") == 3 and out.count("      A: ") == 3
    # The tiny model visibly learned the task (3/3 on 2 idle cores; allow one miss).
    assert out.count("[learned]") >= 2, out[-3000:]
    # Both reference scoring bodies answered through the endpoint's gateway.
    assert out.count("      /score ") == 2
    # The model the deployment served is the trainer's merged output, found via the model URI.
    assert list(workdir.glob("job/**/wd/model/merged/model.safetensors"))
    assert list(workdir.glob("deployment/**/azureml-models/*/1/merged/config.json"))


def test_a_stack_the_program_refuses_is_a_failed_stage_not_a_traceback() -> None:
    from phi3_rehearsal import rehearse

    config = rehearse.stack_config("demo") | {"phi3-foundry:trainerArgs": '{"num_epochs": 3}'}
    with pytest.raises(
        rehearse.StageFailed, match=r"(?s)Pulumi\.demo\.yaml: .*\[num_epochs\]: not a flag"
    ):
        rehearse.plan(config, "demo")
