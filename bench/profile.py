"""Where the gateway process spends its CPU under load: py-spy samples the running gateway (not
its engine-core children) while the bench drives it, once as a flame graph (SVG) and once as
collapsed stacks, which `top_frames` folds into a table of the heaviest functions.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


async def profile_gateway(
    pid: int, out: Path, load: Callable[[], Awaitable[Any]], seconds: int = 20
) -> dict[str, Any]:
    """A flame graph (`gateway-flame.svg`) and the top functions of the gateway under `load`."""
    svg, raw = out / "gateway-flame.svg", out / "gateway-stacks.txt"
    if not await record(pid, svg, seconds, "flamegraph", load):
        return {"error": "py-spy is not available or could not attach"}
    await record(pid, raw, seconds, "raw", load)
    text = await asyncio.to_thread(raw.read_text) if raw.exists() else ""
    top = [{"function": f, "self": s, "inclusive": i} for f, s, i in top_frames(text)]
    return {"flame_graph": str(svg), "stacks": str(raw), "top": top}


async def record(
    pid: int,
    out: Path,
    seconds: int,
    fmt: str,
    load: Callable[[], Awaitable[Any]],
    native: bool = False,
    rate: int = 200,
    threads: bool = False,
) -> bool:
    """Samples `pid` for `seconds` while `load()` runs (repeated until the recording ends); with
    `native`, C/C++ frames too (which stops the process at each sample: keep `rate` low); with
    `threads`, each stack starts with its thread's frame (`thread_of`)."""
    tool = py_spy()
    if tool is None:
        return False
    how = (["--native"] if native else ["--nonblocking"]) + (["--threads"] if threads else [])
    spy = await asyncio.create_subprocess_exec(
        tool, "record", "-p", str(pid), "-d", str(seconds), "-r", str(rate), "-f", fmt, "-o", str(out),
        *how,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    waiter = asyncio.create_task(spy.wait())
    while not waiter.done():
        await load()
    return await waiter == 0


def stacks(raw: str) -> list[tuple[list[str], int]]:
    """(frames, samples) of each line of py-spy's collapsed/raw output ("f;g;h count", outermost
    frame first); other lines skipped (pure)."""
    out = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def thread_of(frames: list[str]) -> tuple[str, list[str]]:
    """A stack recorded with `threads` split into its thread's frame and the stack proper; ("", stack)
    for one recorded without (pure)."""
    if frames and frames[0].startswith("thread ("):
        return frames[0], frames[1:]
    return "", frames


def top_frames(collapsed: str, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, self share, inclusive share) of the `n` heaviest functions by self time, from
    py-spy's collapsed stacks ("frame;frame;frame count" per line). Idle samples (the event loop
    waiting in select/epoll) are counted and reported as their own row."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for stack, k in stacks(collapsed):
        total += k
        frames = [f.split(" (")[0] for f in stack]
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + k
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + k
    if not total:
        return []
    heavy = sorted(self_time.items(), key=lambda kv: -kv[1])[:n]
    return [(f, s / total, inclusive[f] / total) for f, s in heavy]
