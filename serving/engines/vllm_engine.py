"""`VllmEngine`: the Engine Protocol on vLLM's in-process `AsyncLLM` (one engine per variant).

vLLM spawns its engine-core process when `AsyncLLM` is built, and that process reads its CPU
settings from the environment it inherits: we set `VLLM_CPU_OMP_THREADS_BIND` (the variant's
cores) from the start of each engine's construction until its engine-core process has been
started, one engine at a time (`_SPAWN_LOCK`); the rest of the construction (model load,
compilation, warm-up: a minute or more) runs concurrently with other engines'. The KV-cache
size goes in as the engine argument `kv_cache_memory_bytes` (fractional GiB allowed), and
`VLLM_CPU_KVCACHE_SPACE` is removed meanwhile so it cannot override it. Compiled kernels are
cached under `$DRIFTGATE_HOME/compile-cache` (see `compile_cache_env`). With `engine.nice`, the
engine's processes are reniced once it is ready (`serving.engines.priority`).

Building an `AsyncLLM` takes a minute or more (model load, compilation, warm-up) and blocks its
thread: it runs in a worker thread so the event loop keeps answering (health says NOT_SERVING
meanwhile). vLLM supports construction outside a running loop: its output handler then starts
lazily; we start it at once back on the loop so an engine-core failure is seen before any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from serving.config import VariantConfig
from serving.engines.base import Chunk, SamplingSpec, TokenLogprobs
from serving.engines.cpu import cpu_flags, dtype_advice, resolve_dtype
from serving.engines.preload import preload_env
from serving.engines.priority import renice_engine
from serving.engines.vllm_plugin import ENV as AOT_LOAD_ENV
from serving.engines.vllm_plugin import EXECUTOR_ENV, KERNELS_ENV
from serving.errors import EngineFailure, GatewayError, InvalidArgument, Unavailable
from serving.home import OFFLINE_ENV, driftgate_home

log = logging.getLogger(__name__)

_SPAWN_LOCK = threading.Lock()
"""Held from setting an engine's environment until its engine-core process is started."""
_building = threading.local()
"""`spawned`: what the thread building an engine calls once its engine-core process is started."""


