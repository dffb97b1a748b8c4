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
from typing import Any

import psutil

from bench.clients import grpc_call
from bench.doors import requests_for
from bench.load import Cell, SuiteRun, closed_loop, summarize
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


async def _outcomes(gw: Gateway) -> dict[str, int]:
    summary = await gw.stub.GetDriftSummary(pb.GetDriftSummaryRequest(), timeout=10)
    twin = next(v for v in summary.variants if v.variant == "twin")
    return {
        "compared": twin.compared,
        "dropped": twin.dropped,
        "errors": twin.errors,
        "timeouts": twin.timeouts,
    }


async def _settled(gw: Gateway, expected: int, timeout_s: float = 300.0) -> dict[str, int]:
    """Waits until the shadow has an outcome for `expected` copies in all (every copy sent so far
    was compared, dropped, failed or timed out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcomes = await _outcomes(gw)
        if sum(outcomes.values()) >= expected:
            return outcomes
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the shadow did not settle ({expected} copies expected)")


async def _idle_rates(proc: psutil.Process, seconds: float = 5.0) -> tuple[float, float]:
    """CPU cores the gateway process and its engines use with no load (health checks, pollers)."""
    before = _cpu(proc)
    await asyncio.sleep(seconds)
    after = _cpu(proc)
    return (after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds


def _cpu_row(
    system: str, c: int, rep: int, n: int, used: tuple[float, float], window: float, idle: tuple[float, float]
) -> dict[str, Any]:
    """CPU of one cell: cores used over its window (load and the shadow's tail), and CPU seconds per
    request net of what the same window costs with no load."""
    return {
        "system": system,
        "concurrency": c,
        "repeat": rep,
        "window_s": window,
        "gateway_cores": used[0] / window,
        "engines_cores": used[1] / window,
        "gateway_cpu_s_per_request": (used[0] - idle[0] * window) / n,
        "engines_cpu_s_per_request": (used[1] - idle[1] * window) / n,
    }


async def run_mirroring(run: SuiteRun) -> dict[str, Any]:
    """Starts the gateway with a twin shadow, measures the grid with mirroring off and on."""
    concurrencies, max_tokens, log = run.concurrencies, run.max_tokens, run.log
    cells: list[Cell] = []
    cpu: list[dict[str, Any]] = []
    async with gateway(_variants(run.model), run.workdir, "gateway-mirror") as gw:
        started = await gw.wait_ready()
        log(f"  started: gateway with primary + twin shadow {started:.0f} s")
        proc = psutil.Process(gw.process.pid)
        call = grpc_call(gw.stub, max_tokens)
        sent = 0
        for rate in (0.0, 1.0):  # warm-up, both ways
            await gw.set_sample_rate("twin", rate)
            await closed_loop(call, 4, 8)
            sent += 8 if rate else 0
            await _settled(gw, sent)
        idle = await _idle_rates(proc)
        for rep in range(run.repeats):
            for c in concurrencies:
                for rate in (0.0, 1.0) if (rep + c) % 2 == 0 else (1.0, 0.0):
                    await gw.set_sample_rate("twin", rate)
                    before, t0 = _cpu(proc), time.perf_counter()
                    samples, seconds = await closed_loop(call, c, requests_for(c))
                    sent += len(samples) if rate else 0
                    await _settled(gw, sent)
                    after, window = _cpu(proc), time.perf_counter() - t0
                    system = "mirroring-on" if rate else "mirroring-off"
                    cell = summarize(system, c, rep, samples, seconds)
                    cells.append(cell)
                    used = (after[0] - before[0], after[1] - before[1])
                    cpu.append(_cpu_row(system, c, rep, len(samples), used, window, idle))
                    log(
                        f"  r{rep} c={c:<2} {system:<14} {cell.tokens_per_s:7.1f} tok/s  "
                        f"ttft p50 {cell.ttft_p50_s * 1e3:6.1f} ms  e2e p50 {cell.latency_p50_s * 1e3:7.1f} ms  "
                        f"gateway {cpu[-1]['gateway_cores']:.3f} cores"
                    )
        outcomes = await _outcomes(gw)
    return {
        "start_s": started,
        "idle_cores": {"gateway": idle[0], "engines": idle[1]},
        "cells": [c.as_dict() for c in cells],
        "cpu": cpu,
        "shadow_outcomes": outcomes,
    }
