"""Every demo variant's throughput inside the gateway vs bare vLLM (AsyncLLM with no RPC).

One variant at a time: its checkpoint in a gateway (in-process engine, cores 0-1, the only
variant) and in `bench.direct` (same engine settings), started together, measured interleaved at
each concurrency and repeated, then both stopped before the next variant.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from bench.clients import DirectClient, grpc_call
from bench.doors import loop_runner, measure_cells
from bench.load import Runner, SuiteRun
from bench.systems import engine_yaml, gateway
from serving.config import load_config


def demo_variants(config: str = "configs/demo.yaml") -> tuple[dict[str, str], list[str], dict[str, str]]:
    """Name → checkpoint directory of every built variant in the demo config that this CPU's vLLM
    build can serve (dense first), the names of those not built, and name → reason for those it
    cannot serve (`serving.commands.demo.unservable_here`, built or not)."""
    from serving.commands.demo import unservable_here

    cfg = load_config(config)
    skipped = unservable_here(cfg)
    served = [v for v in cfg.primary_first() if v.name not in skipped]
    present = {v.name: v.model_path for v in served if Path(v.model_path).is_dir()}
    return present, [v.name for v in served if v.name not in present], skipped


async def _one(name: str, model: str, run: SuiteRun) -> dict[str, Any]:
    workdir, max_tokens = run.workdir, run.max_tokens
    variant = {"name": name, "model": model, "role": "primary", "engine": engine_yaml("0-1")}
    async with contextlib.AsyncExitStack() as stack:
        gw = await stack.enter_async_context(gateway([variant], workdir, f"gateway-{name}"))
        direct = await DirectClient.start(model, "0-1", workdir / f"direct-{name}.log")
        stack.push_async_callback(direct.stop)
        started = await asyncio.gather(gw.wait_ready(), direct.ready())
        runners: dict[str, Runner] = {
            "asyncllm-direct": direct.runner(max_tokens),
            "driftgate-grpc": loop_runner(grpc_call(gw.stub, max_tokens)),
        }
        cells = await measure_cells(
            runners, run.concurrencies, run.repeats, lambda line: run.log(f"  [{name}]{line}")
        )
    return {"start_s": {"gateway": started[0], "asyncllm": started[1]}, "cells": [c.as_dict() for c in cells]}


async def run_variants(run: SuiteRun) -> dict[str, Any]:
    """Each built demo variant (`run.model` is not used: every variant serves its own)."""
    log = run.log
    out: dict[str, Any] = {}
    present, missing, unservable = demo_variants()
    if missing:
        log(f"  not built (make demo builds them), skipped: {', '.join(missing)}")
    for name, why in unservable.items():
        log(f"  skipped on this CPU: {name}: {why}")
        out[name] = {"skipped": why}
    for name, model in present.items():
        out[name] = await _one(name, model, run)
    return out
