"""What mirroring costs the primary: one gateway, the dense primary on core 0 and a dense twin
shadow on core 1 (as configs/demo.yaml binds them), the shadow's sample rate switched between 0
and 1 at run time (`SetTraffic`, the admin call a rollout controller uses), the settings
interleaved and repeated.

Three more systems break the cost down. Each keeps mirroring off and puts other work on core 1
for the whole of the primary's cell:

| system | on core 1, beside the primary |
| --- | --- |
| neighbour-read | a process that only reads memory (`bench.contention`, one thread) |
| neighbour-asyncllm | an AsyncLLM of the same model in its own process, under the same load |
| neighbour-twin | the twin itself, under the same load sent to it by name through the gateway |
| mirroring-on | the twin, sent a copy of every request, then scoring and comparing it |
| mirroring-unscored | the same copies compared on their text only (the twin's `score_rate` 0) |

So neighbour-asyncllm / off is what a second engine decoding on the other core costs with no
gateway involved, neighbour-twin adds the gateway's process handling its stream, mirroring-unscored
adds the copies' comparison and mirroring-on their teacher-forced scoring (the twin re-reads its
weights over each answer, the primary returns its top-k logprobs).

Besides the primary's figures, each cell records the CPU seconds per request of the gateway
process itself (routing, gRPC, vLLM's output processing and detokenization for both engines, the
comparison) and of its engine-core children.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.clients import DirectClient, grpc_call
from bench.contention import run_workers
from bench.doors import requests_for
from bench.load import Call, Cell, Sample, SuiteRun, closed_loop, closed_loop_until, summarize
from bench.report import MIRROR_SYSTEMS
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
            "gate": {"max_kl": None},  # mirroring-unscored sets its score_rate to 0
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


SYSTEMS = ("mirroring-off", *MIRROR_SYSTEMS)
"""The mirror suite's systems; the first is every ratio's baseline."""
MIRRORED = {"mirroring-on": 1.0, "mirroring-unscored": 0.0}
"""The systems that mirror every request to the twin, and the twin's score_rate in each."""
RAMP_S = 1.0
"""How long a neighbour's load runs before the primary's cell starts."""


@dataclass
class _Bench:
    """What every cell of the suite uses."""

    gw: Gateway
    direct: DirectClient
    call: Call
    twin: Call
    max_tokens: int
    estimate_s: dict[int, float] = field(default_factory=dict)
    """Seconds of a mirroring-off cell at each concurrency (a neighbour's time is bounded by it)."""
    neighbours: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Running:
    """A neighbour's load running on core 1."""

    task: asyncio.Task[Any]
    stop: Callable[[], None]
    """Ends the load (the AsyncLLM's runs its fixed time: `bench.direct` takes no stop)."""
    figures: Callable[[Any], dict[str, Any]]
    """What the task's result says the neighbour did."""


def _read_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"read_gb_s": float(records[0]["rate"]) / 1e9}


def _loop_figures(result: tuple[list[Sample], float]) -> dict[str, Any]:
    samples, seconds = result
    return {"tok_s": sum(x.tokens for x in samples) / seconds, "requests": len(samples)}


async def _running(task: asyncio.Task[Any], started: Callable[[], bool]) -> None:
    """Waits until `started()`; raises the task's error if it ends first."""
    while not started():
        if task.done():
            await task
            raise RuntimeError("the neighbour ended before its load started")
        await asyncio.sleep(0.05)


async def _start_neighbour(b: _Bench, system: str, c: int) -> _Running | None:
    """Starts `system`'s neighbour on core 1 and returns once it is loading its core. Its time is an
    upper bound (twice a cell's, plus start-up): the reader and the twin stop at the cell's end."""
    seconds = 2.0 * b.estimate_s.get(c, 30.0) + 5.0
    task: asyncio.Task[Any]
    ramp = time.monotonic() + RAMP_S
    started: Callable[[], bool] = lambda: time.monotonic() >= ramp  # noqa: E731
    if system == "neighbour-read":
        ready, halt = threading.Event(), threading.Event()
        task = asyncio.create_task(asyncio.to_thread(run_workers, "read", [1], seconds, ready, halt))
        running, started = _Running(task, halt.set, _read_figures), ready.is_set
    elif system == "neighbour-asyncllm":
        task = asyncio.create_task(b.direct.run_for(c, seconds, b.max_tokens))
        running = _Running(task, lambda: None, _loop_figures)
    elif system == "neighbour-twin":
        event = asyncio.Event()
        running = _Running(asyncio.create_task(closed_loop_until(b.twin, c, event)), event.set, _loop_figures)
    else:
        return None
    try:
        await _running(running.task, started)
    except Exception:  # it ended before loading: the cell records that and is left out of the ratios
        pass
    except BaseException:  # cancelled: stop it before going
        await _finish_neighbour(running, True)
        raise
    return running


async def _finish_neighbour(running: _Running, failed: bool) -> dict[str, Any]:
    """Stops the neighbour (cancels it when the cell failed) and returns what it did; `covered` says
    whether it was still loading when the cell ended. Its failure is recorded, never raised. The
    AsyncLLM's rate covers its whole bounded run, the cell and the time it ran on alone after it."""
    covered = not running.task.done()
    running.stop()
    if failed:
        running.task.cancel()
    await asyncio.wait([running.task])
    if running.task.cancelled():
        return {"error": "cancelled", "covered": covered}
    error = running.task.exception()
    if error is not None:
        return {"error": f"{type(error).__name__}: {error}", "covered": covered}
    return {**running.figures(running.task.result()), "covered": covered}


