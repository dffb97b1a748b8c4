"""`driftgate bench`: runs the chosen suites in one process run and writes `bench.json`,
`bench.md` and PNG plots into the report directory.

Suites: `roofline` (bandwidth, measured first on an idle box), `contention` (what one core's memory
reads and compute cost the other core), `step` (where a single-stream
decode step's time goes, two threads vs one), `wire` (each door's delay from
an engine's output to the client against a bare server, on a tick engine), `doors` (gateway cost: AsyncLLM,
vllm serve, driftgate in-process and remote, gRPC and HTTP), `mirror` (mirroring off vs on, and a
neighbour's load on the shadow's core instead),
`variants` (each demo variant in the gateway vs bare AsyncLLM), `preload` (tcmalloc and Intel
OpenMP preloaded into the engine, vLLM's CPU advice), `dtype` (bfloat16 vs float32), `nice` (the
in-process gateway with its engine at a lower CPU priority), `startup` (cold and warm start of the demo
config), `restart` (a remote variant's server started bare vs as `driftgate variant serve`),
`compress` (compression wall time per demo recipe, from the variants' manifests).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.load import SuiteRun
from bench.nice import nice_lines
from bench.restart import restart_lines
from bench.step import step_lines
from bench.wire_run import wire_lines

SUITES = (
    "roofline",
    "contention",
    "step",
    "wire",
    "doors",
    "mirror",
    "variants",
    "preload",
    "dtype",
    "kernels",
    "executor",
    "nice",
    "startup",
    "restart",
    "compress",
)
SUITE_DOCS = {
    "roofline": "read bandwidth and the single-stream decode roofline",
    "contention": "memory reads and vector compute on one core alone vs both cores at once",
    "step": "AsyncLLM at c=1 on cores 0-1, on core 1 and with executor mp; its decode step by part (py-spy)",
    "wire": "each door's delay from engine output to client vs a bare server (tick engine, no vLLM)",
    "doors": "AsyncLLM, vllm serve, driftgate in-process and remote, gRPC and HTTP",
    "mirror": "one twin shadow, sample rate 0 vs 1, and neighbours on its core instead",
    "variants": "every demo variant in the gateway vs bare AsyncLLM",
    "preload": "AsyncLLM with tcmalloc / Intel OpenMP preloaded vs vLLM's default",
    "dtype": "AsyncLLM serving the model in bfloat16 vs float32, speed and greedy answers",
    "kernels": "AsyncLLM with inductor's fused kernels parallel (vLLM's) vs serial, speed and greedy answers",
    "executor": "AsyncLLM with its model in a worker process (vLLM's mp) vs in the engine core (uni)",
    "nice": "the in-process gateway, its engine at engine.nice 0, 5 and 10, both doors",
    "startup": "configs/demo.yaml cold, warm and warm with enforce_eager, to all engines SERVING",
    "restart": "one variant's vLLM server to healthy: bare vllm serve vs driftgate variant serve",
    "compress": "compression wall time per demo recipe (manifests)",
}


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The CPU features vLLM's CPU kernels depend on (`serving.engines.cpu`): results from machines
that differ in them do not compare."""


