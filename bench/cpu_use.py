"""Who uses the two cores while an engine decodes (suite `step`): CPU time per thread, by role.

`snapshot` reads every thread's CPU time (psutil) and allowed cores (`os.sched_getaffinity`, Linux)
for a process tree; `cores_used` turns two snapshots around a timed cell into cores used per role (CPU seconds over wall
seconds). The roles tell apart the thread that runs the model (the OpenMP master: the main thread of
the model's process, vLLM's worker or with executor `uni` its engine core), the rest of its OpenMP
team (threads bound to a single core other than the master's, as `KMP_AFFINITY` / `GOMP_CPU_AFFINITY`
bind them), the model process's other threads (the engine core's socket threads with `uni`, which
inherit the master's core), vLLM's other processes (the engine core with `mp`), and the frontend
(`bench.direct`: AsyncLLM's output handling and detokenisation).
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import psutil

ROLES = (
    "model thread (OpenMP master)",
    "OpenMP team, other threads",
    "model process, other threads",
    "other vLLM processes",
    "frontend (AsyncLLM)",
)


@dataclass(frozen=True)
class ThreadTime:
    """One thread's CPU time so far and the cores it may run on."""

    pid: int
    tid: int
    cpu_s: float
    cores: frozenset[int]


def _threads(pid: int) -> list[ThreadTime]:
    out = []
    with contextlib.suppress(psutil.Error):
        for t in psutil.Process(pid).threads():
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                out.append(
                    ThreadTime(pid, t.id, t.user_time + t.system_time, frozenset(os.sched_getaffinity(t.id)))
                )
    return out


def snapshot(pids: Iterable[int]) -> list[ThreadTime]:
    """Every live thread of `pids` (threads or processes that are gone are left out)."""
    return [thread for pid in pids for thread in _threads(pid)]


def role(thread: ThreadTime, frontend: int, model: int, master_cores: frozenset[int]) -> str:
    """Which of ROLES a thread plays (pure)."""
    if thread.pid == frontend:
        return ROLES[4]
    if thread.pid != model:
        return ROLES[3]
    if thread.tid == model:
        return ROLES[0]
    if len(thread.cores) == 1 and not thread.cores <= master_cores:
        return ROLES[1]
    return ROLES[2]


def cores_used(
    before: Sequence[ThreadTime], after: Sequence[ThreadTime], wall_s: float, frontend: int, model: int
) -> dict[str, float]:
    """Cores used per role between two snapshots `wall_s` apart (pure). A thread born in between
    counts from zero."""
    start: Mapping[tuple[int, int], float] = {(t.pid, t.tid): t.cpu_s for t in before}
    master = next((t.cores for t in after if t.tid == model), frozenset())
    used = dict.fromkeys(ROLES, 0.0)
    for thread in after:
        spent = thread.cpu_s - start.get((thread.pid, thread.tid), 0.0)
        used[role(thread, frontend, model, master)] += max(spent, 0.0) / wall_s if wall_s > 0 else 0.0
    return used


def median_use(cells: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each role's median over a system's cells (pure; empty without cells)."""
    cells = [c for c in cells if c]
    return {name: statistics.median(c.get(name, 0.0) for c in cells) for name in ROLES} if cells else {}


def cpu_use_lines(use: Mapping[str, Mapping[str, float]]) -> list[str]:
    """A table of cores used per role, one column per engine (pure; empty without figures)."""
    shown = [name for name, figures in use.items() if figures]
    if not shown:
        return []
    lines = ["| cores used, by thread | " + " | ".join(shown) + " |", "| --- |" + " ---: |" * len(shown)]
    for name in (*ROLES, "all"):
        cells = [sum(use[e].values()) if name == "all" else use[e].get(name, 0.0) for e in shown]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return lines
