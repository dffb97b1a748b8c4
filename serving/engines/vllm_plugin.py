"""A vLLM general plugin that lets vLLM 0.32's AOT compile cache load back on CPU.

vLLM compiles the model at every engine start unless it finds its AOT artifact
(`$VLLM_CACHE_ROOT/torch_compile_cache/torch_aot_compile/…`). On CPU the artifact is saved but
never loads: the CPU platform compiles with plain inductor (`DYNAMO_TRACE_ONCE`), so the loaded
artifact's `compiled_fn` is an ordinary function, and vLLM's loader calls
`compiled_fn.finalize_loading(vllm_config)`, a method only its own serializable function has
("'function' object has no attribute 'finalize_loading'"). It then recompiles, about 45 s of a core.

Turning AOT compile off instead (driftgate before 5131807; `engine.aot_compile: false` now) lets inductor's FX-graph cache do the reuse, but
the model then runs behind dynamo's frame wrapper at every step: single-stream decode measured
12–16 % slower than vLLM's default (commit 5131807; in `make bench`, in-process driftgate against
`vllm serve` at c=1 went from 0.86× to 1.03×, docs/performance.md). With this plugin the engine keeps vLLM's
default AOT path and loads its artifact: warm starts without compiling, and fast steps.

vLLM runs every `vllm.general_plugins` entry point in its API-server, engine-core and worker
processes. This one does nothing unless `DRIFTGATE_VLLM_AOT_LOAD=1` (set by driftgate for the
engines it starts, `serving.engines.vllm_engine.compile_cache_env`), so other vLLM runs in the same
environment are untouched. The patch adds a no-op `finalize_loading` to a loaded artifact whose
compiled function lacks one; everything else (source-hash check, guards) stays vLLM's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV = "DRIFTGATE_VLLM_AOT_LOAD"


def _finalized(compiled: Any) -> None:
    """Gives a plain compiled function the no-op `finalize_loading` vLLM's loader calls."""
    if not hasattr(compiled, "finalize_loading"):

        def finalize_loading(vllm_config: Any) -> None:
            """Nothing to finalize: inductor's compiled function is ready once loaded."""

        compiled.finalize_loading = finalize_loading


def wrap_loader(load: Callable[..., Any]) -> Callable[..., Any]:
    """`torch.compiler.load_compiled_function` whose result always has a finalizable function."""
    if getattr(load, "_driftgate", False):
        return load

    def load_compiled_function(*args: Any, **kwargs: Any) -> Any:
        loaded = load(*args, **kwargs)
        artifacts = getattr(loaded, "_artifacts", None)
        compiled = getattr(artifacts, "compiled_fn", None)
        if compiled is not None:
            _finalized(compiled)
        return loaded

    load_compiled_function._driftgate = True  # type: ignore[attr-defined]
    return load_compiled_function


def register() -> None:
    """The entry point vLLM calls in each of its processes (see the module doc)."""
    if os.environ.get(ENV) != "1":
        return
    import torch.compiler

    torch.compiler.load_compiled_function = wrap_loader(torch.compiler.load_compiled_function)
