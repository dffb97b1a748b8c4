"""Where a single-stream decode step's time goes (suite `step`): the roofline's gap, measured.

Three `bench.direct` AsyncLLM engines (ENGINES): the default settings on cores 0-1 (two OpenMP
threads, as every bench system) and on core 1 alone, and on cores 0-1 with vLLM's own executor
(`engine.executor: mp`, the model in a worker process of its own), are measured interleaved at
concurrency 1: time per output token (TPOT), `repeats` times. If the step were bound by reading the
weights, two threads (twice the read bandwidth, see the roofline) would make it about twice as
fast. Then py-spy samples the process that runs each engine's model (the worker, or with executor
`uni` the engine core; native frames) while it decodes, and `step_parts` sorts the samples by what
the step was doing: the matmuls (vLLM's oneDNN kernels, which read the weights), attention, the
KV-cache write, inductor's fused element-wise kernels, the LM head, the rest of the model runner,
waiting for the scheduler's next step (`mp`) or scheduling it in the same process (`uni`).
Ops of the compiled model are told apart by the line of inductor's generated code each sample is
on (`Runner.call`), read from the compile cache the engines ran from. Each timed cell also records
the cores each role of the engine's threads used (`bench.cpu_use`): the model's thread, the rest of
its OpenMP team, the model process's other threads, vLLM's other processes and the frontend.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.clients import DirectClient
from bench.cpu_use import cores_used, cpu_use_lines, median_use, snapshot
from bench.doors import SETTLE_S
from bench.load import Sample, SuiteRun, per_token_s
from bench.profile import record, stacks, thread_of

ENGINES: dict[str, tuple[str, dict[str, str]]] = {
    "cores 0-1": ("0-1", {}),
    "core 1": ("1", {}),
    "cores 0-1, executor mp": ("0-1", {"executor": "mp"}),
}
"""Each engine of the suite: its cores and its settings other than the defaults (`bench.direct`)."""
GRAPH_LINE = re.compile(r"Runner\.call \(([\w.]+\.py):(\d+)\)")
OPS = (
    ("_C.onednn_mm", "matmul (weights)"),
    ("unified_attention", "attention"),
    ("unified_kv_cache_update", "KV-cache write"),
    ("cpp_fused_", "fused element-wise (inductor)"),
)
PARTS = (
    *(part for _, part in OPS),
    "compiled model, other",
    "LM head (compute_logits)",
    "model runner, other",
    "waiting for the next step",
    "engine core: scheduling, outputs",
    "other",
)


def step_part(stack: Sequence[str], sources: Mapping[str, Sequence[str]]) -> str:
    """What one sampled stack (outermost frame first) was doing, one of PARTS (pure)."""
    for frame in reversed(stack):
        found = GRAPH_LINE.search(frame)
        if found:
            lines = sources.get(found.group(1), ())
            number = int(found.group(2))
            text = lines[number - 1] if 0 < number <= len(lines) else ""
            return next((part for key, part in OPS if key in text), "compiled model, other")
    joined = ";".join(stack)
    if "compute_logits" in joined:
        return "LM head (compute_logits)"
    if "CompiledFxGraph" in joined or "LlamaModel.forward" in joined:
        return "compiled model, other"
    if "execute_model" in joined or "sample_tokens" in joined:
        return "model runner, other"
    if "acquire_read" in joined or "dequeue" in joined:
        return "waiting for the next step"
    if "run_busy_loop" in joined:
        return "engine core: scheduling, outputs"
    return "other"


def model_thread_stacks(raw: str) -> list[tuple[list[str], int]]:
    """The stacks of the threads that ran the model (a stack in `execute_model`), from stacks recorded
    with thread frames, which are dropped; every stack of one recorded without them (pure). The
    engine core's other threads (sockets, with executor `uni`) are not part of the step."""
    by_thread: dict[str, list[tuple[list[str], int]]] = {}
    for frames, n in stacks(raw):
        thread, rest = thread_of(frames)
        by_thread.setdefault(thread, []).append((rest, n))
    if set(by_thread) == {""}:
        return by_thread[""]
    model = [t for t, rows in by_thread.items() if any("execute_model" in ";".join(f) for f, _ in rows)]
    return [row for t in model for row in by_thread[t]]