@contextlib.contextmanager
def _scoped_env(values: Mapping[str, str | None]) -> Iterator[None]:
    """Sets (or, for None, removes) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compile_cache_env(aot: bool = True) -> dict[str, str]:
    """Where vLLM and torch inductor keep compiled code: `$DRIFTGATE_HOME/compile-cache`, so that a
    warm start reuses it (always set: importing torch pre-fills TORCHINDUCTOR_CACHE_DIR with a /tmp
    default). `DRIFTGATE_COMPILE_CACHE` moves it (the bench's cold start-up uses a fresh one).

    With `aot` (vLLM's default, `engine.aot_compile`), vLLM saves one AOT artifact per model and
    `DRIFTGATE_VLLM_AOT_LOAD` turns on driftgate's vLLM plugin (`serving.engines.vllm_plugin`) that
    lets it load back on CPU, which vLLM 0.32 alone never does: single-stream decode measured 12–16 %
    faster than without AOT. Without it, inductor's FX-graph cache does the reuse; it is shared by
    variants of one architecture, so a cold start of several of them is about twice as fast."""
    root = Path(os.environ.get("DRIFTGATE_COMPILE_CACHE") or driftgate_home() / "compile-cache")
    return {
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
        "VLLM_USE_AOT_COMPILE": "1" if aot else "0",
        AOT_LOAD_ENV: "1" if aot else "0",
    }


def engine_env(variant: VariantConfig) -> dict[str, str | None]:
    """The per-engine environment vLLM's CPU backend reads in the engine-core process (offline mode
    and the compile cache included); `VLLM_CPU_KVCACHE_SPACE` is removed (None) in favour of
    `kv_cache_memory_bytes`. `LD_PRELOAD` is always set (see `serving.engines.preload`), so that
    the libgomp vLLM adds to this process's own while building is undone with the scope.
    `DRIFTGATE_FUSED_KERNELS` and `DRIFTGATE_EXECUTOR` are `engine.fused_kernels` and
    `engine.executor`, read by driftgate's vLLM plugin when the engine's config is built and its
    engine-core process spawned (`serving.engines.vllm_plugin`)."""
    return {
        **OFFLINE_ENV,
        **compile_cache_env(variant.engine.aot_compile),
        **preload_env(variant.engine.preload),
        "VLLM_CPU_OMP_THREADS_BIND": variant.engine.cpu_cores,
        "VLLM_CPU_KVCACHE_SPACE": None,
        KERNELS_ENV: variant.engine.fused_kernels.value,
        EXECUTOR_ENV: variant.engine.executor.value,
    }


def _positions(raw: Sequence[Any] | None) -> list[dict[int, float]]:
    """vLLM logprobs (one mapping token_id -> Logprob per position) as plain dicts."""
    if not raw:
        return []
    return [{int(t): float(lp.logprob) for t, lp in pos.items()} if pos else {} for pos in raw]


def _map_error(exc: Exception) -> GatewayError:
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, VLLMValidationError | ValueError):
        return InvalidArgument(str(exc))
    if isinstance(exc, EngineDeadError):
        return Unavailable("the engine is not running")
    return EngineFailure(f"engine error: {type(exc).__name__}")


def _hook_spawn() -> None:
    """vLLM 0.32 has no hook between starting the engine-core process and waiting (a minute or
    more) for its handshake; `CoreEngineProcManager.__init__` returns once its processes are
    started, so we wrap it to call the building thread's `spawned` (once per process; a no-op in
    threads that set none). Should the wrap ever not run, `_SpawnScope` releases at the end."""
    from vllm.v1.engine import utils

    cls: Any = utils.CoreEngineProcManager
    if getattr(cls.__init__, "_driftgate_hook", False):
        return
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            original(self, *args, **kwargs)
        finally:
            pids = getattr(_building, "engine_pids", None)
            if pids is not None:
                pids.extend(p.pid for p in getattr(self, "processes", ()) if p.pid)
            spawned = getattr(_building, "spawned", None)
            if spawned is not None:
                spawned()

    __init__._driftgate_hook = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


class _SpawnScope:
    """`_SPAWN_LOCK` held and the engine's environment set from entry until `release` (called once
    the engine-core process is started, or at exit, whichever comes first). The environment is
    computed under the lock: it reads this process's `LD_PRELOAD`, which another build's scope
    (and vLLM, adding its libgomp) changes while it holds the lock."""

    def __init__(self, env: Callable[[], Mapping[str, str | None]]) -> None:
        self._make_env = env
        self._env: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        self._held = False

    def __enter__(self) -> _SpawnScope:
        _SPAWN_LOCK.acquire()
        self._held = True
        try:
            self._env = _scoped_env(self._make_env())
        except BaseException:
            self._held = False
            _SPAWN_LOCK.release()
            raise
        self._env.__enter__()
        _building.spawned = self.release
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            _building.spawned = None
            try:
                self._env.__exit__(None, None, None)
            finally:
                _SPAWN_LOCK.release()

    def __exit__(self, *exc: object) -> None:
        self.release()


def build_async_llm(variant: VariantConfig) -> Any:
    """Imports vLLM and builds the `AsyncLLM` (blocking for a minute or more: run it in a thread).
    Only the part up to the start of the engine-core process is serialized (`_SpawnScope`)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    e = variant.engine
    flags = cpu_flags()
    dtype = resolve_dtype(e.dtype, variant.model_path, flags)
    if advice := dtype_advice(e.dtype, flags):
        log.warning("variant %s: %s", variant.name, advice)
    elif dtype != e.dtype:
        log.info("variant %s: dtype auto is %s on this CPU", variant.name, dtype)
    args = AsyncEngineArgs(
        model=variant.model_path,
        dtype=cast(Any, dtype),
        max_model_len=e.max_model_len,
        max_num_seqs=e.max_num_seqs,
        max_logprobs=e.max_logprobs,
        seed=e.seed,
        kv_cache_memory_bytes=int(e.kv_cache_gib * (1 << 30)),
        enforce_eager=e.enforce_eager,
        disable_log_stats=True,
    )
    pids: list[int] = []
    _building.engine_pids = pids
    try:
        with _SpawnScope(lambda: engine_env(variant)):
            _hook_spawn()
            # In a list emptied at the return: this frame may outlive the call (see `VllmEngine.start`).
            box = [AsyncLLM.from_engine_args(args)]
    finally:
        _building.engine_pids = None
    if e.nice:
        renice_engine(variant.name, pids, e.nice)
    return box.pop()


