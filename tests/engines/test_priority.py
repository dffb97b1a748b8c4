"""`engine.nice` on real processes: every thread of a process tree reniced, never lowered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from serving.engines.priority import nice_prefix, renice_tree, thread_nices

# A process with three extra threads and a child process with two: the shape of vLLM's engine
# core (threads) and its worker (a child with threads).
TREE = """
import subprocess, sys, threading, time
child = subprocess.Popen([sys.executable, "-c",
    "import threading, time\\n[threading.Thread(target=time.sleep, args=(60,), daemon=True).start() for _ in range(2)]\\nprint('ok', flush=True)\\ntime.sleep(60)"],
    stdout=subprocess.PIPE)
child.stdout.readline()
[threading.Thread(target=time.sleep, args=(60,), daemon=True).start() for _ in range(3)]
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc.pid
    finally:
        for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            p.kill()
        proc.wait(10)


def test_renice_tree_sets_every_thread_of_every_process(tree: int) -> None:
    before = thread_nices(tree)
    assert len(before) >= 4 + 3 and set(before) == {os.getpriority(os.PRIO_PROCESS, 0)}
    changed = renice_tree([tree], 7)
    assert changed == len(before) and set(thread_nices(tree)) == {7}
    assert os.getpriority(os.PRIO_PROCESS, 0) != 7  # this process is left alone
    # Never lowered (that would need a privilege), and a second pass changes nothing.
    assert renice_tree([tree], 3) == 0 and renice_tree([tree], 7) == 0
    assert set(thread_nices(tree)) == {7}


def test_renice_tree_skips_gone_processes() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    time.sleep(0.1)
    assert renice_tree([proc.pid], 5) == 0


def test_nice_prefix_runs_a_command_at_that_niceness() -> None:
    assert nice_prefix(0) == []
    out = subprocess.run(
        [*nice_prefix(4), sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True
    )
    assert int(out.stdout) == os.nice(0) + 4
