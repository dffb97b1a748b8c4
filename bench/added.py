"""The gateway's own account of the latency it adds: `driftgate_gateway_added_seconds` (its span
minus the engine's, `serving.span`), scraped from its /metrics around each bench cell.

Client timestamps cannot resolve a millisecond on this box (two systems' end-to-end medians swing
by ±100 ms between repeats); the gateway's histogram times both spans on one clock in one process.
The bounds 1 ms and 5 ms are bucket edges, so "share ≤ 1 ms" and "share ≤ 5 ms" are exact; the
p50 and p99 are interpolated within a bucket, as Prometheus' `histogram_quantile` does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.load import Cell

SERIES = "driftgate_gateway_added_seconds"
Key = tuple[str, str, str]  # variant, door, phase
Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), ascending, ending at +Inf


def parse(text: str) -> dict[Key, Buckets]:
    """The histogram's cumulative buckets per (variant, door, phase) from a /metrics body."""
    out: dict[Key, Buckets] = {}
    for family in text_string_to_metric_families(text):
        if family.name != SERIES:
            continue
        for s in family.samples:
            if s.name == f"{SERIES}_bucket":
                key = (s.labels["variant"], s.labels["door"], s.labels["phase"])
                out.setdefault(key, []).append((float(s.labels["le"]), float(s.value)))
    return {k: sorted(v) for k, v in out.items()}


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[Key, Buckets]:
    async with session.get(url) as resp:
        resp.raise_for_status()
        return parse(await resp.text())


def delta(after: Buckets, before: Buckets | None) -> Buckets:
    """The observations between two scrapes of one histogram."""
    if not before:
        return list(after)
    return [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]


def quantile(q: float, buckets: Buckets) -> float:
    """`histogram_quantile`: linear within the bucket holding rank q·n (NaN when empty; the last
    finite bound when the rank falls in +Inf)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def share_at_most(bound: float, buckets: Buckets) -> float:
    """Share of observations ≤ `bound` (a bucket edge)."""
    total = buckets[-1][1] if buckets else 0.0
    at = next((count for le, count in buckets if math.isclose(le, bound)), None)
    if total <= 0 or at is None:
        return math.nan
    return at / total


def summary(buckets: Buckets) -> dict[str, float]:
    return {
        "count": buckets[-1][1] if buckets else 0.0,
        "p50_s": quantile(0.5, buckets),
        "p99_s": quantile(0.99, buckets),
        "share_le_1ms": share_at_most(0.001, buckets),
        "share_le_5ms": share_at_most(0.005, buckets),
    }


def cell_record(
    system: str,
    concurrency: int,
    repeat: int,
    labels: tuple[str, str],
    after: Mapping[Key, Buckets],
    before: Mapping[Key, Buckets],
) -> dict[str, Any]:
    """One bench cell's added latency, first event and last, for the gateway `labels` (variant,
    door) that the cell's system loads."""
    record: dict[str, Any] = {"system": system, "concurrency": concurrency, "repeat": repeat}
    for phase in ("first", "total"):
        key = (*labels, phase)
        record[phase] = summary(delta(after.get(key, []), before.get(key)))
    return record


def medians(records: Sequence[dict[str, Any]], phase: str, field: str) -> dict[tuple[str, int], float]:
    """Median over repeats of one figure, per (system, concurrency)."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in records:
        value = r[phase][field]
        if not math.isnan(value):
            groups.setdefault((r["system"], r["concurrency"]), []).append(value)
    return {k: statistics.median(v) for k, v in groups.items()}


class Recorder:
    """`measure_cells`' `after` hook: scrapes the /metrics of the gateway that the cell's system
    loads and keeps the cell's added latency (the difference with that gateway's previous scrape:
    only this system sent requests with these labels in between)."""

    def __init__(self, session: aiohttp.ClientSession, systems: Mapping[str, tuple[str, tuple[str, str]]]):
        self._session = session
        self._systems = systems  # system -> (metrics URL, (variant, door))
        self._last: dict[str, dict[Key, Buckets]] = {}
        self.records: list[dict[str, Any]] = []

    async def __call__(self, cell: Cell | None) -> None:
        if cell is None:
            for url in {url for url, _ in self._systems.values()}:
                self._last[url] = await scrape(self._session, url)
            return
        if cell.system not in self._systems:
            return
        url, labels = self._systems[cell.system]
        now = await scrape(self._session, url)
        record = cell_record(cell.system, cell.concurrency, cell.repeat, labels, now, self._last.get(url, {}))
        self.records.append(record)
        self._last[url] = now
