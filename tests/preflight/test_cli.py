"""`scripts/preflight.py` against the fake ARM server, signed in through the real credential chain
(AzureCliCredential, as azure-native without ARM_* settings -> a fake `az` on PATH)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_infra.cli.preflight import main
from tests.fakes.arm_server import FakeArm

A100 = "standardNCADSA100v4Family"


@pytest.fixture
def signed_in(signed_in_env: FakeArm) -> FakeArm:
    signed_in_env.add_region("eastus2", quota={A100: (0, 24)})
    signed_in_env.add_region("swedencentral", quota={A100: (0, 96)})
    return signed_in_env


def test_prints_the_ranked_table(signed_in: FakeArm, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--region", "eastus2", "--region", "swedencentral", "--sku", "Standard_NC48ads_A100_v4"]
    argv += ["--sku", "Standard_NC24ads_A100_v4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "region", "rank", "sku", "family", "vCPUs", "needed", "family", "free", "regional",
        "free", "verdict",
    ]  # fmt: skip
    assert lines[1].split()[:3] == ["eastus2", "1", "Standard_NC48ads_A100_v4"]
    assert "no_quota" in lines[1] and "fits <- chosen" in lines[2]
    assert "fits <- chosen" in lines[3] and "swedencentral" in lines[3]
    assert "usable regions: eastus2, swedencentral" in out


def test_does_not_fit_exits_1_with_what_to_do(
    signed_in: FakeArm, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--region", "eastus2", "--sku", "Standard_NC24ads_A100_v4", "--nodes", "2"]) == 1
    out = capsys.readouterr().out
    assert "need 48 vCPUs, used 0, limit 24" in out and "az quota update" in out


def test_serving_size_is_checked_with_its_reserve(
    signed_in: FakeArm, capsys: pytest.CaptureFixture[str]
) -> None:
    # No ESv3 quota in eastus2: two Standard_E4s_v3 instances reserve three (12 vCPUs).
    argv = ["--region", "eastus2", "--serving-size", "Standard_E4s_v3", "--serving-instances", "2"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "serving size" in out and "2 (3)" in out
    assert "eastus2: serving: Standard_E4s_v3" in out and "need 12 vCPUs" in out


def test_json_for_machines(signed_in: FakeArm, capsys: pytest.CaptureFixture[str]) -> None:
    signed_in.providers["Microsoft.Network"] = "NotRegistered"
    assert main(["--region", "swedencentral", "--low-priority", "--json"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["fits"] is False and body["request"]["low_priority"] is True
    assert body["chosen"] == {"swedencentral": "Standard_NC24ads_A100_v4"}
    assert body["blockers"][0]["name"] == "Microsoft.Network"
    assert "az provider register --namespace Microsoft.Network" in body["blockers"][0]["advice"]


def test_rejected_token_exits_3(
    signed_in: FakeArm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_AZ_TOKEN", "token-for-another-tenant")
    assert main(["--region", "eastus2"]) == 3
    assert "InvalidAuthenticationToken" in capsys.readouterr().err


def test_not_signed_in_exits_3_before_any_call(
    signed_in: FakeArm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_AZ_LOGGED_OUT", "1")
    assert main(["--region", "eastus2"]) == 3
    assert "az login" in capsys.readouterr().err
    assert signed_in.calls == []


def test_azure_failing_exits_4(signed_in: FakeArm, capsys: pytest.CaptureFixture[str]) -> None:
    signed_in.fail(500)
    assert main(["--region", "eastus2", "--timeout", "0.3"]) == 4
    assert "could not check" in capsys.readouterr().err


def test_bad_arguments_exit_2(signed_in: FakeArm, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--region", "East US", "--nodes", "0"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "region 'East US'" in err and "training_nodes is 0" in err
    assert signed_in.calls == []


def test_runs_as_a_script(signed_in: FakeArm, repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "preflight.py"), "--region", "eastus2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usable regions: eastus2" in result.stdout
