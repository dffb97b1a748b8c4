"""`driftgate bench` (what `make bench` runs): speed figures measured in one run, as ratios.

Writes `bench.json`, `bench.md` and PNG plots into `--out` (default: a new directory under
~/.cache/driftgate/reports). The suites live in the `bench` package (see `bench.run`); compression
times come from the variants' manifests (`compress.bench`; missing variants are built).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from serving.home import reports_dir, variants_dir


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from bench.run import SUITES

    bench = sub.add_parser("bench", help="speed figures measured in one run (what `make bench` runs)")
    bench.add_argument("--suites", nargs="*", default=list(SUITES), choices=SUITES, help="suites to run")
    bench.add_argument(
        "--concurrency", type=int, nargs="*", default=[1, 8, 16, 32], help="closed-loop concurrencies"
    )
    bench.add_argument("--repeats", type=int, default=3, help="repeats of every cell (>= 3 for a spread)")
    bench.add_argument("--max-tokens", type=int, default=32, help="tokens per answer")
    bench.add_argument(
        "--model",
        help="what the roofline, doors, mirror, preload, dtype, nice and restart suites serve: a checkpoint "
        "directory or a built variant's name (default: the pulled dense model)",
    )
    bench.add_argument("--out", help="report directory (default: ~/.cache/driftgate/reports/bench-<time>)")
    bench.set_defaults(func=run_bench)


def bench_model(name: str) -> Path:
    """A checkpoint directory, else the built variant of that name (FileNotFoundError: neither)."""
    for candidate in (Path(name).expanduser(), variants_dir() / name):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"--model {name}: neither a checkpoint directory (with config.json) nor a built variant in "
        f"{variants_dir()}"
    )


def run_bench(args: argparse.Namespace) -> int:
    from bench.run import run_suites
    from serving.commands.model_pull import pull

    try:
        model = str(bench_model(args.model) if args.model else pull())
    except FileNotFoundError as exc:
        print(f"driftgate bench: {exc}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else reports_dir() / f"bench-{stamp}"
    result = asyncio.run(
        run_suites(model, out, args.suites, sorted(set(args.concurrency)), args.repeats, args.max_tokens)
    )
    print((out / "bench.md").read_text())
    print(f"written: {out}/bench.json, bench.md, *.png")
    return 1 if result["errors"] else 0
