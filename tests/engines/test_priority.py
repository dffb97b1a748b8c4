"""`engine.nice` on real processes: every thread of a process tree reniced, never lowered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from serving.engines import priority
from serving.engines.priority import nice_prefix, renice_engine, renice_tree, thread_nices

BASE = os.nice(0)
"""This test run's own niceness: targets are set above it (only raising is done)."""
pytestmark = pytest.mark.skipif(BASE > 10, reason="the test runner is already at nice > 10")

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
    assert len(before) >= 4 + 3 and set(before) == {BASE}
    target = BASE + 7
    changed = renice_tree([tree], target)
    assert changed == len(before) and set(thread_nices(tree)) == {target}
    assert os.nice(0) == BASE  # this process is left alone
    # Never lowered (that would need a privilege), and a second pass changes nothing.
    assert renice_tree([tree], target - 4) == 0 and renice_tree([tree], target) == 0
    assert set(thread_nices(tree)) == {target}


def test_renice_engine_logs_and_never_raises(
    tree: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("INFO", logger="serving.engines.priority")
    renice_engine("dense", [], BASE + 3)  # no processes recorded: a warning, nothing reniced
    renice_engine("dense", [tree], BASE + 3)
    assert set(thread_nices(tree)) == {BASE + 3}

    def refused(pids: object, nice: int) -> int:  # as setpriority answers without the right
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(priority, "renice_tree", refused)
    renice_engine("dense", [tree], BASE + 5)  # a warning: the engine runs either way
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "variant dense: engine.nice: vLLM's engine processes were not found; not reniced"
    assert messages[1].startswith(
        f"variant dense: {len(thread_nices(tree))} engine threads (processes [{tree}])"
    )
    assert messages[2].startswith(f"variant dense: engine.nice {BASE + 5} not applied: [Errno 1]")


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
    assert int(out.stdout) == BASE + 4
