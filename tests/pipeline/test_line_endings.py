"""Line endings never change what Azure receives: a CRLF checkout (Windows, `core.autocrlf`) of
the same build contexts and data gives the same image tags, data version and job, so nothing is
rebuilt or retrained, and the bytes sent are the LF ones the hashes were taken over."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from phi3_infra.build_context import context_archive, context_hash
from phi3_infra.steps import blob_upload
from tests.fakes.arm_pipeline import PipelineArm
from tests.pipeline.conftest import Plan, write_context

JOB = "azure-native:machinelearningservices:Job"


def _to_crlf(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))


def _sent_files(context: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(context_archive(context))) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }


def test_a_crlf_checkout_rebuilds_and_retrains_nothing(plan: Plan, tmp_path: Path) -> None:
    def identity() -> dict[str, object]:
        run = plan()
        upload = run.named("train-data-upload").inputs
        return {
            "images": [
                run.named(f"{role}-image").inputs["image"] for role in ("trainer", "server")
            ],
            "data": (upload["url"], upload["sha256"]),
            "jobs": [job.inputs["id"] for job in run.of_type(JOB)],
        }

    before = identity()
    for path in [tmp_path / "train.jsonl", *tmp_path.glob("*_image/**/*")]:
        if path.is_file():
            _to_crlf(path)
    assert identity() == before


def test_the_registry_receives_the_lf_bytes_the_tag_names(tmp_path: Path) -> None:
    lf = write_context(tmp_path / "lf", "phi3_trainer")
    crlf = write_context(tmp_path / "crlf", "phi3_trainer")
    for path in crlf.rglob("*"):
        if path.is_file():
            _to_crlf(path)
    assert context_hash(crlf) == context_hash(lf)
    assert _sent_files(crlf) == _sent_files(lf)
    assert b"\r" not in b"".join(_sent_files(crlf).values())


def test_binary_files_are_sent_and_hashed_byte_for_byte(tmp_path: Path) -> None:
    # git's rule for binary: a NUL in the first 8000 bytes (xdiff-interface.c, buffer_is_binary).
    context = write_context(tmp_path / "context", "phi3_trainer")
    weights = context / "phi3_trainer" / "weights.bin"
    weights.write_bytes(b"\x00\x01\r\n\x02")
    before = context_hash(context)
    assert _sent_files(context)["phi3_trainer/weights.bin"] == b"\x00\x01\r\n\x02"
    weights.write_bytes(b"\x00\x01\n\x02")
    assert context_hash(context) != before


def test_crlf_data_is_uploaded_as_the_lf_bytes_its_version_names(
    plan: Plan, tmp_path: Path, pipeline_arm: PipelineArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = tmp_path / "train.jsonl"
    lf_bytes = train.read_bytes()
    _to_crlf(train)
    upload = plan().named("train-data-upload").inputs
    assert upload["sha256"] == hashlib.sha256(lf_bytes).hexdigest()

    monkeypatch.setattr(blob_upload, "storage_token", lambda: "token")
    blob = "training-data/train/x/train.jsonl"
    props = {"url": f"{pipeline_arm.fake.url}/blob/{blob}", "path": str(train), "sha256": "x"}
    blob_upload._BlobUploadProvider().create(props)
    assert pipeline_arm.uploads[blob] == lf_bytes
