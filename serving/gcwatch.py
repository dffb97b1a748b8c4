"""Python's garbage collector in a serving process: time every collection, and freeze the heap
that start-up built.

A gateway with an in-process engine holds about 630,000 GC-tracked objects once it is up (torch,
transformers, vLLM's frontend, the tokenizer). A full (generation 2) collection walks all of
them, and it stops the event loop that serves every stream: 0.34–0.40 s on the (AVX2) development box.
`vllm serve` avoids this the same way (`vllm.utils.gc_utils.freeze_gc_heap`, called once the
server is up): collect, then `gc.freeze()` moves every surviving object to the permanent
generation, which later collections skip.

`GcWatch` reports each collection's pause (`driftgate_gc_pause_seconds{generation}`), so a
stall shows up on /metrics instead of only in a p99.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

PauseHook = Callable[[int, float], None]
"""Called after each collection with its generation (0, 1, 2) and its duration in seconds."""


def freeze_heap() -> int:
    """Collects every generation, then freezes what survived; returns the frozen object count
    (process-wide: every freeze so far). Objects allocated later are collected as usual. Frozen
    objects are still freed by reference counting, but a reference cycle among them is never
    collected: an in-process engine that the supervisor restarts leaves its old frontend's cycles
    behind (at most `server.max_engine_restarts` times)."""
    gc.collect(0)
    gc.collect(1)
    gc.collect(2)
    gc.freeze()
    return gc.get_freeze_count()


class GcWatch:
    """Times every collection of this process with `gc.callbacks` while started. The hook runs
    inside the collector, in whichever thread allocated: it must not take a lock that code which
    allocates may hold. Several apps in one process (tests) each see every collection."""

    def __init__(self, hook: PauseHook, clock: Callable[[], float] = time.perf_counter) -> None:
        self._hook = hook
        self._clock = clock
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = self._clock()
            return
        with contextlib.suppress(Exception):  # a callback must never raise inside the collector
            self._hook(int(info["generation"]), self._clock() - self._began)

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def freeze(self) -> int:
        """`freeze_heap` with this watch paused: its deliberate collections are not serving pauses."""
        was_on = self._callback in gc.callbacks
        self.stop()
        try:
            return freeze_heap()
        finally:
            if was_on:
                self.start()
