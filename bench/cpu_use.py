"""Who uses the two cores while an engine decodes (suite `step`): CPU time per thread, by role.

`snapshot` reads every thread's CPU time and allowed cores from `/proc` (Linux) for a process tree;
`cores_used` turns two snapshots around a timed cell into cores used per role (CPU seconds over wall
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
from pathlib import Path

ROLES = (
    "model thread (OpenMP master)",
    "OpenMP team, other threads",
    "model process, other threads",
    "other vLLM processes",
    "frontend (AsyncLLM)",
)
PROC = Path("/proc")


@dataclass(frozen=True)
class ThreadTime:
    """One thread's CPU time so far and the cores it may run on."""

    pid: int
    tid: int
    cpu_s: float
    cores: frozenset[int]


def parse_cores(text: str) -> frozenset[int]:
    """A `Cpus_allowed_list` value ("0-1,3") as a set of cores (pure)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            out.update(range(int(low), int(high or low) + 1))
    return frozenset(out)


def _thread(pid: int, task: Path, tick: int) -> ThreadTime | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        allowed = next(
            line.split(":", 1)[1]
            for line in (task / "status").read_text().splitlines()
            if line.startswith("Cpus_allowed_list")
        )
        return ThreadTime(
            pid, int(task.name), (int(fields[11]) + int(fields[12])) / tick, parse_cores(allowed)
        )
    return None


def snapshot(pids: Iterable[int]) -> list[ThreadTime]:
    """Every live thread of `pids` (threads or processes that are gone are left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: list[ThreadTime] = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in (PROC / str(pid) / "task").iterdir():
                found = _thread(pid, task, tick)
                if found is not None:
                    out.append(found)
    return out


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
