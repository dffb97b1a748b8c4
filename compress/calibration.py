"""The offline calibration set shipped in ``compress/data/calibration.txt`` (one sample per line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.paths import CALIBRATION_FILE
from serving.home import sha256_file


def calibration_texts(path: Path = CALIBRATION_FILE) -> list[str]:
    """The non-empty lines of the calibration file."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def calibration_info(num_samples: int, max_seq_length: int, path: Path = CALIBRATION_FILE) -> dict[str, Any]:
    """What the manifest records about the calibration data actually used."""
    available = len(calibration_texts(path))
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "lines": available,
        "num_samples": min(num_samples, available),
        "max_seq_length": max_seq_length,
    }


def tokenized_calibration(
    tokenizer: Any, num_samples: int, max_seq_length: int, path: Path = CALIBRATION_FILE
) -> Any:
    """The first ``num_samples`` lines, tokenized, as a ``datasets.Dataset`` (worker side)."""
    from datasets import Dataset

    texts = calibration_texts(path)[:num_samples]
    encoded = tokenizer(texts, truncation=True, max_length=max_seq_length)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