def machine() -> dict[str, Any]:
    import psutil

    from serving.engines.cpu import cpu_fields

    fields = cpu_fields()
    flags = fields.get("flags", "").split()
    versions = {}
    for module in ("vllm", "torch", "grpc", "aiohttp"):
        try:
            versions[module] = str(__import__(module).__version__)
        except Exception:
            versions[module] = "?"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return {
        "cpu": fields.get("model name", ""),
        "cores": os.cpu_count(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit.stdout.strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        "# driftgate bench",
        "",
        f"{m['date']} · commit {m['commit']} · {m['cpu']} ({' '.join(m.get('isa', [])) or 'ISA not recorded'}) · "
        f"{m['cores']} cores · {m['memory_gb']} GB · "
        f"vLLM {m['versions']['vllm']} · settings {json.dumps(result['settings'])}",
        "",
        "Every request is a greedy, streamed completion of exactly max_tokens tokens (`ignore_eos`). "
        "Figures are the median over repeats with [lowest–highest]; ratios and differences pair the "
        "two systems' cells of the same repeat (they ran back to back).",
    ]
    for name, error in result.get("errors", {}).items():
        out += ["", f"**Suite {name} failed**: {error} (see logs/ in the report directory)"]
    if "roofline" in result:
        out += ["", "## Roofline", "", *report.roofline_lines(result["roofline"], result.get("doors"))]
    if "contention" in result:
        out += ["", "## One core's work against the other's (one thread per core)", ""]
        out += report.contention_lines(result["contention"])
    if "step" in result:
        out += ["", "## The single-stream decode step (AsyncLLM, c=1)", ""]
        out += step_lines(result["step"], result.get("roofline"))
    if "wire" in result:
        out += ["", "## The doors on the wire (no vLLM)", "", *wire_lines(result["wire"])]
    if "doors" in result:
        cells = report.cells_of(result["doors"])
        out += ["", "## Gateway cost", "", f"Engine start: {json.dumps(result['doors']['start_s'])}", ""]
        out += [*report.figures_table(cells), "", *report.ratio_table(cells), "", *report.added_table(cells)]
        out += ["", *report.added_server_lines(result["doors"].get("added", []))]
        out += ["", "### Gateway profile", "", *report.profile_lines(result["doors"].get("profile", {}))]
    if "mirror" in result:
        out += ["", "## Mirroring one shadow (primary core 0, shadow core 1)", ""]
        out += report.mirror_tables(result["mirror"])
    if result.get("variants"):
        out += [
            "",
            "## Demo variants: gateway vs bare AsyncLLM",
            "",
            *report.variants_table(result["variants"]),
        ]
    out += _settings_sections(result)
    if "nice" in result:
        out += ["", "## Engine priority (in-process gateway, cores 0-1)", "", *nice_lines(result["nice"])]
    if "startup" in result:
        out += ["", "## Start-up of configs/demo.yaml", "", *report.startup_lines(result["startup"])]
    if "restart" in result:
        out += ["", "## A remote variant's server start (dense, cores 0-1)", ""]
        out += restart_lines(result["restart"])
    if "compress" in result:
        out += ["", "## Compression", "", "| recipe | wall s | size vs source |", "| --- | --- | --- |"]
        out += [
            f"| {r['recipe']} | {r['wall_s']:.1f} | {r['ratio_vs_source']:.3f} |" for r in result["compress"]
        ]
    return "\n".join(out) + "\n"


def _settings_sections(result: dict[str, Any]) -> list[str]:
    """The engine-settings suites' sections (`bench.settings`), those that ran."""
    out: list[str] = []
    roof = result.get("roofline")
    if "preload" in result:
        out += [
            "",
            "## Engine preloads (AsyncLLM, cores 0-1)",
            "",
            *report.preload_lines(result["preload"], roof),
        ]
    if "dtype" in result:
        model = result["settings"].get("model", "dense")
        out += [
            "",
            f"## Engine dtype (AsyncLLM, {model}, cores 0-1)",
            "",
            *report.dtype_lines(result["dtype"], roof),
        ]
    if "kernels" in result:
        out += ["", "## Fused kernels (AsyncLLM, cores 0-1)", ""]
        out += report.answered_settings_lines(result["kernels"], roof, "kernels-parallel")
    if "executor" in result:
        out += ["", "## Executor (AsyncLLM, cores 0-1)", ""]
        out += report.answered_settings_lines(result["executor"], roof, "executor-mp")
    return out


def _suite_runners(
    model: str,
    out: Path,
    concurrencies: Sequence[int],
    repeats: int,
    max_tokens: int,
    log: Callable[[str], None],
) -> dict[str, Callable[[], Awaitable[Any]]]:
    from bench.contention import run_contention
    from bench.doors import run_doors
    from bench.mirroring import run_mirroring
    from bench.nice import run_nice
    from bench.restart import run_restart
    from bench.roofline import roofline
    from bench.settings import DTYPE, EXECUTOR, KERNELS, PRELOAD, run_settings
    from bench.startup import run_startup
    from bench.step import run_step
    from bench.variants import run_variants
    from bench.wire_run import run_wire

    logs = out / "logs"
    run = SuiteRun(model, logs, concurrencies, repeats, max_tokens, log)
    mirror = replace(run, concurrencies=[c for c in concurrencies if c <= 8] or [1])
    per_variant = replace(
        run, concurrencies=[c for c in concurrencies if c in (1, 16)] or list(concurrencies)
    )

    async def compress() -> Any:
        from compress.bench import compress_report

        return await asyncio.to_thread(compress_report)

    return {
        "roofline": lambda: asyncio.to_thread(roofline, model),
        "contention": lambda: asyncio.to_thread(run_contention, repeats, log),
        "step": lambda: run_step(run),
        "wire": lambda: run_wire(logs, concurrencies, repeats, log),
        "doors": lambda: run_doors(run),
        "mirror": lambda: run_mirroring(mirror),
        "variants": lambda: run_variants(per_variant),
        "preload": lambda: run_settings(per_variant, PRELOAD),
        "dtype": lambda: run_settings(per_variant, DTYPE, answers=True),
        "kernels": lambda: run_settings(per_variant, KERNELS, answers=True),
        "executor": lambda: run_settings(per_variant, EXECUTOR, answers=True),
        "nice": lambda: run_nice(run),
        "startup": lambda: run_startup(logs, log),
        "restart": lambda: run_restart(model, logs, repeats, log),
        "compress": compress,
    }


async def run_suites(
    model: str, out: Path, suites: Sequence[str], concurrencies: Sequence[int], repeats: int, max_tokens: int
) -> dict[str, Any]:
    """Runs the suites in SUITES order; the result is written after each one, and a suite that
    fails is recorded under `errors` without stopping the others."""

    def log(line: str) -> None:
        print(line, flush=True)

    result: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "model": Path(model).name,
            "concurrency": list(concurrencies),
            "repeats": repeats,
            "max_tokens": max_tokens,
        },
        "errors": {},
    }
    t0 = time.monotonic()
    runners = _suite_runners(model, out, concurrencies, repeats, max_tokens, log)
    for name in (s for s in SUITES if s in suites):
        log(f"{name}: {SUITE_DOCS[name]}")
        try:
            result[name] = await runners[name]()
        except Exception as exc:  # one failed suite must not lose the others' figures
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
        result["wall_s"] = time.monotonic() - t0
        await asyncio.to_thread(write, result, out)
    return result


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    (out / "bench.md").write_text(markdown(result))
    if "doors" in result:
        report.plot(report.cells_of(result["doors"]), out / "doors.png", "gateway cost (median, min–max)")
    if "mirror" in result:
        report.plot(report.cells_of(result["mirror"]), out / "mirror.png", "mirroring off vs on")
