"""Things serving and compress share: where driftgate keeps its files, offline mode, checkpoint hashes.

Standard library only: the compress venv (llm-compressor's pins) imports it too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import MutableMapping
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Nothing downloads weights or data sets from a model hub at run time; tokenizers stay single-threaded."""


def set_offline(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Puts `OFFLINE_ENV` into `environ` (default: this process's), keeping values already set."""
    env = os.environ if environ is None else environ
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)
    return env


def driftgate_home() -> Path:
    """Where models, variants and reports live: ``$DRIFTGATE_HOME`` or ``~/.cache/driftgate``."""
    return Path(os.environ.get("DRIFTGATE_HOME") or "~/.cache/driftgate").expanduser()


def default_model_dir() -> Path:
    """The dense default model written by ``driftgate model pull``."""
    return driftgate_home() / "models" / DEFAULT_MODEL_NAME


def variants_dir() -> Path:
    """The default parent directory of compressed variants (one directory per recipe)."""
    return driftgate_home() / "variants"


def reports_dir() -> Path:
    """The default parent directory of probe, demo and bench reports."""
    return driftgate_home() / "reports"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(model_dir: Path) -> str:
    """One sha256 over a checkpoint's safetensors files (file names and contents, sorted by name)."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()
