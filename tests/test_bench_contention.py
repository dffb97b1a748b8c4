"""The contention suite: real worker processes pinned to real cores, and its pure parts."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from bench.contention import rates, run_contention, run_workers, shared_ratios
from bench.load import PROMPTS, Sample, closed_loop_until
from bench.report import contention_lines


def test_shared_ratios_are_each_cores_rate_with_the_others_busy_over_alone() -> None:
    assert shared_ratios([30.0, 20.0], [15.0, 20.0]) == [0.5, 1.0]
    assert shared_ratios([0.0], [1.0])[0] != shared_ratios([0.0], [1.0])[0]  # nan: no rate alone


CORES = sorted(os.sched_getaffinity(0))[:2]


@pytest.mark.skipif(len(CORES) < 2, reason="needs two cores")
def test_workers_run_pinned_one_per_core_and_at_once() -> None:
    ready = threading.Event()
    records = run_workers("read", CORES, seconds=0.5, ready=ready)
    assert ready.is_set()
    assert [r["core"] for r in records] == CORES
    assert [r["affinity"] for r in records] == [[c] for c in CORES]  # each pinned to its own core
    assert max(r["start"] for r in records) < min(r["end"] for r in records)  # timed parts overlap
    assert all(1e8 < r["rate"] < 1e13 for r in records), records  # bytes/s: a real read, not a stub
    assert rates("compute", CORES[:1], seconds=0.2)[CORES[0]] > 1e8  # flop/s


def test_a_stop_ends_the_workers_early_and_bad_requests_fail_fast() -> None:
    ready, stop = threading.Event(), threading.Event()

    def stop_mid_run() -> None:
        ready.wait(60)
        time.sleep(0.3)
        stop.set()

    threading.Thread(target=stop_mid_run).start()
    t0 = time.monotonic()
    (record,) = run_workers("read", CORES[:1], seconds=60.0, ready=ready, stop=stop)
    assert time.monotonic() - t0 < 30 and 0.2 <= record["end"] - record["start"] < 5  # stopped mid-run
    with pytest.raises(ValueError, match="unknown kind 'nothing'"):  # refused before any process starts
        run_workers("nothing", CORES[:1])
    outside = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(ValueError, match="not in this process's CPU set"):
        run_workers("read", [outside])


def test_run_contention_reports_each_kind_alone_and_at_once() -> None:
    lines: list[str] = []
    result = run_contention(1, lines.append, cores=CORES, seconds=0.2)
    assert [r["kind"] for r in result["rounds"]] == ["read", "compute"]
    for r in result["rounds"]:
        assert len(r["alone"]) == len(r["both"]) == len(r["ratios"]) == len(CORES)
        assert all(x > 0 for x in (*r["alone"], *r["both"]))
    assert len(lines) == 2 and "GB/s" in lines[0] and "Gflop/s" in lines[1]
    table = contention_lines(result)
    assert table[0].startswith("| kind | core |") and len(table) == 2 + 2 * len(CORES)


def test_contention_lines_take_medians_over_rounds() -> None:
    rounds = [
        {"kind": k, "alone": [a * 1e9, a * 1e9], "both": [b * 1e9, b * 1e9], "ratios": [b / a, b / a]}
        for k, a, b in (
            ("read", 30.0, 18.0),
            ("read", 32.0, 16.0),
            ("read", 28.0, 21.0),
            ("compute", 200.0, 200.0),
        )
    ]
    text = "\n".join(contention_lines({"cores": [0, 1], "rounds": rounds}))
    assert "| read | 1 | 30.0 [28.0–32.0] GB/s | 18.0 [16.0–21.0] GB/s | 0.600 [0.500–0.750] |" in text
    assert (
        "| compute | 0 | 200.0 [200.0–200.0] Gflop/s | 200.0 [200.0–200.0] Gflop/s | 1.000 [1.000–1.000] |"
        in text
    )


async def test_closed_loop_until_keeps_every_worker_busy_until_stopped() -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def call(prompt: str) -> Sample:
        seen.append(prompt)
        await asyncio.sleep(0.01)
        return Sample(0.01, 0.005, 4)

    asyncio.get_running_loop().call_later(0.2, stop.set)
    samples, seconds = await closed_loop_until(call, 3, stop)
    assert seconds >= 0.2 and len(samples) == len(seen) >= 3 * 10
    assert set(seen) == set(PROMPTS)  # the workers go through the prompts, not one of them
