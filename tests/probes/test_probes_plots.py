"""Plots are written as real PNG files without touching pyplot's global state."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from serving.probes.facts import load_builtin
from serving.probes.plots import plot_accuracy_by_relation, plot_flips, plot_p1_vs_cost, write_plots
from serving.probes.scoring import VariantResult, build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> dict:
    facts = load_builtin("geo")
    n = len(facts)
    per_variant = {
        "qwen-fp16": VariantResult([i % 3 != 0 for i in range(n)], [i % 5 != 0 for i in range(n)]),
        "qwen-int8": VariantResult(
            [i % 3 != 0 and i % 17 != 0 for i in range(n)], [i % 4 != 0 for i in range(n)]
        ),
        "qwen-gguf-q4": VariantResult([i % 2 == 0 for i in range(n)], [i % 3 != 0 for i in range(n)]),
    }
    return build_report("qwen-fp16", per_variant, facts, k=5)


COSTS = {
    "qwen-fp16": {"bytes": 988_000_000, "tokens_per_s": 21.5},
    "qwen-int8": {"bytes": 520_000_000, "tokens_per_s": 30.1},
    "qwen-gguf-q4": {"bytes": 310_000_000, "tokens_per_s": 44.0},
}


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, (path, len(data))


def test_write_plots(report: dict, tmp_path: Path) -> None:
    paths = write_plots(report, tmp_path / "plots", costs=COSTS)
    assert [p.name for p in paths] == ["accuracy_by_relation.png", "flips.png", "p1_vs_cost.png"]
    for path in paths:
        assert_png(path)


def test_write_plots_without_costs(report: dict, tmp_path: Path) -> None:
    paths = write_plots(report, tmp_path)
    assert [p.name for p in paths] == ["accuracy_by_relation.png", "flips.png"]


def test_individual_plots_and_edge_cases(report: dict, tmp_path: Path) -> None:
    assert_png(plot_accuracy_by_relation(report, tmp_path / "a.png"))
    assert_png(plot_flips(report, tmp_path / "nested" / "f.png"))
    only_primary = {**report, "variants": {"qwen-fp16": report["variants"]["qwen-fp16"]}}
    assert plot_flips(only_primary, tmp_path / "f1.png").read_bytes()[:8] == PNG_MAGIC
    partial: dict[str, dict[str, float]] = {
        "qwen-int8": {"bytes": 1, "tokens_per_s": 2.0},
        "unknown": {"bytes": 5},
    }
    assert plot_p1_vs_cost(report, partial, tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    assert plot_p1_vs_cost(report, {}, tmp_path / "c0.png").read_bytes()[:8] == PNG_MAGIC


def test_plots_leave_pyplot_alone(report: dict, tmp_path: Path) -> None:
    had_pyplot = "matplotlib.pyplot" in sys.modules
    write_plots(report, tmp_path, costs=COSTS)
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
