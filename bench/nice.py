"""The `nice` suite: the in-process gateway with its engine at niceness 0, 5 and 10 (`engine.nice`).

An in-process engine shares cores 0-1 with the gateway's event loop, and the gateway's added-latency
tail comes from the scheduler preempting the loop for the engine's threads (docs/performance.md).
Three gateways (`driftgate serve`) each serve the dense model in process on cores 0-1; they differ
only in `engine.nice` (`serving.engines.priority`). Each is loaded through both doors, gRPC and
HTTP, interleaved and rotated like the doors (`bench.doors.measure_cells`), and each cell's
added latency is read from its gateway's /metrics (`bench.added`). The gateways are started one
after another, so their start times compare.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp

from bench import report
from bench.added import Recorder
from bench.clients import grpc_call, openai_call
from bench.doors import loop_runner, measure_cells
from bench.load import Runner, SuiteRun
from bench.systems import engine_yaml, gateway

NICES = (0, 5, 10)
DOORS = ("grpc", "http")


def system(nice: int, door: str) -> str:
    return f"nice{nice}-{door}"


PAIRS = tuple((system(n, d), system(NICES[0], d)) for n in NICES[1:] for d in DOORS)
"""(system, baseline) for the ratio and difference tables: each reniced engine against nice 0."""


async def run_nice(run: SuiteRun) -> dict[str, Any]:
    """Starts the gateways, measures the grid through both doors of each, stops them."""
    model, workdir, max_tokens, log = run.model, run.workdir, run.max_tokens, run.log
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=600)
            )
        )
        start_s: dict[str, float] = {}
        runners: dict[str, Runner] = {}
        labels: dict[str, tuple[str, tuple[str, str]]] = {}
        for nice in NICES:
            variant = {
                "name": "dense",
                "model": model,
                "role": "primary",
                "engine": engine_yaml("0-1", nice=nice),
            }
            gw = await stack.enter_async_context(gateway([variant], workdir, f"gateway-nice{nice}"))
            start_s[f"nice{nice}"] = await gw.wait_ready()
            log(f"  gateway with engine.nice {nice}: ready in {start_s[f'nice{nice}']:.0f} s")
            runners[system(nice, "grpc")] = loop_runner(grpc_call(gw.stub, max_tokens, "dense"))
            runners[system(nice, "http")] = loop_runner(
                openai_call(session, gw.http_url, "dense", max_tokens)
            )
            for door in DOORS:
                labels[system(nice, door)] = (gw.metrics_url, ("dense", door))
        recorder = Recorder(session, labels)
        cells = await measure_cells(runners, run.concurrencies, run.repeats, log, recorder)
    return {"start_s": start_s, "cells": [c.as_dict() for c in cells], "added": recorder.records}


def nice_lines(result: dict[str, Any]) -> list[str]:
    """The suite's tables: figures, throughput ratios and client-side differences against nice 0,
    and each gateway's own added latency."""
    cells = report.cells_of(result)
    return [
        f"Gateway start: {', '.join(f'{k} {v:.0f} s' for k, v in result['start_s'].items())}",
        "",
        *report.figures_table(cells),
        "",
        *report.ratio_table(cells, PAIRS),
        "",
        *report.added_table(cells, PAIRS),
        "",
        *report.added_server_lines(result.get("added", [])),
    ]
