"""Closed-loop load and its statistics (pure: no engines, no network).

A cell is one system at one concurrency: `concurrency` workers each send a request, wait for its
whole streamed answer, and send the next, until `total` requests are done. Every request is timed
from send to first token (TTFT) and to its last token (latency).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROMPTS = (
    "The capital of France is",
    "Write a short poem about the sea.",
    "Explain what a CPU cache is.",
    "List three uses of copper.",
    "The largest planet in the solar system is",
    "Describe a sunrise in one paragraph.",
    "What is the boiling point of water?",
    "Give two reasons to learn Python.",
)
ANSWER_TOKENS = 32
"""Greedy tokens per prompt when engines' answers to PROMPTS are compared (the dtype suite)."""


@dataclass(frozen=True)
class Sample:
    """One request as its client saw it."""

    latency_s: float
    ttft_s: float
    tokens: int
    ok: bool = True


@dataclass(frozen=True)
class SuiteRun:
    """What every engine suite is given by `bench.run`."""

    model: str
    """The dense checkpoint the suite serves."""
    workdir: Path
    """Where its systems' logs and configs go."""
    concurrencies: Sequence[int]
    """The closed-loop concurrencies measured."""
    repeats: int
    """Interleaved repeats of the whole grid."""
    max_tokens: int
    """Tokens every request asks for (`ignore_eos`)."""
    log: Callable[[str], None]
    """Progress lines."""


Call = Callable[[str], Awaitable[Sample]]
"""Sends one prompt, streams the whole answer, returns its timing (never raises: ok=False)."""
Runner = Callable[[int, int], Awaitable[tuple[list[Sample], float]]]
"""Runs `total` requests, `concurrency` at a time: (samples, seconds)."""


async def closed_loop(call: Call, concurrency: int, total: int) -> tuple[list[Sample], float]:
    """Runs `total` calls with `concurrency` workers; returns the samples and the wall seconds."""
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(total)]
    samples: list[Sample] = []

    async def worker() -> None:
        while queue:
            samples.append(await call(queue.pop()))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - start


async def closed_loop_until(call: Call, concurrency: int, stop: asyncio.Event) -> tuple[list[Sample], float]:
    """Runs calls with `concurrency` workers until `stop` is set (each worker then finishes the call
    it is in); returns the samples and the wall seconds. Load beside a measured cell."""
    samples: list[Sample] = []

    async def worker(first: int) -> None:
        i = first
        while not stop.is_set():
            samples.append(await call(PROMPTS[i % len(PROMPTS)]))
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return samples, time.perf_counter() - start


def pct(xs: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of `xs`; NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s) - 1e-9) - 1))]


@dataclass(frozen=True)
class Cell:
    """One measured run of one system at one concurrency."""

    system: str
    concurrency: int
    repeat: int
    requests: int
    errors: int
    seconds: float
    tokens_per_s: float
    requests_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_token_s(samples: Sequence[Sample]) -> list[float]:
    """Each successful answer's time per output token after the first (TPOT), in seconds."""
    return [(s.latency_s - s.ttft_s) / (s.tokens - 1) for s in samples if s.ok and s.tokens > 1]


def summarize(system: str, concurrency: int, repeat: int, samples: Sequence[Sample], seconds: float) -> Cell:
    ok = [s for s in samples if s.ok]
    lat = [s.latency_s for s in ok]
    ttft = [s.ttft_s for s in ok]
    tpot = per_token_s(ok)
    tokens = sum(s.tokens for s in ok)
    return Cell(
        system=system,
        concurrency=concurrency,
        repeat=repeat,
        requests=len(samples),
        errors=len(samples) - len(ok),
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        requests_per_s=len(ok) / seconds if seconds > 0 else 0.0,
        latency_p50_s=pct(lat, 0.5),
        latency_p99_s=pct(lat, 0.99),
        ttft_p50_s=pct(ttft, 0.5),
        ttft_p99_s=pct(ttft, 0.99),
        tpot_p50_s=pct(tpot, 0.5),
    )


@dataclass(frozen=True)
class Spread:
    """The median of a figure over repeats, with its smallest and largest value."""

    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def spread(values: Sequence[float]) -> Spread:
    xs = [v for v in values if v == v]  # drop NaN
    if not xs:
        return Spread(float("nan"), float("nan"), float("nan"), 0)
    return Spread(statistics.median(xs), min(xs), max(xs), len(xs))


def by_cell(cells: Sequence[Cell], figure: str) -> dict[tuple[str, int], Spread]:
    """`figure` (a Cell field) over the repeats of each (system, concurrency)."""
    groups: dict[tuple[str, int], list[float]] = {}
    for c in cells:
        groups.setdefault((c.system, c.concurrency), []).append(float(getattr(c, figure)))
    return {k: spread(v) for k, v in groups.items()}


def paired_values(
    cells: Sequence[Cell], figure: str, system: str, baseline: str
) -> dict[int, list[tuple[float, float]]]:
    """(system's, baseline's) `figure` of the same repeat, per concurrency (the two ran back to back)."""
    index = {(c.system, c.concurrency, c.repeat): float(getattr(c, figure)) for c in cells}
    out: dict[int, list[tuple[float, float]]] = {}
    for (s, conc, rep), value in sorted(index.items()):
        if s == system and (baseline, conc, rep) in index:
            out.setdefault(conc, []).append((value, index[(baseline, conc, rep)]))
    return out


def paired_ratios(cells: Sequence[Cell], figure: str, system: str, baseline: str) -> dict[int, Spread]:
    """`figure` of `system` over `baseline`, pairing the two cells of the same repeat, per
    concurrency: a ratio from one run, not from two runs minutes apart (a zero baseline is skipped)."""
    pairs = paired_values(cells, figure, system, baseline).items()
    ratios = {c: [v / b for v, b in ps if b] for c, ps in pairs}
    return {c: spread(r) for c, r in ratios.items() if r}


def paired_differences(cells: Sequence[Cell], figure: str, system: str, baseline: str) -> dict[int, Spread]:
    """`figure` of `system` minus `baseline`, paired by repeat (e.g. added latency, seconds)."""
    return {
        c: spread([v - b for v, b in ps]) for c, ps in paired_values(cells, figure, system, baseline).items()
    }
