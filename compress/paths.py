"""Where driftgate keeps models and variants: ``$DRIFTGATE_HOME``, default ``~/.cache/driftgate``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES_DIR = PACKAGE_DIR / "recipes"
CALIBRATION_FILE = PACKAGE_DIR / "data" / "calibration.txt"
MANIFEST_NAME = "driftgate-manifest.json"


def driftgate_home() -> Path:
    """The root of driftgate's cache: ``$DRIFTGATE_HOME`` or ``~/.cache/driftgate``."""
    env = os.environ.get("DRIFTGATE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "driftgate"


def default_model_dir() -> Path:
    """The dense default model written by ``driftgate model pull``."""
    return driftgate_home() / "models" / DEFAULT_MODEL_NAME


def variants_dir() -> Path:
    """The default parent directory of compressed variants."""
    return driftgate_home() / "variants"


def variant_dir(recipe_name: str, parent: Path | None = None) -> Path:
    """The default output directory of one recipe: ``<variants>/<recipe>/``."""
    return (parent if parent is not None else variants_dir()) / recipe_name


def compress_python() -> Path:
    """The interpreter of the compress venv: ``$DRIFTGATE_COMPRESS_PYTHON`` or ``<repo>/.venv-compress``."""
    env = os.environ.get("DRIFTGATE_COMPRESS_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-compress" / "bin" / "python"
