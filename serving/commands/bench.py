"""`driftgate bench` (what `make bench` runs): speed figures measured in one run, as ratios.

Writes `bench.json`, `bench.md` and PNG plots into `--out` (default: a new directory under
~/.cache/driftgate/reports). The suites live in the `bench` package (see `bench.run`); compression
times come from the variants' manifests (`compress.bench`; missing variants are built).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

from serving.home import driftgate_home


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from bench.run import SUITES

    bench = sub.add_parser("bench", help="speed figures measured in one run (what `make bench` runs)")
    bench.add_argument("--suites", nargs="*", default=list(SUITES), choices=SUITES, help="suites to run")
    bench.add_argument(
        "--concurrency", type=int, nargs="*", default=[1, 8, 16, 32], help="closed-loop concurrencies"
    )
    bench.add_argument("--repeats", type=int, default=3, help="repeats of every cell (>= 3 for a spread)")
    bench.add_argument("--max-tokens", type=int, default=32, help="tokens per answer")
    bench.add_argument("--out", help="report directory (default: ~/.cache/driftgate/reports/bench-<time>)")
    bench.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from bench.run import run_suites
    from serving.commands.model_pull import pull

    model = str(pull())
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else driftgate_home() / "reports" / f"bench-{stamp}"
    result = asyncio.run(
        run_suites(model, out, args.suites, sorted(set(args.concurrency)), args.repeats, args.max_tokens)
    )
    print((out / "bench.md").read_text())
    print(f"written: {out}/bench.json, bench.md, *.png")
    return 1 if result["errors"] else 0
