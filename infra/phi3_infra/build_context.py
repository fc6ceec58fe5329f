"""The images' build contexts: what each image is built from, and the tag that names its content.

The tag is the first 16 hex digits of a SHA-256 over every file the build would see (honouring
`.dockerignore`), with text files' line endings as sent (LF, `line_endings`), so an unchanged
folder keeps its tag, from any checkout, and nothing is rebuilt or retrained. Build arguments
append their values: the server image on an NVIDIA serving size is serving_image/Dockerfile's
`TORCH_VARIANT=cuda` variant, `<hash>-cuda`, from the same folder as the CPU image `<hash>`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from phi3_infra.catalog.serving_gpus import serving_gpu
from phi3_infra.config import ImageBuild, StackConfig, Stage
from phi3_infra.line_endings import read_as_sent
from phi3_infra.paths import SERVER_CONTEXT, TRAINER_CONTEXT

TAG_LENGTH = 16

# serving_image/Dockerfile's build argument: cpu (its default) or cuda.
TORCH_VARIANT_ARG = "TORCH_VARIANT"
BuildArgs = tuple[tuple[str, str], ...]  # (name, value) pairs, in the order the tag names them


class ImageContextError(ValueError):
    """A build context is missing or cannot be built; raised before any resource exists."""


# Docker's .dockerignore globs (Go filepath.Match plus `**`) as regular expressions.
_GLOB = re.compile(r"(\*\*/|\*\*|\*|\?)")
_GLOB_TOKENS = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def _ignore_rules(context: Path) -> list[tuple[re.Pattern[str], bool]]:
    """`.dockerignore` as (pattern, excludes) pairs; the last matching rule wins."""
    ignore_file = context / ".dockerignore"
    if not ignore_file.is_file():
        return []
    rules = []
    for raw in ignore_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        regex = "".join(_GLOB_TOKENS.get(part, re.escape(part)) for part in _GLOB.split(pattern))
        rules.append((re.compile(regex), not include))
    return rules


def _excluded(relative: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern, excludes in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return excluded


def context_files(context: Path) -> list[str]:
    """Relative paths of the files a `docker build` of `context` would send, sorted."""
    rules = _ignore_rules(context)
    files = []
    for root, _, names in os.walk(context):
        for name in names:
            relative = (Path(root) / name).relative_to(context).as_posix()
            if relative in ("Dockerfile", ".dockerignore") or not _excluded(relative, rules):
                files.append(relative)
    return sorted(files)


def context_hash(context: Path) -> str:
    """SHA-256 over each sent file's path and bytes (LF line endings, as `context_archive`
    sends them): the image's content address, the same from a CRLF checkout."""
    digest = hashlib.sha256()
    for relative in context_files(context):
        digest.update(relative.encode() + b"\0")
        digest.update(read_as_sent(context / relative) + b"\0")
    return digest.hexdigest()


def context_archive(context: Path) -> bytes:
    """The context as the gzipped tar an ACR build run takes: the files and bytes the hash
    covers, so the tag names exactly what the registry builds."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for relative in context_files(context):
            data = read_as_sent(context / relative)
            member = archive.gettarinfo(context / relative, arcname=relative)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class ImageSource:
    """One image to provide: a folder to build, or a reference given in config."""

    repository: str
    context: Path | None
    reference: str | None = None
    build_args: BuildArgs = ()

    @property
    def tag(self) -> str:
        """The content hash, then each build argument's value: the variants of one folder get
        tags (and so server environment versions and deployments) of their own."""
        if self.context is None:
            raise ValueError("a prebuilt image has no content tag")
        suffix = "".join(f"-{value}" for _, value in self.build_args)
        return context_hash(self.context)[:TAG_LENGTH] + suffix

    @property
    def identity(self) -> str:
        """What names this image's content at plan time: the given reference, or the tag."""
        return self.reference if self.reference is not None else self.tag


def server_build_args(instance_type: str) -> BuildArgs:
    """torch's CUDA build for an NVIDIA serving size (the SKU list's GPU rows, serving_gpus.py);
    none on a CPU size, whose image is the Dockerfile's default (cpu) with the tag it always had."""
    return ((TORCH_VARIANT_ARG, "cuda"),) if serving_gpu(instance_type) is not None else ()


def image_sources(config: StackConfig) -> dict[str, ImageSource]:
    """The images the enabled stages need, checked before any resource exists."""
    wanted = {
        "trainer": (Stage.TRAIN, TRAINER_CONTEXT, config.trainer_image, ()),
        "server": (
            Stage.SERVE,
            SERVER_CONTEXT,
            config.server_image,
            server_build_args(config.serving_instance_type),
        ),
    }
    sources, problems = {}, []
    for role, (stage, context, reference, build_args) in wanted.items():
        if stage not in config.stages:
            continue
        if config.image_build is ImageBuild.PREBUILT:
            sources[role] = ImageSource(f"phi3-{role}", None, reference)
        elif not (context / "Dockerfile").is_file():
            problems.append(
                f"{context / 'Dockerfile'} not found: the {role} image cannot be built "
                f"(imageBuild is {config.image_build.value!r}); add it, or set imageBuild to "
                f"'prebuilt' with phi3-foundry:{role}Image"
            )
        else:
            sources[role] = ImageSource(f"phi3-{role}", context, build_args=build_args)
    if problems:
        raise ImageContextError("\n".join(problems))
    return sources
