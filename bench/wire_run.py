"""The `wire` suite: what each door adds between an engine's output and the client, measured by
the client, against a bare server of the same protocol (`bench.wire` has the servers).

The server process runs on one CPU and a client process (`python -m bench.wire_run`) on another
(the first and the last this process may use).
Every cell is a closed loop of streamed requests at one concurrency; the systems take turns
within each repeat. Per cell: the delay from the engine's tick to the client reading the token,
for the first token of each request and for every token (p50, p99), and for the gateway's doors
its own account of the same cell (`driftgate_gateway_added_seconds`, first event). The added
latency is the door's delay minus the bare server's, paired by repeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.clients import sse_event
from bench.load import pct, spread
from bench.wire import stamps
from serving.engines.vllm_server import with_parent_death_signal

SYSTEMS = ("bare-grpc", "driftgate-grpc", "bare-http", "driftgate-http")
TICK_S = 0.05
TOKENS = 8
PER_CELL = 8
"""Requests per worker in a cell."""

Stream = Callable[[list[float]], Awaitable[None]]


def _grpc_stream(port: int) -> Stream:
    import grpc

    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc

    stub = pb_grpc.GatewayStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
    request = pb.GenerateRequest(prompt="tick", max_tokens=TOKENS, temperature=0.0, ignore_eos=True)

    async def stream(delays: list[float]) -> None:
        async for chunk in stub.GenerateStream(request):
            now = time.perf_counter()
            delays.extend(now - t for t in stamps(chunk.text))

    return stream


def _http_stream(session: Any, port: int) -> Stream:
    body = {"model": "dense", "prompt": "tick", "max_tokens": TOKENS, "stream": True, "ignore_eos": True}
    url = f"http://127.0.0.1:{port}/v1/completions"

    async def stream(delays: list[float]) -> None:
        async with session.post(url, json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                now = time.perf_counter()
                for choice in (sse_event(line) or {}).get("choices", []):
                    delays.extend(now - t for t in stamps(choice.get("text") or ""))

    return stream


async def _cell(stream: Stream, concurrency: int) -> dict[str, Any]:
    firsts: list[float] = []
    every: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in range(PER_CELL):
            delays: list[float] = []
            try:
                await stream(delays)
            except Exception:  # a failed request is counted, never a stray exception
                errors += 1
            if delays:
                firsts.append(delays[0])
                every.extend(delays)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "requests": concurrency * PER_CELL,
        "errors": errors,
        "first_p50_s": pct(firsts, 0.5),
        "first_p99_s": pct(firsts, 0.99),
        "token_p50_s": pct(every, 0.5),
        "token_p99_s": pct(every, 0.99),
    }


async def measure(ports: dict[str, int], concurrencies: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """Every system at every concurrency, `repeats` times, the systems interleaved."""
    import aiohttp

    from bench.added import delta, scrape, summary

    metrics = f"http://127.0.0.1:{ports['metrics']}/metrics"
    cells: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:
        streams = {
            s: _grpc_stream(ports[s]) if s.endswith("grpc") else _http_stream(session, ports[s])
            for s in SYSTEMS
        }
        for system in SYSTEMS:  # warm-up: connections, first-call paths
            await _cell(streams[system], max(concurrencies))
        for repeat in range(repeats):
            for concurrency in concurrencies:
                for system in SYSTEMS:
                    before = await scrape(session, metrics)
                    cell = await _cell(streams[system], concurrency)
                    after = await scrape(session, metrics)
                    cell.update(system=system, concurrency=concurrency, repeat=repeat)
                    if system.startswith("driftgate"):
                        key = ("dense", system.split("-")[1], "first")
                        server = summary(delta(after[key], before.get(key)))
                        cell.update(server_first_p50_s=server["p50_s"], server_first_p99_s=server["p99_s"])
                    cells.append(cell)
    return cells


def cpus() -> tuple[int, int]:
    """The server's and the client's CPU: the first and the last this process may use (the same
    one on a single-CPU host, where the two then share it)."""
    usable = sorted(os.sched_getaffinity(0))
    return usable[0], usable[-1]


async def _start(
    module: str, args: Sequence[str], env: dict[str, str], stderr: Any
) -> asyncio.subprocess.Process:
    command = [sys.executable, "-m", module, *args]
    return await asyncio.create_subprocess_exec(
        *with_parent_death_signal(command), stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
    )


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


async def run_wire(
    logs: Path, concurrencies: Sequence[int], repeats: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Starts the servers on one CPU and the client on another; returns the cells."""
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server_cpu, client_cpu = cpus()
    with (logs / "wire-server.log").open("ab") as server_log:
        server = await _start("bench.wire", [str(TICK_S), str(server_cpu)], env, server_log)
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 120.0)
        if not line:
            raise RuntimeError(f"bench.wire exited with {await server.wait()}: see logs/wire-server.log")
        ask = {
            "ports": json.loads(line),
            "concurrency": list(concurrencies),
            "repeats": repeats,
            "cpu": client_cpu,
        }
        client = await _start("bench.wire_run", [json.dumps(ask)], env, None)
        try:
            out, _ = await asyncio.wait_for(client.communicate(), 1800.0)
        finally:
            await _stop(client)
        if client.returncode != 0:
            raise RuntimeError(f"bench.wire_run exited with {client.returncode}")
        cells: list[dict[str, Any]] = json.loads(out)
    finally:
        await _stop(server)
    log(f"wire: {len(cells)} cells")
    return {"tick_s": TICK_S, "tokens": TOKENS, "cpus": [server_cpu, client_cpu], "cells": cells}


