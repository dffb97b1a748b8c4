"""`driftgate probe`: the offline knowledge-probe command (see `serving.probes.batch` for the runner).

Exit codes: 0 report written, 1 a run problem (unreachable gateway, engine failure, unwritable
output), 2 a bad probe file; config errors (a missing checkpoint among them, checked for every
variant before any engine starts) are raised to `driftgate`'s main, which exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from pathlib import Path

from serving.config import load_config
from serving.engines.factory import check_checkpoints
from serving.gate.judge import judge_report
from serving.gate.verdict import format_table as verdict_table
from serving.probes.batch import ProbeRunError, default_report_dir, run_config, run_gateway, write_outputs
from serving.probes.facts import ProbeFileError, load_probe_set, stratified
from serving.probes.report import format_table


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    probe = sub.add_parser("probe", help="run knowledge probes on every variant of a config")
    probe.add_argument("--config", required=True, help="YAML config file")
    probe.add_argument("--probes", required=True, help="probe JSONL file or builtin:NAME")
    probe.add_argument("--out", help="report directory (default: $DRIFTGATE_HOME/reports/<timestamp>)")
    probe.add_argument("--target", help="HOST:PORT of a running gateway (default: in-process engines)")
    probe.add_argument("--k", type=int, default=5, help="k of P@k")
    probe.add_argument("--limit", type=int, default=0, help="use only the first N facts (0 = all)")
    probe.set_defaults(func=run_probe_command)


def _stderr(msg: str) -> None:
    print(f"driftgate probe: {msg}", file=sys.stderr, flush=True)


def run_probe_command(args: argparse.Namespace) -> int:
    """`driftgate probe` (args: config, probes, out, target, k, limit); ConfigError is the caller's."""
    try:
        if args.k < 1 or args.limit < 0:
            raise ProbeRunError("--k must be >= 1 and --limit >= 0")
        config = load_config(args.config)
        if not args.target:
            check_checkpoints(config.variants)
        pool = load_probe_set(args.probes)
        facts = stratified(pool, args.limit)
        out_dir = Path(args.out).expanduser() if args.out else default_report_dir()
        if args.target:
            run = asyncio.run(run_gateway(args.target, facts))
        else:
            run = asyncio.run(run_config(config, facts, k=args.k, pool=pool, log=_stderr))
            gc.collect()  # collect the engines now: vLLM's AsyncLLM.__del__ fails at interpreter exit
        paths = write_outputs(run, facts, out_dir)
    except ProbeFileError as exc:
        _stderr(str(exc))
        return 2
    except ProbeRunError as exc:
        _stderr(str(exc))
        return 1
    except OSError as exc:
        _stderr(f"cannot write the report: {exc}")
        return 1
    report = json.loads(paths[0].read_text())
    print(format_table(report))
    print("\npromotion verdicts (the probe check, judged once; `driftgate gate --report` exits on them):")
    print(verdict_table(judge_report(report, config.gate)))
    if args.target:
        print("P@k not measured through --target (the gateway has no scoring RPC): p_at_k is null.")
    for name, cost in run.costs().items():
        print(
            f"{name}: {cost['tokens_per_s']:.1f} tokens/s"
            + (f", {cost['bytes'] / 2**20:.1f} MiB" if "bytes" in cost else "")
        )
    print(f"wrote {', '.join(p.name for p in paths)} to {out_dir}")
    return 0
