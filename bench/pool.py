"""The mirror suite's paired ratios pooled over several bench runs.

`python -m bench.pool RUN.json [RUN.json ...]` prints a Markdown table. Each pair stays within its own
run, repeat and concurrency: the two cells ran minutes apart at most, in the same rotation. Pooling
only adds pairs, so a ratio rests on more repeats than one run gives. Pure apart from reading the files.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.load import Cell, paired_values

PAIRS = (
    ("mirroring-on", "mirroring-off"),
    ("mirroring-unscored", "mirroring-off"),
    ("neighbour-asyncllm", "mirroring-off"),
    ("neighbour-twin", "mirroring-off"),
    ("mirroring-on", "neighbour-asyncllm"),
    ("mirroring-unscored", "neighbour-asyncllm"),
    ("mirroring-on", "mirroring-unscored"),
)
"""(system, baseline): mirroring's whole cost, unscored, a neighbour's decode, mirroring beyond it,
and what scoring every copy teacher-forced costs over comparing text only."""
FIGURES = (("tokens_per_s", "tok/s"), ("ttft_p50_s", "TTFT p50"))


def pooled_cells(results: Sequence[dict[str, Any]]) -> list[Cell]:
    """Every run's mirror cells, each run's repeats numbered apart (run k's repeat r is k*1000 + r)."""
    return [
        replace(Cell(**c), repeat=k * 1000 + int(c["repeat"]))
        for k, result in enumerate(results)
        for c in result["mirror"]["cells"]
    ]


def quartiles(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    """(min, lower quartile, median, upper quartile, max) of at least one value (pure)."""
    xs = sorted(values)
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return xs[0], q1, q2, q3, xs[-1]


def pooled_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    cells = pooled_cells(results)
    lines = [
        "| ratio (paired within a run and repeat) | figure | c | median | middle half | range | pairs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, baseline in PAIRS:
        for figure, label in FIGURES:
            for c, pairs in sorted(paired_values(cells, figure, system, baseline).items()):
                ratios = [r for r in (v / b for v, b in pairs if b) if r == r]  # no NaN
                if not ratios:
                    continue
                low, q1, med, q3, high = quartiles(ratios)
                lines.append(
                    f"| {system} / {baseline} | {label} | {c} | {med:.3f} | {q1:.3f}–{q3:.3f} "
                    f"| {low:.3f}–{high:.3f} | {len(ratios)} |"
                )
    return lines


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m bench.pool RUN.json [RUN.json ...]")
    print("\n".join(pooled_lines([json.loads(Path(p).read_text()) for p in sys.argv[1:]])))