class _Closed:
    """Stands in for a shut-down AsyncLLM: every use is an UNAVAILABLE error."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise Unavailable(f"variant {self._name} has been shut down")


class VllmEngine:
    """One variant's vLLM engine."""

    def __init__(self, name: str, llm: Any, max_model_len: int) -> None:
        self.name = name
        self._llm = llm
        self._max_model_len = max_model_len
        self._tokenizer = llm.get_tokenizer()

    @classmethod
    async def start(cls, variant: VariantConfig) -> VllmEngine:
        """Builds the engine (spawns vLLM's engine-core process with this variant's CPU settings);
        several may be built at once (see `build_async_llm`)."""
        e = variant.engine
        log.info("starting vLLM engine %s on %s (cores %s)", variant.name, variant.model_path, e.cpu_cores)
        # The AsyncLLM comes back in a list that is emptied here. The worker thread's finished frame
        # outlives the call when an import inside build_async_llm leaves a stored traceback behind
        # (its frames' f_back chain reaches the executor's frame), and that frame then holds only the
        # empty list: no AsyncLLM stays referenced until interpreter exit, where its __del__ fails.
        box = await asyncio.to_thread(lambda: [build_async_llm(variant)])
        llm = box.pop()
        engine = cls(variant.name, llm, e.max_model_len)
        del llm  # the engine owns it: `shutdown` drops it so AsyncLLM.__del__ never runs at exit
        engine._start_output_handler()
        return engine

    def _start_output_handler(self) -> None:
        """Starts vLLM's output handler on this loop (what `AsyncLLM` does itself when built on one)."""
        start = getattr(self._llm, "_run_output_handler", None)
        if start is not None:
            start()

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        return tuple(self._tokenizer.encode(prompt))

    async def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        try:
            text = self._tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # no template, or the template rejects the conversation
            raise InvalidArgument(f"variant {self.name} cannot render these messages: {exc}") from exc
        return str(text)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` with the engine's tokenizer (as the engine tokenizes a prompt when
        `add_special_tokens`); knowledge probes use it to build teacher-forced candidates."""
        return [int(t) for t in self._tokenizer.encode(text, add_special_tokens=add_special_tokens)]

    def _params(self, sampling: SamplingSpec, logprobs: int | None, **extra: Any) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            ignore_eos=sampling.ignore_eos,
            logprobs=logprobs,
            output_kind=RequestOutputKind.DELTA,
            stream_interval=sampling.stream_interval if sampling.stream_interval > 1 else None,
            **extra,
        )

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        """Streams text deltas. Closing or cancelling the iteration aborts the vLLM request (vLLM's
        `generate` aborts on CancelledError/GeneratorExit; we abort again to be sure). Given token
        ids go in as a `TokensPrompt` (with the text, for vLLM's logs): no second tokenization."""
        params = self._params(sampling, logprobs)
        inputs: dict[str, Any] = {"prompt": prompt}
        if prompt_token_ids:
            inputs = {"prompt_token_ids": list(prompt_token_ids), "prompt": prompt}
        prompt_ids: tuple[int, ...] = ()
        completion = 0
        finished = False
        try:
            async for out in self._llm.generate(inputs, params, request_id):
                if not prompt_ids and out.prompt_token_ids:  # every output carries them: copy once
                    prompt_ids = tuple(out.prompt_token_ids)
                o = out.outputs[0]
                completion += len(o.token_ids)
                finished = out.finished
                yield Chunk(
                    text=o.text,
                    token_ids=tuple(o.token_ids),
                    finished=out.finished,
                    finish_reason=o.finish_reason if out.finished else None,
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=completion,
                    prompt_token_ids=prompt_ids,
                    logprobs=tuple(_positions(o.logprobs)),
                )
        except (GatewayError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _map_error(exc) from exc
        finally:
            if not finished:
                await self.abort(request_id)

    async def score(
        self, token_ids: Sequence[int], start: int, top_k: int, request_id: str
    ) -> list[TokenLogprobs]:
        from vllm import SamplingParams

        # ids and logprobs only: no text, so vLLM's output processor (this process) does not
        # decode the top-k tokens of every position
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k, detokenize=False)
        result = None
        try:
            async for out in self._llm.generate({"prompt_token_ids": list(token_ids)}, params, request_id):
                result = out
        except (GatewayError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise _map_error(exc) from exc
        if result is None or result.prompt_logprobs is None:
            raise EngineFailure("the engine returned no prompt logprobs")
        return list(_positions(result.prompt_logprobs[start:]))

    async def abort(self, request_id: str) -> None:
        with contextlib.suppress(Exception):
            await self._llm.abort(request_id)

    async def check_health(self) -> None:
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise Unavailable(f"variant {self.name} is not healthy") from exc

    def num_unfinished(self) -> int:
        return int(self._llm.get_num_unfinished_requests())

    async def shutdown(self) -> None:
        if isinstance(self._llm, _Closed):
            return
        llm, self._llm = self._llm, _Closed(self.name)
        try:
            # Stop vLLM's output handler first: otherwise it logs the engine-core exit as an error.
            handler = getattr(llm, "output_handler", None)
            if handler is not None:
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
            await asyncio.to_thread(llm.shutdown)
        finally:
            # Drop the engine now, even if its shutdown raises: vLLM's
            # AsyncLLM.__del__ fails noisily when it runs at interpreter exit.
            del llm
            gc.collect()
