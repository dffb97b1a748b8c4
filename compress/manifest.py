"""``driftgate-manifest.json``: what a compressed variant is, how it was made and what it measures."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.paths import MANIFEST_NAME

MANIFEST_FORMAT = 1


@dataclass
class Manifest:
    """One compressed variant. Every field is plain JSON data.

    recipe: ``{"name", "method", "params"}`` (``Recipe.to_dict()``); source: path, sha256 and sizes of
    the dense checkpoint; calibration: path, sha256 and sample count of the calibration text (None for
    data-free methods); versions: library versions; resolved: choices made at run time (group size,
    compressed modules); timing: seconds (``wall_s`` is the whole worker run); size: bytes on disk and
    ratios; bits_per_weight; storage: on-disk format; sparsity: measured exact-zero fractions (pruning
    recipes); checks: acceptance checks ``{name: {"passed", "value", "limit"}}``; notes: human notes.
    """

    recipe: dict[str, Any]
    source: dict[str, Any]
    versions: dict[str, str]
    timing: dict[str, float]
    size: dict[str, Any]
    bits_per_weight: dict[str, float]
    storage: dict[str, Any]
    resolved: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    sparsity: dict[str, Any] | None = None
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    description: str = ""
    created_at: str = ""
    format: int = MANIFEST_FORMAT

    @property
    def name(self) -> str:
        return str(self.recipe["name"])

    @property
    def wall_s(self) -> float:
        return float(self.timing["wall_s"])

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check.get("passed")]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.from_dict(json.loads((Path(directory) / MANIFEST_NAME).read_text()))

    def matches(self, recipe: dict[str, Any], source_sha256: str | None = None) -> bool:
        """True when this variant was made by ``recipe`` (and from the source with that hash, if given)."""
        if self.format != MANIFEST_FORMAT or self.recipe != recipe:
            return False
        return source_sha256 is None or self.source.get("sha256") == source_sha256


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of a variant directory, or None when it has none (or an unreadable one)."""
    try:
        return Manifest.read(directory)
    except (OSError, ValueError, TypeError, KeyError):
        return None
