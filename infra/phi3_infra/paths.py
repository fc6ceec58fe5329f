"""Where the program finds the folders it builds and the files it uploads.

Config paths (training data) are relative to the project root, the folder of Pulumi.yaml, whatever
the working directory the engine starts the program in.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRAINER_CONTEXT = PROJECT_ROOT / "training_image"
SERVER_CONTEXT = PROJECT_ROOT / "serving_image"


def project_path(configured: str) -> Path:
    """An absolute path as given, else relative to the project root."""
    path = Path(configured).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path
