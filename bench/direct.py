"""The no-gateway baseline: vLLM's `AsyncLLM` driven by a closed loop in its own process.

`python -m bench.direct MODEL CORES [SETTING=VALUE ...]` builds the engine with the same settings as the
gateway's in-process engine (`bench.systems.engine_config`, where SETTING is one of its `preload`,
`dtype`, `fused_kernels` and `executor`), freezes its start-up heap as `vllm serve`
and `driftgate serve` do (`serving.gcwatch`), prints `{"ready_s": …}`, then answers each JSON
line on stdin with one JSON line: `{"concurrency", "total", "max_tokens"}` with the samples of a
closed-loop run (`"seconds"` instead of `"total"`: a run that starts requests for that long),
`{"answers": true, "max_tokens"}` with the greedy answers' token ids to `bench.load.PROMPTS`
(`{"token_ids": [...]}`). It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

from bench.clients import samples_json
from bench.load import PROMPTS, Call, Sample, closed_loop, closed_loop_until

SETTINGS = ("preload", "dtype", "fused_kernels", "executor")
"""The engine settings `bench.direct` takes (keyword arguments of `bench.systems.engine_config`)."""


def _direct_call(llm: Any, max_tokens: int) -> Call:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        max_tokens=max_tokens, temperature=0.0, ignore_eos=True, output_kind=RequestOutputKind.DELTA
    )

    async def call(prompt: str) -> Sample:
        t0 = time.perf_counter()
        ttft = None
        tokens = 0
        try:
            async for out in llm.generate({"prompt": prompt}, params, uuid.uuid4().hex):
                o = out.outputs[0]
                if ttft is None and o.text:
                    ttft = time.perf_counter() - t0
                tokens += len(o.token_ids)
        except Exception:  # a failed request is a sample, never a stray exception in the loop
            return Sample(time.perf_counter() - t0, 0.0, 0, ok=False)
        latency = time.perf_counter() - t0
        return Sample(latency, latency if ttft is None else ttft, tokens)

    return call


async def greedy_answers(llm: Any, prompts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Each prompt's greedy answer (stopping at end of sequence or `max_tokens`) as token ids."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, output_kind=RequestOutputKind.FINAL_ONLY)

    async def one(prompt: str) -> list[int]:
        ids: list[int] = []
        async for out in llm.generate({"prompt": prompt}, params, uuid.uuid4().hex):
            ids = list(out.outputs[0].token_ids)
        return ids

    return list(await asyncio.gather(*(one(p) for p in prompts)))


async def _answer(llm: Any, ask: dict[str, Any]) -> str:
    """The JSON line that answers one ask (see the module docstring)."""
    max_tokens = int(ask["max_tokens"])
    if ask.get("answers"):
        return json.dumps({"token_ids": await greedy_answers(llm, PROMPTS, max_tokens)})
    call = _direct_call(llm, max_tokens)
    if "seconds" in ask:  # load for a while, beside another system's cell
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(float(ask["seconds"]), stop.set)
        samples, seconds = await closed_loop_until(call, int(ask["concurrency"]), stop)
    else:
        samples, seconds = await closed_loop(call, int(ask["concurrency"]), int(ask["total"]))
    return samples_json(samples, seconds)


def _answers() -> TextIO:
    """The protocol's own stream: the original stdout, which nothing else may write to. vLLM logs
    to stdout and its engine-core children inherit it, so fd 1 becomes stderr (the log) and the
    answers go to a private, non-inheritable duplicate (closed, hence EOF, when this process ends)."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def parse_settings(given: Sequence[str]) -> dict[str, str]:
    """`SETTING=VALUE` arguments as keyword arguments of `bench.systems.engine_config` (pure)."""
    settings = dict(arg.partition("=")[::2] for arg in given)
    unknown = sorted(k for k in settings if k not in SETTINGS) + [a for a in given if "=" not in a]
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}: one of {', '.join(SETTINGS)}, as SETTING=VALUE")
    return settings


async def _serve(model: str, cores: str, settings: dict[str, str]) -> None:
    from bench.systems import engine_config
    from serving.config import VariantConfig
    from serving.engines.vllm_engine import build_async_llm
    from serving.gcwatch import freeze_heap

    answers = _answers()
    variant = VariantConfig(name="direct", model=model, engine=engine_config(cores, **settings))
    t0 = time.perf_counter()
    llm = build_async_llm(variant)  # sets the engine's environment (cores, offline, compile cache)
    freeze_heap()  # as `driftgate serve` (server.gc_freeze) and `vllm serve` do once they are up
    print(json.dumps({"ready_s": time.perf_counter() - t0}), file=answers, flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            print(await _answer(llm, json.loads(line)), file=answers, flush=True)
    finally:
        llm.shutdown()
        del llm  # now, not in AsyncLLM.__del__ at interpreter exit (which fails noisily)
        gc.collect()


if __name__ == "__main__":
    given = sys.argv[1:]
    try:
        if len(given) < 2:
            raise ValueError("MODEL and CORES are required")
        chosen = parse_settings(given[2:])
    except ValueError as e:
        sys.exit(f"usage: python -m bench.direct MODEL CORES [SETTING=VALUE ...]: {e}")
    asyncio.run(_serve(given[0], given[1], chosen))
