"""The `wire` suite: real gateway doors and bare servers over a tick engine, measured by a client
in another process, and the pure pairing and table it reports with."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.run import markdown
from bench.wire import TickEngine, stamps
from bench.wire_run import SYSTEMS, added, cpus, run_wire, wire_lines
from serving.engines.base import SamplingSpec


def test_stamps_read_the_ticks_back_from_streamed_text() -> None:
    assert stamps("12.5;13.25;") == [12.5, 13.25]
    assert stamps("") == [] and stamps(" ") == []


async def test_the_tick_engine_steps_every_stream_together() -> None:
    engine = TickEngine(0.02)
    ticking = asyncio.create_task(engine.run())
    try:
        spec = SamplingSpec(max_tokens=3)

        async def one() -> list[Any]:
            return [c async for c in engine.generate("a b", spec, "r", prompt_token_ids=(1, 2))]

        a, b = await asyncio.gather(one(), one())
    finally:
        ticking.cancel()
    assert [c.text for c in a] == [c.text for c in b]  # the same three steps, stamped alike
    ticks = [stamps(c.text)[0] for c in a]
    assert ticks == sorted(ticks) and ticks[-1] <= time.perf_counter()
    assert a[-1].finished and a[-1].completion_tokens == 3 and a[-1].prompt_tokens == 2
    assert not any(c.finished for c in a[:-1])


def _cell(system: str, concurrency: int, repeat: int, first: float) -> dict[str, Any]:
    return {
        "system": system,
        "concurrency": concurrency,
        "repeat": repeat,
        "requests": 8,
        "errors": 0,
        "first_p50_s": first,
        "first_p99_s": first * 2,
        "token_p50_s": first,
        "token_p99_s": first * 3,
    }


def test_added_pairs_each_door_with_its_protocols_bare_server_by_repeat() -> None:
    cells = [
        _cell("bare-grpc", 1, 0, 0.001),
        _cell("driftgate-grpc", 1, 0, 0.0015),
        _cell("bare-grpc", 1, 1, 0.003),
        _cell("driftgate-grpc", 1, 1, 0.0032),
        _cell("bare-http", 1, 0, 0.002),
        _cell("driftgate-http", 1, 0, 0.0021),
        _cell("driftgate-http", 1, 1, 0.009),  # its bare cell is missing: not paired
    ]
    pairs = added(cells, "first_p50_s")
    assert set(pairs) == {("driftgate-grpc", 1), ("driftgate-http", 1)}
    assert [round(x, 6) for x in pairs[("driftgate-grpc", 1)]] == [0.0005, 0.0002]
    assert [round(x, 6) for x in pairs[("driftgate-http", 1)]] == [0.0001]
    lines = wire_lines({"tick_s": 0.05, "tokens": 8, "cells": cells})
    assert "| driftgate-grpc | 1 | 0.35 [0.20–0.50] |" in "\n".join(lines)


async def test_the_wire_suite_measures_every_door_and_bare_server(tmp_path: Path) -> None:
    """Real servers (gateway doors, bare grpc.aio, bare uvicorn) in a child process on one CPU,
    the client in another on another: every cell answered, every median delay positive and below a tick."""
    logs: list[str] = []
    result = await run_wire(tmp_path / "logs", [2], 1, logs.append)
    cells = result["cells"]
    assert sorted(c["system"] for c in cells) == sorted(SYSTEMS)
    for cell in cells:
        assert cell["errors"] == 0 and cell["requests"] == 2 * 8, cell
        # The median is the sharp check: a door that held a token back to the next tick (or buffered
        # the stream) would put it at a tick or more. The p99 is one stall on a shared box away from a
        # tick, so it only has to stay ordered and inside one stream's length.
        tick, stream = result["tick_s"], result["tick_s"] * result["tokens"]
        for kind in ("first", "token"):
            p50, p99 = cell[f"{kind}_p50_s"], cell[f"{kind}_p99_s"]
            assert 0.0 < p50 < tick and p50 <= p99 < stream, (cell["system"], kind, p50, p99)
        if cell["system"].startswith("driftgate"):  # the gateway's own account of the cell
            assert 0.0 <= cell["server_first_p50_s"] < result["tick_s"]
    text = markdown({"machine": _machine(), "settings": {}, "wire": result})
    assert "## The doors on the wire (no vLLM)" in text and "| driftgate-http | 2 |" in text
    assert logs == ["wire: 4 cells"] and result["cpus"] == list(cpus())


def _machine() -> dict[str, Any]:
    return {"date": "d", "commit": "c", "cpu": "x", "cores": 2, "memory_gb": 24, "versions": {"vllm": "v"}}
