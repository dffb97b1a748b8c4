"""serving.gcwatch: collections are timed into driftgate_gc_pause_seconds, and a frozen start-up
heap is left out of later collections (what `server.gc_freeze` buys the event loop)."""

from __future__ import annotations

import gc
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


def test_a_failing_hook_never_breaks_a_collection() -> None:
    def boom(generation: int, seconds: float) -> None:
        raise RuntimeError("sink down")

    watch = GcWatch(boom)
    watch.start()
    try:
        assert gc.collect() >= 0
    finally:
        watch.stop()


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
    assert sum(id(o) in ids for o in gc.get_objects(generation=2)) == len(
        heap
    )  # a full collection walks them
    frozen = freeze_heap()
    assert frozen >= len(heap)
    assert gc.get_freeze_count() == frozen
    assert not any(id(o) in ids for o in gc.get_objects())  # no generation holds them any more
    young = _cycles(10)
    del young
    assert gc.collect() >= 10  # garbage made after the freeze is still collected
    assert all(node[0] is node for node in heap)  # and the frozen objects are alive and intact