async def _warm_up(b: _Bench, concurrencies: list[int]) -> int:
    """Both rates, the pinned twin and the neighbour AsyncLLM once; each concurrency's cell time."""
    sent = 0
    for rate in (0.0, 1.0):
        await b.gw.set_sample_rate("twin", rate)
        await closed_loop(b.call, 4, 8)
        sent += 8 if rate else 0
        await _settled(b.gw, sent)
    await b.gw.set_sample_rate("twin", 0.0)
    await closed_loop(b.twin, 4, 8)
    await b.direct.run(4, 8, b.max_tokens)
    for c in concurrencies:
        _, b.estimate_s[c] = await closed_loop(b.call, c, requests_for(c))
    return sent


def _order(rep: int, index: int) -> tuple[str, ...]:
    """The systems in an order that rotates between repeats and concurrencies."""
    k = (rep + index) % len(SYSTEMS)
    return SYSTEMS[k:] + SYSTEMS[:k]


async def _cell(
    b: _Bench, proc: psutil.Process, system: str, c: int, rep: int, idle: tuple[float, float], sent: int
) -> tuple[Cell, dict[str, Any], dict[str, Any], int]:
    """One cell: the primary's closed loop with `system` on core 1, its CPU over the cell (not the
    neighbour's start or tail), what the neighbour did, and the copies sent to the shadow so far."""
    mirrored = system in MIRRORED
    await b.gw.set_sample_rate("twin", 1.0 if mirrored else 0.0, MIRRORED.get(system, 1.0))
    running = await _start_neighbour(b, system, c)
    failed = True
    try:
        before, t0 = _cpu(proc), time.perf_counter()
        samples, seconds = await closed_loop(b.call, c, requests_for(c))
        if mirrored:
            sent += len(samples)
            await _settled(b.gw, sent)
        after, window = _cpu(proc), time.perf_counter() - t0
        failed = False
    finally:  # the neighbour stops however the cell ends (a dead gateway makes `_cpu` raise)
        beside = await _finish_neighbour(running, failed) if running else {}
    used = (after[0] - before[0], after[1] - before[1])
    cell = summarize(system, c, rep, samples, seconds)
    return cell, _cpu_row(system, c, rep, len(samples), used, window, idle), beside, sent


async def _started(gw: Gateway, direct: DirectClient) -> tuple[float, float]:
    """Both start times; the AsyncLLM's wait is not left behind if the gateway fails to start."""
    neighbour = asyncio.ensure_future(direct.ready())
    try:
        return await gw.wait_ready(), await neighbour
    finally:
        neighbour.cancel()


async def run_mirroring(run: SuiteRun) -> dict[str, Any]:
    """Starts the gateway with a twin shadow and a neighbour AsyncLLM on core 1, measures the grid."""
    concurrencies, log = list(run.concurrencies), run.log
    cells: list[Cell] = []
    cpu: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        gw = await stack.enter_async_context(gateway(_variants(run.model), run.workdir, "gateway-mirror"))
        direct = await DirectClient.start(run.model, "1", run.workdir / "mirror-neighbour.log")
        stack.push_async_callback(direct.stop)
        started, neighbour_s = await _started(gw, direct)
        log(
            f"  started: gateway with primary + twin shadow {started:.0f} s, neighbour AsyncLLM {neighbour_s:.0f} s"
        )
        proc = psutil.Process(gw.process.pid)
        twin = grpc_call(gw.stub, run.max_tokens, "twin")
        b = _Bench(gw, direct, grpc_call(gw.stub, run.max_tokens), twin, run.max_tokens)
        sent = await _warm_up(b, concurrencies)
        idle = await _idle_rates(proc)
        for rep in range(run.repeats):
            for index, c in enumerate(concurrencies):
                for system in _order(rep, index):
                    cell, row, beside, sent = await _cell(b, proc, system, c, rep, idle, sent)
                    if beside:
                        b.neighbours.append({"system": system, "concurrency": c, "repeat": rep, **beside})
                    if "error" in beside or beside.get("covered") is False:
                        log(
                            f"  r{rep} c={c:<2} {system:<18} left out: its neighbour did not load the whole cell"
                        )
                        continue
                    cells.append(cell)
                    cpu.append(row)
                    log(
                        f"  r{rep} c={c:<2} {system:<18} {cell.tokens_per_s:7.1f} tok/s  "
                        f"ttft p50 {cell.ttft_p50_s * 1e3:6.1f} ms  e2e p50 {cell.latency_p50_s * 1e3:7.1f} ms  "
                        f"{' '.join(f'{k} {v}' for k, v in beside.items())}"
                    )
        outcomes = await _outcomes(gw)
    return {
        "start_s": started,
        "idle_cores": {"gateway": idle[0], "engines": idle[1]},
        "cells": [c.as_dict() for c in cells],
        "cpu": cpu,
        "neighbours": b.neighbours,
        "shadow_outcomes": outcomes,
    }