def added(cells: Sequence[dict[str, Any]], figure: str) -> dict[tuple[str, int], list[float]]:
    """Each door's `figure` minus its bare server's, paired by repeat, per (door, concurrency)."""
    index = {(c["system"], c["concurrency"], c["repeat"]): c[figure] for c in cells}
    out: dict[tuple[str, int], list[float]] = {}
    for (system, concurrency, repeat), value in sorted(index.items()):
        bare = index.get((system.replace("driftgate", "bare"), concurrency, repeat))
        if system.startswith("driftgate") and bare is not None:
            out.setdefault((system, concurrency), []).append(value - bare)
    return out


def wire_lines(result: dict[str, Any]) -> list[str]:
    cells = result["cells"]
    cpu = result.get("cpus", [0, 1])

    def ms(values: Sequence[float]) -> str:
        s = spread(values)
        return f"{s.median * 1e3:.2f} [{s.low * 1e3:.2f}–{s.high * 1e3:.2f}]"

    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["system"], c["concurrency"]), []).append(c)
    lines = [
        f"A tick engine (one token per running stream every {result['tick_s'] * 1e3:.0f} ms, "
        f"{result['tokens']} tokens a request); servers on CPU {cpu[0]}, client on CPU {cpu[1]}. From the "
        "engine's output to the client's read, ms, median [lowest–highest] over repeats. This starts at "
        "the engine's output: a door's work before the engine call is not in it (a later start catches a "
        "later step), while the gateway's own account (`driftgate_gateway_added_seconds`, from the door's "
        "receipt) includes it:",
        "",
        "| system | c | first p50 | first p99 | token p50 | token p99 | gateway's own first p50 | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (system, concurrency), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        own = [c["server_first_p50_s"] for c in group if "server_first_p50_s" in c]
        lines.append(
            f"| {system} | {concurrency} | {ms([c['first_p50_s'] for c in group])} "
            f"| {ms([c['first_p99_s'] for c in group])} | {ms([c['token_p50_s'] for c in group])} "
            f"| {ms([c['token_p99_s'] for c in group])} | {ms(own) if own else '–'} "
            f"| {sum(c['errors'] for c in group)} |"
        )
    lines += ["", "Added by the door (door minus bare server of its protocol, paired by repeat), ms:", ""]
    lines += [
        "| door | c | first p50 | first p99 | token p50 | token p99 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    figures = [added(cells, f) for f in ("first_p50_s", "first_p99_s", "token_p50_s", "token_p99_s")]
    for key in sorted(figures[0], key=lambda k: (k[1], k[0])):
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(ms(f[key]) for f in figures) + " |")
    return lines


if __name__ == "__main__":
    ask = json.loads(sys.argv[1])
    os.sched_setaffinity(0, {ask["cpu"]})
    result = asyncio.run(measure(ask["ports"], ask["concurrency"], ask["repeats"]))
    print(json.dumps(result))
