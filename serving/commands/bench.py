"""`driftgate bench` (what `make bench` runs): the speed figures, measured in one run, as ratios.

- gateway vs direct AsyncLLM, concurrency 1 and 16 (requests/s, tokens/s, ratio)
- primary latency p50/p99 and throughput with mirroring off vs on (one shadow, rate 1.0), drops
- compression wall time per demo recipe (from the variants' manifests; missing ones are built)

The harnesses live in the `bench` package (`bench.serving`) and `compress.bench`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from serving.commands.model_pull import pull


async def _serving(model: str, parts: set[str]) -> list[str]:
    from bench.serving import gateway_vs_direct, mirroring_off_vs_on

    lines: list[str] = []
    if "gateway" in parts:
        lines += await gateway_vs_direct(model)
    if "mirror" in parts:
        lines += await mirroring_off_vs_on(model)
    return lines


def run_bench(only: Iterable[str]) -> int:
    model = str(pull())
    parts = set(only)
    report = []
    if "compress" in parts:
        from compress.bench import compress_report, format_report

        report += ["compression (wall time from each variant's manifest):", format_report(compress_report())]
    report += asyncio.run(_serving(model, parts))
    print("\n==== driftgate bench ====")
    print("\n".join(report))
    return 0
