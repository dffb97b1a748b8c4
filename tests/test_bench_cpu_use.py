"""bench.cpu_use: CPU time per thread, sorted into the roles of an engine's threads."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.cpu_use import (
    ROLES,
    ThreadTime,
    cores_used,
    cpu_use_lines,
    median_use,
    role,
    snapshot,
)

FRONTEND, MODEL = 100, 200
MASTER, TEAM, OTHER, VLLM, FRONT = ROLES


@pytest.mark.parametrize(
    ("pid", "tid", "cores", "expected"),
    [
        (FRONTEND, 101, {0, 1}, FRONT),
        (300, 300, {0, 1}, VLLM),  # the engine core of an `mp` engine
        (MODEL, MODEL, {0}, MASTER),
        (MODEL, 201, {1}, TEAM),  # an OpenMP thread bound to its own core
        (MODEL, 202, {0}, OTHER),  # a socket thread that inherited the master's core
        (MODEL, 203, {0, 1}, OTHER),
    ],
)
def test_each_thread_gets_its_role(pid: int, tid: int, cores: set[int], expected: str) -> None:
    assert role(ThreadTime(pid, tid, 0.0, frozenset(cores)), FRONTEND, MODEL, frozenset({0})) == expected


def test_cores_used_is_cpu_time_over_wall_time_per_role() -> None:
    def t(pid: int, tid: int, cpu: float, cores: set[int]) -> ThreadTime:
        return ThreadTime(pid, tid, cpu, frozenset(cores))

    before = [t(MODEL, MODEL, 10.0, {0}), t(MODEL, 201, 5.0, {1}), t(FRONTEND, FRONTEND, 1.0, {0, 1})]
    after = [
        t(MODEL, MODEL, 11.9, {0}),
        t(MODEL, 201, 6.8, {1}),
        t(MODEL, 202, 0.02, {0}),  # born during the cell
        t(FRONTEND, FRONTEND, 1.05, {0, 1}),
    ]
    used = cores_used(before, after, 2.0, FRONTEND, MODEL)
    assert used[MASTER] == pytest.approx(0.95)
    assert used[TEAM] == pytest.approx(0.9)
    assert used[OTHER] == pytest.approx(0.01)
    assert used[FRONT] == pytest.approx(0.025)
    assert used[VLLM] == 0.0


def test_the_table_gives_each_role_and_the_sum_per_engine() -> None:
    cells = [dict.fromkeys(ROLES, 0.1), dict.fromkeys(ROLES, 0.3), dict.fromkeys(ROLES, 0.2)]
    use = {"cores 0-1": median_use(cells), "broken": median_use([{}])}
    lines = cpu_use_lines(use)
    assert lines[0] == "| cores used, by thread | cores 0-1 |"
    assert f"| {MASTER} | 0.200 |" in lines
    assert lines[-1] == "| all | 1.000 |"
    assert cpu_use_lines({"broken": {}}) == []


def test_a_busy_thread_of_this_process_is_seen_with_its_cores() -> None:
    stop = threading.Event()
    ids: list[int] = []

    def burn() -> None:
        ids.append(threading.get_native_id())
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=burn)
    worker.start()
    try:
        before = snapshot([os.getpid()])
        time.sleep(0.5)
        after = snapshot([os.getpid()])
    finally:
        stop.set()
        worker.join()
    mine = {t.tid: t for t in after}
    assert ids[0] in mine and mine[ids[0]].cores == frozenset(os.sched_getaffinity(0))
    spent = mine[ids[0]].cpu_s - next(t.cpu_s for t in before if t.tid == ids[0])
    assert spent > 0.05
    assert snapshot([2**22 + 7]) == []  # a process that does not exist
