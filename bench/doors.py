"""The gateway-cost suite: the same model, load and client behind nine doors, in one run.

Four engines run side by side, each bound to cores 0-1 and loaded one at a time (an idle engine
costs nothing): AsyncLLM in `bench.direct`, the gateway's in-process engine, `vllm serve`, and a
variant server (below). The gateway also has a remote variant on each server, so:

| system | path |
| --- | --- |
| asyncllm-direct | closed loop inside the AsyncLLM process (no RPC) |
| driftgate-grpc | client → gRPC → gateway → in-process AsyncLLM |
| driftgate-http | client → HTTP/SSE (OpenAI door) → gateway → in-process AsyncLLM |
| vllm-serve-http | client → HTTP/SSE → vllm serve |
| driftgate-remote-grpc | client → gRPC → gateway → HTTP/SSE → vllm serve |
| driftgate-remote-http | client → HTTP/SSE → gateway → HTTP/SSE → vllm serve |
| driftgate-remote-grpc-uvloop | as driftgate-remote-grpc, a second gateway on uvloop |
| variant-serve-http | client → HTTP/SSE → vllm serve as `driftgate variant serve` starts it |
| driftgate-remote-variant-grpc | client → gRPC → gateway → HTTP/SSE → that variant server |

A remote deployment (`k8s/`, one variant per pod) runs its servers as `driftgate variant serve` does:
with the variant's engine settings (`variant_env`: `engine.executor: uni`, the compile cache, the
preloads). So a fourth engine, that variant server, runs beside the bare `vllm serve`, and the
suite compares a remote deployment with what a user would run without driftgate.

Each repeat runs every concurrency and, within it, every system back to back, in an order that
rotates between repeats, so slow drift of the shared machine spreads over all systems.

Every engine has the same libraries preloaded (`engine.preload: auto`, tcmalloc and Intel OpenMP
where found): the gateway's and AsyncLLM's by default, `vllm serve`'s as vLLM's own x86 CPU image
runs it (its Dockerfile sets `LD_PRELOAD` to the same two), so the suite measures the gateway and
not the allocator. Earlier runs' `vllm serve` ran bare (vLLM's pip defaults), and so did every
engine before `auto` became the default (commit 4d61c78).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.added import Recorder
from bench.clients import DirectClient, grpc_call, openai_call
from bench.load import Call, Cell, Runner, Sample, SuiteRun, closed_loop, summarize
from bench.profile import profile_gateway
from bench.systems import Gateway, engine_config, engine_yaml, gateway
from serving.config import VariantConfig
from serving.engines.cpu import cpu_flags, resolve_dtype
from serving.engines.vllm_server import (
    ServerProcess,
    free_port,
    running_server,
    server_command,
    server_env,
    variant_env,
    wait_healthy,
)

SETTLE_S = 1.5
"""Pause before each cell: vLLM's worker busy-polls for 1 s after its last step (shm_broadcast's
SpinCondition) before it sleeps, so the previous system must not spin into the next cell."""


def requests_for(concurrency: int) -> int:
    """Requests per cell: enough for a p99 to mean something at high concurrency, short at c=1."""
    return max(8, 4 * concurrency)


def loop_runner(call: Call) -> Runner:
    async def run(concurrency: int, total: int) -> tuple[list[Sample], float]:
        return await closed_loop(call, concurrency, total)

    return run


def rotated(items: Sequence[str], k: int) -> list[str]:
    k %= len(items)
    return [*items[k:], *items[:k]]


async def measure_cells(
    runners: dict[str, Runner],
    concurrencies: Sequence[int],
    repeats: int,
    log: Callable[[str], None],
    after: Callable[[Cell | None], Awaitable[None]] | None = None,
) -> list[Cell]:
    """Warms every system up, then runs the interleaved, rotated grid; `after` is awaited once
    after the warm-up (with None) and after every cell."""
    for run in runners.values():
        await run(4, 8)
    if after:
        await after(None)
    cells: list[Cell] = []
    names = list(runners)
    for rep in range(repeats):
        for c in concurrencies:
            for name in rotated(names, rep + c):
                await asyncio.sleep(SETTLE_S)
                samples, seconds = await runners[name](c, requests_for(c))
                cell = summarize(name, c, rep, samples, seconds)
                cells.append(cell)
                if after:
                    await after(cell)
                log(
                    f"  r{rep} c={c:<2} {name:<22} {cell.tokens_per_s:7.1f} tok/s  "
                    f"ttft p50 {cell.ttft_p50_s * 1e3:6.1f} ms  e2e p50 {cell.latency_p50_s * 1e3:7.1f} ms  "
                    f"errors {cell.errors}"
                )
    return cells


def _remote(name: str, model: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "role": "candidate",
        "weight": 0.0,
        "engine": engine_yaml("0-1", url=url, served_model_name="dense"),
    }


def _gateway_variants(model: str, vllm_url: str, variant_url: str | None = None) -> list[dict[str, Any]]:
    variants = [
        {"name": "dense", "model": model, "role": "primary", "engine": engine_yaml("0-1")},
        _remote("remote", model, vllm_url),
    ]
    return variants + ([_remote("remote-variant", model, variant_url)] if variant_url else [])


def _remote_only(model: str, vllm_url: str) -> list[dict[str, Any]]:
    return [{**_remote("remote", model, vllm_url), "role": "primary", "weight": 1.0}]


def _added_labels(gw: Gateway, uv: Gateway) -> dict[str, tuple[str, tuple[str, str]]]:
    """Where each gateway system's added latency is: its gateway's /metrics and (variant, door)."""
    return {
        "driftgate-grpc": (gw.metrics_url, ("dense", "grpc")),
        "driftgate-http": (gw.metrics_url, ("dense", "http")),
        "driftgate-remote-grpc": (gw.metrics_url, ("remote", "grpc")),
        "driftgate-remote-http": (gw.metrics_url, ("remote", "http")),
        "driftgate-remote-grpc-uvloop": (uv.metrics_url, ("remote", "grpc")),
        "driftgate-remote-variant-grpc": (gw.metrics_url, ("remote-variant", "grpc")),
    }


@contextlib.asynccontextmanager
async def _servers(model: str, workdir: Path) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """The bare `vllm serve` (vLLM's executor; the preloads of vLLM's CPU image) and the same server as
    `driftgate variant serve` starts it (the bench's engine settings), both on cores 0-1, not yet healthy."""
    engine = engine_config("0-1")  # the other systems' engine settings, which the servers follow
    dtype = resolve_dtype(engine.dtype, model, cpu_flags())
    bare_env = server_env("0-1", preload=engine.preload)
    as_deployed = variant_env(VariantConfig(name="dense", model=model, engine=engine))
    bare_port = free_port()
    while (variant_port := free_port()) == bare_port:  # neither server has bound its port yet
        pass
    async with contextlib.AsyncExitStack() as stack:
        started = []
        for port, env, log in (
            (bare_port, bare_env, "vllm-serve.log"),
            (variant_port, as_deployed, "variant-serve.log"),
        ):
            command = server_command(model, "dense", port, dtype=dtype, max_model_len=1024, kv_cache_gib=1.0)
            server = running_server(command, env, workdir / log, port, wait=False)
            started.append(await stack.enter_async_context(server))
        yield started[0], started[1]


async def run_doors(run: SuiteRun) -> dict[str, Any]:
    """Starts the four engines (concurrently), measures the grid, stops everything."""
    model, workdir, max_tokens, log = run.model, run.workdir, run.max_tokens, run.log
    async with contextlib.AsyncExitStack() as stack:
        server, variant = await stack.enter_async_context(_servers(model, workdir))
        gw: Gateway = await stack.enter_async_context(
            gateway(_gateway_variants(model, server.url, variant.url), workdir, "gateway-doors")
        )
        uv: Gateway = await stack.enter_async_context(
            gateway(_remote_only(model, server.url), workdir, "gateway-uvloop", "uvloop")
        )
        direct = await DirectClient.start(model, "0-1", workdir / "direct.log")
        stack.push_async_callback(direct.stop)
        started = await asyncio.gather(
            wait_healthy(server, 900), gw.wait_ready(), direct.ready(), wait_healthy(variant, 900)
        )
        await uv.wait_ready()
        log(
            f"  started: vllm serve {started[0]:.0f} s, gateway {started[1]:.0f} s, AsyncLLM {started[2]:.0f} s,"
            f" variant server {started[3]:.0f} s"
        )
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=600)
            )
        )
        runners: dict[str, Runner] = {
            "asyncllm-direct": direct.runner(max_tokens),
            "driftgate-grpc": loop_runner(grpc_call(gw.stub, max_tokens, "dense")),
            "driftgate-http": loop_runner(openai_call(session, gw.http_url, "dense", max_tokens)),
            "vllm-serve-http": loop_runner(openai_call(session, server.url, "dense", max_tokens)),
            "driftgate-remote-grpc": loop_runner(grpc_call(gw.stub, max_tokens, "remote")),
            "driftgate-remote-http": loop_runner(openai_call(session, gw.http_url, "remote", max_tokens)),
            "driftgate-remote-grpc-uvloop": loop_runner(grpc_call(uv.stub, max_tokens, "remote")),
            "variant-serve-http": loop_runner(openai_call(session, variant.url, "dense", max_tokens)),
            "driftgate-remote-variant-grpc": loop_runner(grpc_call(gw.stub, max_tokens, "remote-variant")),
        }
        recorder = Recorder(session, _added_labels(gw, uv))
        cells = await measure_cells(runners, run.concurrencies, run.repeats, log, recorder)
        log("  profiling the gateway (py-spy) under c=8 on driftgate-grpc")
        call = grpc_call(gw.stub, max_tokens, "dense")
        profile = await profile_gateway(gw.process.pid, workdir.parent, lambda: closed_loop(call, 8, 16))
    return {
        "start_s": {
            "vllm_serve": started[0],
            "gateway": started[1],
            "asyncllm": started[2],
            "variant_serve": started[3],
        },
        "cells": [c.as_dict() for c in cells],
        "added": recorder.records,
        "profile": profile,
    }
