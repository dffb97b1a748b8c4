"""`make bench`: every speed figure the issues ask for, measured in one run, printed as ratios.

- gateway vs direct AsyncLLM, concurrency 1 and 16 (requests/s, tokens/s, ratio)
- primary latency p50/p99 and throughput with mirroring off vs on (one shadow, rate 1.0), drops
- compression wall time per demo recipe (from the variants' manifests; missing ones are built)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from serving.model_pull import pull


async def _serving(model: str, parts: set[str]) -> list[str]:
    from bench.serving import gateway_vs_direct, mirroring_off_vs_on

    lines: list[str] = []
    if "gateway" in parts:
        lines += await gateway_vs_direct(model)
    if "mirror" in parts:
        lines += await mirroring_off_vs_on(model)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", nargs="*", default=["gateway", "mirror", "compress"])
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = str(pull())
    parts = set(args.only)
    report = []
    if "compress" in parts:
        from compress.bench import compress_report, format_report

        report += ["compression (wall time from each variant's manifest):", format_report(compress_report())]
    report += asyncio.run(_serving(model, parts))
    print("\n==== driftgate bench ====")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
