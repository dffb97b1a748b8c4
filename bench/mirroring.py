"""What mirroring costs the primary: one gateway, the dense primary on core 0 and a dense twin
shadow on core 1 (as configs/demo.yaml binds them), the shadow's sample rate switched between 0
and 1 at run time (`SetTraffic`, the admin call a rollout controller uses), the two settings
interleaved and repeated.

Besides the primary's figures, each cell records the CPU seconds per request of the gateway
process itself (routing, gRPC, vLLM's output processing and detokenization for both engines, the
comparison) and of its engine-core children, which is where the remaining cost comes from when the
machine has no core left for the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.clients import grpc_call
from bench.doors import requests_for
from bench.load import Cell, closed_loop, summarize
from bench.systems import Gateway, engine_yaml, gateway
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb


def _variants(model: str) -> list[dict[str, Any]]:
    return [
        {"name": "dense", "model": model, "role": "primary", "engine": engine_yaml("0")},
        {
            "name": "twin",
            "model": model,
            "role": "shadow",
            "sample_rate": 1.0,
            "max_in_flight": 64,
            "timeout_s": 300,
            "engine": engine_yaml("1"),
        },
    ]


def _cpu(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds (user + system) of the process itself and of its descendants."""
    own = proc.cpu_times()
    kids = 0.0
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
            kids += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return own.user + own.system, kids


async def _settled(gw: Gateway, timeout_s: float = 300.0) -> dict[str, int]:
    """Waits until the shadow has finished every copy (its outcome counts stop moving)."""
    last: tuple[int, ...] = ()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        summary = await gw.stub.GetDriftSummary(pb.GetDriftSummaryRequest(), timeout=10)
        twin = next(v for v in summary.variants if v.variant == "twin")
        now = (twin.compared, twin.dropped, twin.errors, twin.timeouts)
        if now == last:
            return dict(zip(("compared", "dropped", "errors", "timeouts"), now, strict=True))
        last = now
        await asyncio.sleep(1.0)
    raise RuntimeError("the shadow did not settle")


async def run_mirroring(
    model: str,
    workdir: Path,
    concurrencies: Sequence[int],
    repeats: int,
    max_tokens: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    cells: list[Cell] = []
    cpu: list[dict[str, Any]] = []
    async with gateway(_variants(model), workdir, "gateway-mirror") as gw:
        started = await gw.wait_ready()
        log(f"  started: gateway with primary + twin shadow {started:.0f} s")
        proc = psutil.Process(gw.process.pid)
        call = grpc_call(gw.stub, max_tokens)
        for rate in (0.0, 1.0):  # warm-up, both ways
            await gw.set_sample_rate("twin", rate)
            await closed_loop(call, 4, 8)
            await _settled(gw)
        for rep in range(repeats):
            for c in concurrencies:
                for rate in (0.0, 1.0) if (rep + c) % 2 == 0 else (1.0, 0.0):
                    await gw.set_sample_rate("twin", rate)
                    before, t0 = _cpu(proc), time.perf_counter()
                    samples, seconds = await closed_loop(call, c, requests_for(c))
                    outcome = await _settled(gw)
                    after, wall = _cpu(proc), time.perf_counter() - t0
                    system = "mirroring-on" if rate else "mirroring-off"
                    cell = summarize(system, c, rep, samples, seconds)
                    cells.append(cell)
                    n = len(samples)
                    cpu.append(
                        {
                            "system": system,
                            "concurrency": c,
                            "repeat": rep,
                            "gateway_cpu_s_per_request": (after[0] - before[0]) / n,
                            "engines_cpu_s_per_request": (after[1] - before[1]) / n,
                            "wall_s_incl_shadow_tail": wall,
                            "shadow_outcomes_total": outcome,
                        }
                    )
                    log(
                        f"  r{rep} c={c:<2} {system:<14} {cell.tokens_per_s:7.1f} tok/s  "
                        f"ttft p50 {cell.ttft_p50_s * 1e3:6.1f} ms  e2e p50 {cell.latency_p50_s * 1e3:7.1f} ms  "
                        f"gateway cpu {cpu[-1]['gateway_cpu_s_per_request'] * 1e3:6.1f} ms/req"
                    )
    return {"start_s": started, "cells": [c.as_dict() for c in cells], "cpu": cpu}
