"""What one core's work costs the other core on this box: memory reads and vector compute, each
measured on one core alone and on both cores at once.

The mirror suite puts the primary on core 0 and the shadow on core 1: "a core of its own". A
core is not all an engine uses. A decode step at batch 1 reads every weight once, so it also
needs memory bandwidth, which the two cores share; and on a VM the two vCPUs might be hardware
threads of one physical core, sharing its vector units. This suite tells the two apart:

- `read`: torch sums a 512 MiB fp32 tensor, one thread (bytes/s). A core alone can take most of the
  box's bandwidth; two cores reading at once split it.
- `compute`: torch multiplies two 256 × 256 bf16 matrices that stay in cache, one thread (flop/s).
  If the vCPUs were one core's hardware threads, this would drop when both run.

Each worker is a process of its own pinned to its core; the timed part starts on a barrier, so
"both" means both reading (or computing) at once. `rates` is also how the mirror suite runs a
pure memory reader beside the primary.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

KINDS = ("read", "compute")


def _task(kind: str) -> tuple[Any, float]:
    """A unit of work and the bytes (read) or flops (compute) it does."""
    import torch

    if kind == "read":
        x = torch.ones((512 << 20) // 4, dtype=torch.float32)
        return (lambda: x.sum()), float(x.numel() * 4)
    if kind == "compute":
        a = torch.randn(256, 256, dtype=torch.bfloat16)
        b = torch.randn(256, 256, dtype=torch.bfloat16)
        return (lambda: torch.mm(a, b)), float(2 * 256**3)
    raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")


def _worker(core: int, kind: str, seconds: float, start: Any, out: Any) -> None:
    os.sched_setaffinity(0, {core})
    import torch

    torch.set_num_threads(1)
    step, size = _task(kind)
    for _ in range(3):  # touch every page, warm the caches
        step()
    start.wait()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    out.put((core, n * size / (time.perf_counter() - t0)))


def rates(
    kind: str, cores: Sequence[int], seconds: float = 3.0, ready: threading.Event | None = None
) -> dict[int, float]:
    """Runs `kind` on each of `cores` at once for `seconds`: each core's rate (bytes/s or flop/s).
    `ready` is set when the timed part starts (after the workers' start-up)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(cores) + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(c, kind, seconds, start, out), daemon=True) for c in cores]
    for p in procs:
        p.start()
    try:
        start.wait(timeout=120)
        if ready is not None:
            ready.set()
        got = dict(out.get(timeout=seconds + 120) for _ in cores)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return got


def shared_ratios(alone: Sequence[float], both: Sequence[float]) -> list[float]:
    """Each core's rate with the other cores busy over its rate alone, core by core (pure)."""
    return [b / a if a > 0 else float("nan") for a, b in zip(alone, both, strict=True)]


def run_contention(
    repeats: int, log: Any, cores: Sequence[int] = (0, 1), seconds: float = 3.0
) -> dict[str, Any]:
    """`repeats` rounds of: each kind on each core alone, then on all `cores` at once (rates listed
    in the order of `cores`)."""
    rounds: list[dict[str, Any]] = []
    for rep in range(repeats):
        for kind in KINDS:
            alone = [rates(kind, [c], seconds)[c] for c in cores]
            together = rates(kind, cores, seconds)
            both = [together[c] for c in cores]
            ratios = shared_ratios(alone, both)
            rounds.append({"repeat": rep, "kind": kind, "alone": alone, "both": both, "ratios": ratios})
            unit = "GB/s" if kind == "read" else "Gflop/s"
            log(
                f"  r{rep} {kind:<7} alone {' '.join(f'{r / 1e9:6.1f}' for r in alone)}"
                f"  both {' '.join(f'{r / 1e9:6.1f}' for r in both)} {unit}"
            )
    return {"cores": list(cores), "rounds": rounds}