def step_parts(raw: str, sources: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Share of the model thread's samples in each of PARTS, from py-spy's raw stacks (pure; empty
    without samples)."""
    counts = dict.fromkeys(PARTS, 0)
    for frames, n in model_thread_stacks(raw):
        counts[step_part(frames, sources)] += n
    total = sum(counts.values())
    return {part: n / total for part, n in counts.items()} if total else {}


def generated_sources(raw: str, roots: Sequence[Path]) -> dict[str, list[str]]:
    """The lines of each generated file the stacks name, found by name under `roots`."""
    names = {m.group(1) for m in GRAPH_LINE.finditer(raw)}
    out: dict[str, list[str]] = {}
    for root in roots:
        for name in names - out.keys():
            path = next(root.rglob(name), None) if root.is_dir() else None
            if path is not None:
                out[name] = path.read_text().splitlines()
    return out


def worker_pid(parent: int) -> int | None:
    """The process that runs the model among `parent`'s descendants: vLLM's worker, or its engine
    core where there is no worker (executor `uni`)."""
    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.Error:
        return None
    for role in ("Worker", "EngineCore"):
        for child in children:
            with contextlib.suppress(psutil.Error):
                if role in child.name() or any(role in part for part in child.cmdline()):
                    return child.pid
    return None


def tpot_ms(samples: Sequence[Sample]) -> float:
    """Median time per output token after the first (`per_token_s`), in ms; NaN without one."""
    per = per_token_s(samples)
    return 1e3 * statistics.median(per) if per else float("nan")


async def _profile(client: DirectClient, out: Path, max_tokens: int) -> dict[str, Any]:
    pid = worker_pid(client.pid)
    if pid is None:
        return {"error": "no vLLM worker process found"}
    raw_path = out.with_suffix(".txt")
    load = functools.partial(client.run, 1, 2, max_tokens)
    ok = await record(pid, raw_path, 15, "raw", load, native=True, rate=100, threads=True)
    if not ok or not raw_path.exists():
        return {"error": "py-spy is not available or could not attach"}
    raw = await asyncio.to_thread(raw_path.read_text)
    from serving.engines.vllm_engine import compile_cache_env

    roots = [Path(v) for k, v in compile_cache_env().items() if k.endswith(("CACHE_ROOT", "CACHE_DIR"))]
    sources = await asyncio.to_thread(generated_sources, raw, roots)
    parts = step_parts(raw, sources)
    if not parts:
        return {"error": "py-spy recorded no samples of the worker"}
    return {"stacks": str(raw_path), "samples": sum(n for _, n in model_thread_stacks(raw)), "parts": parts}


async def run_step(run: SuiteRun) -> dict[str, Any]:
    """The engines started, TPOT at c=1 interleaved, then a profile of each worker."""
    tpot: dict[str, list[float]] = {name: [] for name in ENGINES}
    use: dict[str, list[dict[str, float]]] = {name: [] for name in ENGINES}
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, DirectClient] = {}
        for name, (cores, settings) in ENGINES.items():
            log_path = run.workdir / f"step-{_slug(name)}.log"
            client = await DirectClient.start(run.model, cores, log_path, **settings)
            stack.push_async_callback(client.stop)
            run.log(f"  engine {name}: ready in {await client.ready():.0f} s")
            await client.run(1, 2, run.max_tokens)  # warm-up
            clients[name] = client
        names = list(ENGINES)
        for rep in range(run.repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                await asyncio.sleep(SETTLE_S)  # the other engines' workers stop polling their cores
                samples, cpu = await _timed_cell(clients[name], run.max_tokens)
                tpot[name].append(tpot_ms(samples))
                use[name].append(cpu)
                run.log(f"  r{rep} {name:<26} TPOT {tpot[name][-1]:.1f} ms")
        profiles: dict[str, dict[str, Any]] = {}
        for name, client in clients.items():
            await asyncio.sleep(SETTLE_S)
            out = run.workdir / f"step-worker-{_slug(name)}"
            profiles[name] = await _profile(client, out, run.max_tokens)
    return {"tpot_ms": tpot, "profiles": profiles, "cores_used": use}


def _tree(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    return [pid]


async def _timed_cell(client: DirectClient, max_tokens: int) -> tuple[list[Sample], dict[str, float]]:
    """One c=1 cell, and the cores each role of the engine's threads used during it (`bench.cpu_use`)."""
    pids, model = _tree(client.pid), worker_pid(client.pid) or 0
    before, t0 = snapshot(pids), time.perf_counter()
    samples, _ = await client.run(1, 4, max_tokens)
    wall = time.perf_counter() - t0
    return samples, cores_used(before, snapshot(pids), wall, client.pid, model)


def _slug(name: str) -> str:
    return re.sub(r"[^\w-]+", "-", name).strip("-")


def step_lines(result: dict[str, Any], roof: dict[str, Any] | None) -> list[str]:
    """TPOT on two threads vs one, and each engine's step split into parts (ms per token)."""
    timed = {c: [v for v in vs if not math.isnan(v)] for c, vs in result["tpot_ms"].items()}
    timed = {c: vs for c, vs in timed.items() if vs}
    med = {c: statistics.median(vs) for c, vs in timed.items()}
    lines = [
        "| engine | TPOT ms, median [min–max] | decode tok/s |" + (" of the roofline |" if roof else ""),
        "| --- | --- | --- |" + (" --- |" if roof else ""),
    ]
    for cores, values in timed.items():
        rate = 1e3 / med[cores]
        share = f" {rate / roof['roofline_tok_s']:.2f} |" if roof else ""
        lines.append(
            f"| {cores} | {med[cores]:.1f} [{min(values):.1f}–{max(values):.1f}] | {rate:.1f} |{share}"
        )
    profiles = result.get("profiles", {})
    shown = [c for c in profiles if profiles[c].get("parts") and c in med]
    if shown:
        lines += [
            "",
            "| part of the step | " + " | ".join(f"{c}: share, ms/token" for c in shown) + " |",
        ]
        lines.append("| --- |" + " --- |" * len(shown))
        for part in PARTS:
            cells = [
                f"{profiles[c]['parts'].get(part, 0.0):.1%}, {profiles[c]['parts'].get(part, 0.0) * med[c]:.1f}"
                for c in shown
            ]
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    use = {name: median_use(cells) for name, cells in result.get("cores_used", {}).items()}
    if any(use.values()):
        lines += ["", "Cores used during the timed cells (CPU s per wall s, median over repeats):", ""]
        lines += cpu_use_lines(use)
    for cores, p in profiles.items():
        if "error" in p:
            lines.append(f"\nProfile of the engine {cores}: {p['error']}")
    return lines
