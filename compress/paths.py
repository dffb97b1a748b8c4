"""Paths of the compress stage; ``$DRIFTGATE_HOME`` and the default directories come from
``serving.home`` (one definition for serving and compress)."""

from __future__ import annotations

import os
from pathlib import Path

from serving.home import variants_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES_DIR = PACKAGE_DIR / "recipes"
CALIBRATION_FILE = PACKAGE_DIR / "data" / "calibration.txt"
MANIFEST_NAME = "driftgate-manifest.json"


def variant_dir(recipe_name: str, parent: Path | None = None) -> Path:
    """The default output directory of one recipe: ``<variants>/<recipe>/``."""
    return (parent if parent is not None else variants_dir()) / recipe_name


def compress_python() -> Path:
    """The interpreter of the compress venv: ``$DRIFTGATE_COMPRESS_PYTHON`` or ``<repo>/.venv-compress``."""
    env = os.environ.get("DRIFTGATE_COMPRESS_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-compress" / "bin" / "python"
