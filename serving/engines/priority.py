"""An engine's CPU priority (`engine.nice`): its processes run at a lower priority than the gateway.

An in-process engine shares its cores with the gateway's event loop. Under load, the engine-core
and worker threads are runnable almost all the time, and the kernel's scheduler then preempts the
gateway's loop between two of its events: a stream's next token waits for the loop's next slice.
That shows in the gateway's added-latency tail (docs/performance.md). A positive niceness for the
engine lets the loop run as soon as it is woken while the engine still gets every idle cycle.

- In-process engines: vLLM starts an engine-core process (and, on CPU, its worker) per `AsyncLLM`.
  `renice_tree` sets every thread of those processes and of their children (Linux niceness is per
  thread; threads started later inherit their creator's), once the engine is ready.
- Servers `driftgate variant serve` starts: the command runs under `nice -n` (`nice_prefix`), so
  everything it starts inherits it.

Only raising is done (0-19), which needs no privilege; a thread already nicer is left alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import psutil

MAX_NICE = 19


def nice_prefix(nice: int) -> list[str]:
    """The command prefix that runs a server at niceness `nice` (none for 0)."""
    return ["nice", "-n", str(nice)] if nice else []


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def renice_threads(tids: Iterable[int], nice: int) -> int:
    """Raises each thread's niceness to `nice` (never lowers it); returns how many changed.
    Threads that exit meanwhile are skipped."""
    changed = 0
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
    return changed


def renice_tree(pids: Iterable[int], nice: int) -> int:
    """Every thread of the processes `pids` and of their descendants to niceness `nice`
    (`renice_threads`); returns how many threads changed. Gone processes are skipped."""
    changed = 0
    for pid in pids:
        try:
            processes = _tree(pid)
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                changed += renice_threads((t.id for t in process.threads()), nice)
    return changed


def thread_nices(pid: int) -> list[int]:
    """The niceness of every thread of `pid` and its descendants (for tests and logs)."""
    out: list[int] = []
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            for t in process.threads():
                with contextlib.suppress(ProcessLookupError):
                    out.append(os.getpriority(os.PRIO_PROCESS, t.id))
    return out
