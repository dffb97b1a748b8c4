"""serving.gcwatch: collections are timed into driftgate_gc_pause_seconds, and a frozen start-up
heap is left out of later collections (what `server.gc_freeze` buys the event loop)."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from serving.gcwatch import GcWatch, freeze_heap
from serving.metrics import PrometheusSink


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Gives the test process its heap back: frozen objects return to the oldest generation."""
    yield
    gc.unfreeze()


def _cycles(n: int) -> list[list[object]]:
    """`n` GC-tracked objects that only a collection could free if they were dropped."""
    heap: list[list[object]] = []
    for _ in range(n):
        node: list[object] = []
        node.append(node)
        heap.append(node)
    return heap


def test_every_collection_is_timed_by_generation_until_stopped() -> None:
    seen: list[tuple[int, float]] = []
    watch = GcWatch(lambda g, s: seen.append((g, s)))
    watch.start()
    watch.start()  # once only
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        watch.stop()
    assert [g for g, _ in seen] == [0, 2]
    assert all(s >= 0.0 for _, s in seen)
    gc.collect()
    assert len(seen) == 2  # stopped: no more records
    assert watch._callback not in gc.callbacks


def test_a_failing_hook_never_breaks_a_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    escaped: list[object] = []  # CPython reports an exception out of a gc callback as "unraisable"
    monkeypatch.setattr(sys, "unraisablehook", escaped.append)

    def boom(generation: int, seconds: float) -> None:
        calls.append(generation)
        raise RuntimeError("sink down")

    watch = GcWatch(boom)
    watch.start()
    try:
        gc.collect()
    finally:
        watch.stop()
    assert calls == [2] and escaped == []


def test_the_freeze_is_not_counted_as_a_pause(unfrozen: None) -> None:
    seen: list[int] = []
    watch = GcWatch(lambda g, s: seen.append(g))
    watch.start()
    try:
        assert watch.freeze() > 0
        gc.collect(0)
    finally:
        watch.stop()
    assert seen == [0]  # only the collection after the freeze


def test_a_collection_while_a_scrape_holds_the_histograms_lock_does_not_deadlock() -> None:
    """`labels()` copies a dict under the parent metric's lock: a collection started there runs
    the hook in the same thread, which must not need that lock again."""
    sink = PrometheusSink(CollectorRegistry())
    watch = GcWatch(sink.gc_pause)

    def scrape_then_collect() -> None:
        with sink.gc_pauses._lock:
            gc.collect(0)

    watch.start()
    try:
        worker = threading.Thread(target=scrape_then_collect, daemon=True)
        worker.start()
        worker.join(10)
    finally:
        watch.stop()
    assert not worker.is_alive(), "the gc hook waited for a lock its own thread holds"


def test_pauses_reach_the_prometheus_histogram() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(registry)
    for g in ("0", "1", "2"):  # every generation is exported from the start
        assert registry.get_sample_value("driftgate_gc_pause_seconds_count", {"generation": g}) == 0
    watch = GcWatch(sink.gc_pause)
    watch.start()
    try:
        gc.collect(2)
        gc.collect(2)
    finally:
        watch.stop()
    assert registry.get_sample_value("driftgate_gc_pause_seconds_count", {"generation": "2"}) == 2
    sink.gc_frozen(1234)
    assert registry.get_sample_value("driftgate_gc_frozen_objects") == 1234


@pytest.mark.usefixtures("unfrozen")
def test_a_frozen_heap_is_skipped_by_later_collections() -> None:
    heap = _cycles(50_000)
    ids = {id(node) for node in heap}
    gc.collect()
    walked = sum(id(o) in ids for o in gc.get_objects(generation=2))
    assert walked == len(heap)  # a full collection walks them
    frozen = freeze_heap()
    assert frozen >= len(heap)
    # frozen objects that other threads (the session engine's) drop are freed by reference counting and
    # leave the permanent generation, so the count can only shrink, never below the frozen heap
    assert len(heap) <= gc.get_freeze_count() <= frozen
    assert not any(id(o) in ids for o in gc.get_objects())  # no generation holds them any more
    young = _cycles(10)
    del young
    assert gc.collect() >= 10  # garbage made after the freeze is still collected
    assert all(node[0] is node for node in heap)  # and the frozen objects are alive and intact
