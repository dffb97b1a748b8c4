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

Each worker is a process of its own pinned to its core; the timed part starts when every worker is up, so
"both" means both reading (or computing) at once. `run_workers` is also how the mirror suite runs a
pure memory reader beside the primary.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

KINDS = ("read", "compute")


def _task(kind: str) -> tuple[Callable[[], object], float]:
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


def _worker(core: int, kind: str, seconds: float, go: Any, halt: Any, out: Any) -> None:
    os.sched_setaffinity(0, {core})
    import torch

    torch.set_num_threads(1)
    step, size = _task(kind)
    for _ in range(3):  # touch every page, warm the caches
        step()
    out.put(("up", core))
    go.wait()
    t0 = time.perf_counter()
    start = time.monotonic()
    n = 0
    while time.perf_counter() - t0 < seconds and not halt.is_set():
        step()
        n += 1
    record = {
        "core": core,
        "rate": n * size / (time.perf_counter() - t0),
        "affinity": sorted(os.sched_getaffinity(0)),
    }
    out.put(("done", {**record, "start": start, "end": time.monotonic()}))


def _dead(procs: Sequence[Any]) -> None:
    """Raises if a worker has exited with an error."""
    dead = [p for p in procs if p.exitcode not in (None, 0)]
    if dead:
        raise RuntimeError(f"a contention worker exited with {dead[0].exitcode}")


def _until(stop: threading.Event, seconds: float, procs: Sequence[Any]) -> None:
    """Waits for `stop` or `seconds`, raising at once if a worker dies meanwhile."""
    deadline = time.monotonic() + seconds
    while not stop.wait(0.2) and time.monotonic() < deadline:
        _dead(procs)


def _collect(out: Any, procs: Sequence[Any], tag: str, n: int, timeout_s: float) -> list[Any]:
    """`n` messages tagged `tag` from the workers; raises at once if a worker has died."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        try:
            kind, body = out.get(timeout=0.2)
        except queue.Empty:
            _dead(procs)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"contention workers: {len(got)} of {n} {tag!r} in {timeout_s:.0f} s"
                ) from None
            continue
        if kind == tag:
            got.append(body)
    return got


def run_workers(
    kind: str,
    cores: Sequence[int],
    seconds: float = 3.0,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Runs `kind` on each of `cores` at once, for `seconds` or until `stop` is set: one record per
    core (`rate` in bytes/s or flop/s, the `affinity` it ran with, monotonic `start` and `end`).
    `ready` is set when the timed part starts (after the workers' start-up)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    missing = sorted(set(cores) - os.sched_getaffinity(0))
    if missing:
        raise ValueError(
            f"cores {missing} are not in this process's CPU set {sorted(os.sched_getaffinity(0))}"
        )
    ctx = multiprocessing.get_context("spawn")
    go, halt, out = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(c, kind, seconds, go, halt, out), daemon=True) for c in cores]
    try:
        for p in procs:
            p.start()
        _collect(out, procs, "up", len(cores), 120.0)
        go.set()
        if ready is not None:
            ready.set()
        if stop is not None:
            _until(stop, seconds, procs)
            halt.set()
        return sorted(
            _collect(out, procs, "done", len(cores), seconds + 60.0), key=lambda r: cores.index(r["core"])
        )
    finally:
        halt.set()  # first: a worker still waiting for `go` then does no work and exits
        go.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def rates(kind: str, cores: Sequence[int], seconds: float = 3.0) -> dict[int, float]:
    """Each core's rate running `kind` on all of `cores` at once for `seconds`."""
    return {r["core"]: float(r["rate"]) for r in run_workers(kind, cores, seconds)}


def shared_ratios(alone: Sequence[float], both: Sequence[float]) -> list[float]:
    """Each core's rate with the other cores busy over its rate alone, core by core (pure)."""
    return [b / a if a > 0 else float("nan") for a, b in zip(alone, both, strict=True)]


def run_contention(
    repeats: int, log: Callable[[str], None], cores: Sequence[int] = (0, 1), seconds: float = 3.0
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
