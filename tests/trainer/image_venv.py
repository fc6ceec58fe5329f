"""A virtualenv holding exactly the trainer image's dependency set, cached by its inputs' hash.

The dev venv installs every deliverable's requirements together, so it cannot show that the
image's own pins resolve and work on their own. This venv is built only from
training_image/requirements.txt and constraints.txt plus torch, which the Dockerfile installs
from PyTorch's CUDA index (here the local CPU wheel of the same version, pinned like the Makefile
pins it). It lives in the gitignored build/ folder and is rebuilt only when those inputs change.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cached_venv import cached_venv

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = REPO_ROOT / "training_image"
INPUTS = (IMAGE / "requirements.txt", IMAGE / "constraints.txt")
# The image's torch version; never let pip resolve another one (it would pull CUDA wheels).
TORCH = "torch==2.13.0"


def image_python() -> Path:
    """The interpreter of the venv for today's image requirements, built on first use."""
    return cached_venv("trainer-image-venv", INPUTS, _install, salt=TORCH) / "bin" / "python"


def _install(venv: Path) -> None:
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    requirements, constraints = (str(path) for path in INPUTS)
    install = [*pip, "install", "--quiet", TORCH, "-r", requirements, "-c", constraints]
    result = subprocess.run(install, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"the trainer image's requirements do not install on their own:\n{result.stderr}"
        )
