"""`driftgate gate`: the promotion verdict as an exit code a CI/CD pipeline can block on.

    driftgate gate --target HOST:PORT [--variant V]     a running gateway's verdicts (GetVerdict)
    driftgate gate --report report.json [--config X]    a finished `driftgate probe` report

Prints a table (each check: figure, interval, threshold, samples) and exits 0 when every variant
shown is PASS, 1 when any is FAIL, 3 when none failed but some are UNDECIDED (2: usage/config).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from serving.config import load_config
from serving.gate.judge import judge_report
from serving.gate.sequential import Interval
from serving.gate.verdict import Check, GateConfig, VariantVerdict, exit_code, format_table


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gate = sub.add_parser("gate", help="promotion verdicts; exit 0 PASS, 1 FAIL, 3 UNDECIDED")
    where = gate.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", help="HOST:PORT of a running gateway")
    where.add_argument("--report", help="report.json of `driftgate probe` (the probe check only)")
    gate.add_argument("--variant", default="", help="one variant (default: every variant but the primary)")
    gate.add_argument("--config", help="YAML config whose `gate` section judges --report (default: defaults)")
    gate.add_argument("--json", action="store_true", help="print the verdicts as JSON instead of a table")
    gate.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the gateway")
    gate.set_defaults(func=run_gate_command)


def from_proto(v: Any) -> VariantVerdict:
    """A `pb.VariantVerdict` back as the domain's (the servicer's mapping, inverted)."""
    from serving.grpc.servicer import VERDICTS

    verdict_of = {code: verdict for verdict, code in VERDICTS.items()}
    checks = tuple(
        Check(c.name, c.figure, Interval(c.lower, c.upper), c.threshold, c.direction, c.samples,
              verdict_of[c.verdict], c.note)
        for c in v.checks
    )  # fmt: skip
    return VariantVerdict(v.variant, verdict_of[v.verdict], checks, v.note)


async def _ask(target: str, variant: str, timeout: float) -> list[VariantVerdict]:
    import grpc

    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        reply = await pb_grpc.GatewayStub(channel).GetVerdict(
            pb.GetVerdictRequest(variant=variant), timeout=timeout
        )
    return [from_proto(v) for v in reply.verdicts]


def _from_report(args: argparse.Namespace) -> list[VariantVerdict]:
    cfg = load_config(args.config).gate if args.config else GateConfig()
    report = json.loads(Path(args.report).read_text())
    verdicts = judge_report(report, cfg)
    return [v for v in verdicts if not args.variant or v.variant == args.variant]


def run_gate_command(args: argparse.Namespace) -> int:
    try:
        if args.target:
            verdicts = asyncio.run(_ask(args.target, args.variant, args.timeout))
        else:
            verdicts = _from_report(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"driftgate gate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # grpc.aio.AioRpcError, without importing grpc at module level
        details = exc.details() if hasattr(exc, "details") else str(exc)
        print(f"driftgate gate: cannot get verdicts from {args.target}: {details}", file=sys.stderr)
        return 2
    if not verdicts:
        print("driftgate gate: no variant to judge", file=sys.stderr)
        return 2
    print(json.dumps([v.to_dict() for v in verdicts], indent=2) if args.json else format_table(verdicts))
    return exit_code(verdicts)
