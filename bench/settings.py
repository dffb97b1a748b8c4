"""The engine-settings suites: one vLLM setting changed, everything else equal.

- `preload`: vLLM's CPU advice (tcmalloc, Intel OpenMP preloaded) measured. Three `bench.direct`
  AsyncLLM processes differ only in `engine.preload` (`serving.engines.preload`): none (vLLM's own
  libgomp), tcmalloc, tcmalloc + Intel OpenMP.
- `dtype`: the dense model served in bfloat16 (vLLM's choice for it) vs float32. On a CPU without AVX-512
  vLLM runs bf16 matmuls through torch's fallback (`serving.engines.cpu`); float32 reads twice the
  bytes per token but may compute faster. The suite also compares the two engines' greedy answers
  to the bench prompts (`serving.drift`): a dtype change is only worth its speed if answers hold.
- `kernels`: inductor's fused element-wise kernels parallel (vLLM's: an OpenMP region each, even for
  one token) vs serial (`engine.fused_kernels`, `serving.engines.vllm_plugin`), speed and greedy
  answers (a serial reduction may round differently).
- `executor`: vLLM's CPU default (`mp`: the model in a worker process fed over shared memory) vs
  `uni` (the model in the engine-core process; `engine.executor`), speed and greedy answers.

The engines of a suite are all bound to cores 0-1, started one after another (so their start times
compare) and measured interleaved, like the doors (`bench.doors.measure_cells`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.clients import DirectClient
from bench.doors import measure_cells
from bench.load import ANSWER_TOKENS, Runner, SuiteRun
from serving.config import Executor, FusedKernels, Preload
from serving.drift import first_divergence, token_agreement


@dataclass(frozen=True)
class Setting:
    """One engine of a settings suite: what it changes from the engine defaults (`EngineConfig`)."""

    preload: Preload = Preload.AUTO
    dtype: str = "auto"
    fused_kernels: FusedKernels = FusedKernels.PARALLEL
    executor: Executor = Executor.UNI

    def engine(self) -> dict[str, str]:
        """The settings as `DirectClient.start` takes them."""
        return {
            "preload": self.preload.value,
            "dtype": self.dtype,
            "fused_kernels": self.fused_kernels.value,
            "executor": self.executor.value,
        }


PRELOAD = {f"preload-{p.value}": Setting(preload=p) for p in Preload if p is not Preload.AUTO}
"""The explicit choices (`auto` is one of them on any machine)."""
DTYPE = {f"dtype-{d}": Setting(dtype=d) for d in ("bfloat16", "float32")}
KERNELS = {f"kernels-{k.value}": Setting(fused_kernels=k) for k in FusedKernels}
EXECUTOR = {f"executor-{e.value}": Setting(executor=e) for e in (Executor.MP, Executor.UNI)}


def answer_agreement(baseline: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> dict[str, Any]:
    """How far `other`'s greedy answers to the same prompts follow `baseline`'s (pure)."""
    pairs = list(zip(baseline, other, strict=True))
    same = [list(a) == list(b) for a, b in pairs]
    divergence = [first_divergence(a, b) for a, b in pairs]
    return {
        "prompts": len(pairs),
        "identical": sum(same),
        "token_agreement": [token_agreement(a, b) for a, b in pairs],
        "first_divergence": divergence,
        "lengths": [[len(a), len(b)] for a, b in pairs],
        "divergent_at": sorted(d for d, equal in zip(divergence, same, strict=True) if not equal),
    }


async def run_settings(run: SuiteRun, systems: dict[str, Setting], answers: bool = False) -> dict[str, Any]:
    """Starts the engines one at a time, measures the interleaved grid, stops them; with `answers`,
    every engine's greedy answers are compared with the first system's."""
    model, workdir, max_tokens, log = run.model, run.workdir, run.max_tokens, run.log
    async with contextlib.AsyncExitStack() as stack:
        runners: dict[str, Runner] = {}
        start_s: dict[str, float] = {}
        clients: dict[str, DirectClient] = {}
        for name, s in systems.items():
            client = await DirectClient.start(model, "0-1", workdir / f"{name}.log", **s.engine())
            stack.push_async_callback(client.stop)
            start_s[name] = await client.ready()
            runners[name], clients[name] = client.runner(max_tokens), client
            log(f"  {name}: engine ready in {start_s[name]:.0f} s")
        cells = await measure_cells(runners, run.concurrencies, run.repeats, log)
        result: dict[str, Any] = {"start_s": start_s, "cells": [c.as_dict() for c in cells]}
        if answers:
            ids = {name: await c.answers(ANSWER_TOKENS) for name, c in clients.items()}
            first = next(iter(systems))
            result["answers"] = {n: answer_agreement(ids[first], v) for n, v in ids.items() if n != first}
            result["answers_baseline"] = first
    return result
