"""The engine-settings suite: vLLM's CPU advice (tcmalloc, Intel OpenMP preloaded) measured.

Three `bench.direct` AsyncLLM processes with the same model and settings, all bound to cores 0-1,
differ only in `engine.preload` (`serving.engines.preload`): none (vLLM's own libgomp), tcmalloc,
tcmalloc + Intel OpenMP. They are started one after another (so their start times compare) and
measured interleaved, like the doors (`bench.doors.measure_cells`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.clients import DirectClient
from bench.doors import measure_cells
from bench.load import Runner
from serving.config import Preload

SYSTEMS = {f"preload-{p.value}": p for p in Preload}


async def run_preload(
    model: str,
    workdir: Path,
    concurrencies: Sequence[int],
    repeats: int,
    max_tokens: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Starts the three engines one at a time, measures the interleaved grid, stops them."""
    async with contextlib.AsyncExitStack() as stack:
        runners: dict[str, Runner] = {}
        start_s: dict[str, float] = {}
        for name, preload in SYSTEMS.items():
            client = await DirectClient.start(model, "0-1", workdir / f"{name}.log", preload.value)
            stack.push_async_callback(client.stop)
            start_s[name] = await client.ready()
            runners[name] = client.runner(max_tokens)
            log(f"  {name}: engine ready in {start_s[name]:.0f} s")
        cells = await measure_cells(runners, concurrencies, repeats, log)
    return {"start_s": start_s, "cells": [c.as_dict() for c in cells]}
