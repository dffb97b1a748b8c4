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

Niceness only weighs threads against others in the same scheduling group. With Linux's autogroup
scheduling (`/proc/sys/kernel/sched_autogroup_enabled`), each session is its own group, and a
cgroup with a CPU controller (a container) is one too. An in-process engine is in the gateway's
session, so the setting works there (`make bench` suite `nice`). A server in a session or a
container of its own competes with the gateway as a group, whatever its threads' niceness: there
`engine.nice` changes nothing, and CPU shares (cgroup `cpu.weight`, Kubernetes requests) are the
lever instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence

import psutil

log = logging.getLogger(__name__)

PASSES = 3
"""Passes over a tree: a thread started during one by a thread not yet reniced is caught by the next."""


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
    (`renice_threads`), in passes until one changes nothing; returns how many threads changed.
    Gone processes are skipped."""
    pids = list(pids)
    changed = 0
    for _ in range(PASSES):
        step = _renice_pass(pids, nice)
        changed += step
        if not step:
            break
    return changed


def _renice_pass(pids: Iterable[int], nice: int) -> int:
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


def renice_engine(name: str, pids: Sequence[int], nice: int) -> None:
    """`engine.nice` applied to a started engine's processes (`serving.engines.priority`); never
    raises: the engine runs either way, and a failure is a warning."""
    if not pids:
        log.warning("variant %s: engine.nice: vLLM's engine processes were not found; not reniced", name)
        return
    try:
        changed = renice_tree(pids, nice)
    except (OSError, psutil.Error) as exc:
        log.warning("variant %s: engine.nice %d not applied: %s", name, nice, exc)
        return
    log.info("variant %s: %d engine threads (processes %s) at nice %d", name, changed, list(pids), nice)


def thread_nices(pid: int) -> list[int]:
    """The niceness of every thread of `pid` and its descendants (for tests and logs)."""
    out: list[int] = []
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            for t in process.threads():
                with contextlib.suppress(ProcessLookupError):
                    out.append(os.getpriority(os.PRIO_PROCESS, t.id))
    return out
