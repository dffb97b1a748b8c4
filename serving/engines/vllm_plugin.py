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

It also carries `engine.fused_kernels`. vLLM's CPU platform compiles with inductor's
`cpp.dynamic_threads`, so every fused element-wise kernel opens an OpenMP parallel region sized at
run time, even for the one token of a decode step (about 90 per step for the demo's model; suite
`step`). With `DRIFTGATE_FUSED_KERNELS=serial` in the environment of the process that builds the
engine's `VllmConfig` (the gateway for an in-process engine, `vllm serve` for a remote one),
`CpuPlatform.check_and_update_config` is followed by `cpp.dynamic_threads` off and `cpp.threads`
1: inductor's kernels run on the calling thread; matmuls and attention keep the engine's OpenMP
team. The compile cache keys on `inductor_compile_config`, so each choice has its own artifacts.

And `engine.executor`. On CPU vLLM 0.32 always runs the model in a worker process of its own
(executor `mp`), fed by the engine-core process over a shared-memory queue that the engine core
polls, spinning, while the worker computes; the worker's OpenMP binding is set in the environment
it is spawned with (`OMPProcessManager`). On a node whose cores all go to the worker's OpenMP team
(`VLLM_CPU_OMP_THREADS_BIND` "0-1" on two cores), that spinning process takes turns with the team
at every step. With `DRIFTGATE_EXECUTOR=uni`, the config gets executor `uni` (the model runs in the
engine-core process) and the engine-core process is spawned inside vLLM's own
`OMPProcessManager.configure_omp_envs`, so its OpenMP team is bound as vLLM would bind the worker's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

ENV = "DRIFTGATE_VLLM_AOT_LOAD"
KERNELS_ENV = "DRIFTGATE_FUSED_KERNELS"
EXECUTOR_ENV = "DRIFTGATE_EXECUTOR"
SERIAL_KERNELS = {"cpp.dynamic_threads": False, "cpp.threads": 1}
"""inductor settings of `engine.fused_kernels: serial`: kernels compiled for one thread."""


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


def serial_kernels(vllm_config: Any) -> bool:
    """Applies `engine.fused_kernels: serial` to a checked config where the environment asks for it
    and inductor compiles the model; True if it did."""
    compilation = vllm_config.compilation_config
    if os.environ.get(KERNELS_ENV) != "serial" or compilation.backend != "inductor":
        return False
    compilation.inductor_compile_config.update(SERIAL_KERNELS)
    return True


def inline_executor(vllm_config: Any) -> bool:
    """Applies `engine.executor: uni` to a checked config where the environment asks for it, one
    worker runs the model (no tensor, pipeline or data parallelism) and the CPU platform chose its
    `mp` executor (not one the user named); True if it did."""
    parallel = vllm_config.parallel_config
    single = parallel.world_size == 1 and parallel.data_parallel_size == 1
    if os.environ.get(EXECUTOR_ENV) != "uni" or not single or parallel.distributed_executor_backend != "mp":
        return False
    parallel.distributed_executor_backend = "uni"
    return True


def omp_env_for(vllm_config: Any) -> contextlib.AbstractContextManager[None]:
    """The OpenMP environment vLLM gives its CPU worker, for a process about to be spawned, where that
    process runs the model itself (executor `uni`); nothing otherwise."""
    if vllm_config is None or vllm_config.parallel_config.distributed_executor_backend != "uni":
        return contextlib.nullcontext()
    from vllm.utils.ompmultiprocessing import OMPProcessManager

    return OMPProcessManager(vllm_config).configure_omp_envs(rank=0, local_rank=0)


def _patch_engine_spawn() -> None:
    """Spawns vLLM's engine-core processes inside `omp_env_for` (once per process)."""
    from vllm.v1.engine import utils

    cls: Any = utils.CoreEngineProcManager
    if getattr(cls, "_driftgate_omp_env", False):
        return
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("vllm_config", args[3] if len(args) > 3 else None)
        with omp_env_for(config):
            original(self, *args, **kwargs)

    cls.__init__ = __init__
    cls._driftgate_omp_env = True


def _patch_cpu_platform() -> None:
    """Follows `CpuPlatform.check_and_update_config` (a classmethod) with `serial_kernels` and
    `inline_executor`, once per process. It reads the environment at each call: one gateway builds engines with different
    settings."""
    from vllm.platforms.cpu import CpuPlatform

    if getattr(CpuPlatform.check_and_update_config, "_driftgate", False):
        return
    original = CpuPlatform.check_and_update_config

    def check_and_update_config(cls: type, vllm_config: Any) -> None:
        original(vllm_config)
        serial_kernels(vllm_config)
        inline_executor(vllm_config)

    check_and_update_config._driftgate = True  # type: ignore[attr-defined]
    CpuPlatform.check_and_update_config = classmethod(check_and_update_config)  # type: ignore[method-assign,assignment]


def register() -> None:
    """The entry point vLLM calls in each of its processes (see the module doc)."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        _patch_cpu_platform()
        _patch_engine_spawn()
    if os.environ.get(ENV) != "1":
        return
    import torch.compiler

    torch.compiler.load_compiled_function = wrap_loader(torch.compiler.load_compiled_function)
