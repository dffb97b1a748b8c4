"""The `restart` suite: how long one variant's own vLLM server takes to answer /health.

Two ways to start the same server (the dense model, cores 0-1, `variant_command`):
- `vllm-serve`: a bare `vllm serve` with vLLM's own compile handling and caches under HOME, as a
  user would run it. vLLM 0.32 on CPU saves its AOT artifact but cannot load it back, so it
  compiles at every start.
- `driftgate-variant-serve`: the environment `driftgate variant serve` gives it
  (`serving.engines.vllm_server.variant_env`): driftgate's compile cache, with the vLLM plugin that
  loads the compiled model back.

The driftgate cache is a fresh one in the report directory: a first start fills it (`cold_s`);
then `repeats` rounds, each a bare start followed by a warm driftgate start, one server alive at a
time. Each warm start's log is checked for vLLM's "Directly load AOT compilation" line.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load import spread
from serving.config import EngineConfig, VariantConfig

BARE, DRIFTGATE = "vllm-serve", "driftgate-variant-serve"
SYSTEMS = (BARE, DRIFTGATE)
"""The order of every round: a bare `vllm serve`, then `driftgate variant serve`'s environment."""
LOADED = "Directly load AOT compilation"
CACHE_ENV = "DRIFTGATE_COMPILE_CACHE"


async def time_to_healthy(model: str, system: str, log_path: Path) -> tuple[float, bool]:
    """Seconds from starting the server until /health answers 200, and whether its log (a new
    file) says the compiled model was loaded rather than compiled; the server is stopped again."""
    from serving.engines.vllm_server import free_port, running_server, variant_command

    variant = VariantConfig(name="dense", model=model, engine=EngineConfig(cpu_cores="0-1"))
    env = _environments()[system](variant)
    port = free_port()
    t0 = time.monotonic()
    command = variant_command(variant, port)
    async with running_server(command, env, log_path, port, startup_timeout_s=900.0):
        elapsed = time.monotonic() - t0
    text = await asyncio.to_thread(log_path.read_text, errors="replace")
    return elapsed, LOADED in text


def _environments() -> dict[str, Callable[[VariantConfig], dict[str, str]]]:
    """Each system's server environment: vLLM's defaults (`server_env`: cores and the same preloads,
    as vLLM's CPU image sets them) or `driftgate variant serve`'s (`variant_env`: also the compile
    cache and the AOT-load plugin). Runs before engine.preload auto (4d61c78) started the bare one
    without preloads."""
    from serving.engines.vllm_server import server_env, variant_env

    return {BARE: lambda v: server_env(v.engine.cpu_cores, preload=v.engine.preload), DRIFTGATE: variant_env}


async def run_restart(model: str, workdir: Path, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """A cold driftgate start, then `repeats` interleaved rounds of both systems."""
    cache = workdir / "restart-compile-cache"
    await asyncio.to_thread(shutil.rmtree, cache, ignore_errors=True)
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(cache)  # read by variant_env in this process
    try:
        cold_s, _ = await time_to_healthy(model, DRIFTGATE, workdir / "restart-cold.log")
        log(f"  driftgate-variant-serve cold (fresh compile cache): healthy in {cold_s:.0f} s")
        starts: dict[str, list[float]] = {name: [] for name in SYSTEMS}
        loaded: dict[str, list[bool]] = {name: [] for name in SYSTEMS}
        for r in range(repeats):
            for name in SYSTEMS:
                s, hit = await time_to_healthy(model, name, workdir / f"restart-{name}-{r + 1}.log")
                starts[name].append(round(s, 1))
                loaded[name].append(hit)
                log(f"  round {r + 1} {name}: healthy in {s:.0f} s (compiled model loaded: {hit})")
    finally:
        if saved is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = saved
        await asyncio.to_thread(shutil.rmtree, cache, ignore_errors=True)
    return {"cold_s": round(cold_s, 1), "starts_s": starts, "loaded": loaded}


def restart_lines(result: dict[str, Any]) -> list[str]:
    """The suite as a Markdown table, with the paired ratio warm driftgate / bare vllm serve."""
    starts = result["starts_s"]
    lines = [
        "| server start | healthy s | compiled model loaded |",
        "| --- | --- | --- |",
        f"| driftgate-variant-serve, cold (fresh cache) | {result['cold_s']:.0f} | no |",
    ]
    for name, values in starts.items():
        s = spread(values)
        hits = sum(result["loaded"][name])
        lines.append(f"| {name} | {s.median:.0f} [{s.low:.0f}–{s.high:.0f}] | {hits}/{len(values)} |")
    pairs = zip(starts[DRIFTGATE], starts[BARE], strict=True)
    ratio = spread([a / b for a, b in pairs if b > 0])
    lines += [
        "",
        f"Warm driftgate / bare vllm serve, paired by round: {ratio.median:.2f} [{ratio.low:.2f}–{ratio.high:.2f}]",
    ]
    return lines
