"""The bench's clients: every system is called the same way (a streamed, greedy completion of
`max_tokens` tokens: `ignore_eos`, so a variant that ends its answer early does not look fast)
and timed the same way (send → first text → last chunk).

- `grpc_call`: driftgate's `GenerateStream` (optionally pinned to a variant);
- `openai_call`: `POST /v1/completions` with `stream: true` over one pooled aiohttp session, as
  vLLM's own benchmark client does (for `vllm serve` and for driftgate's HTTP door alike);
- `DirectClient`: a child process (`python -m bench.direct`) that drives vLLM's `AsyncLLM` in its
  own loop, the baseline with no RPC at all.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import Call, Runner, Sample
from serving.engines.vllm_server import with_parent_death_signal
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc


def grpc_call(stub: pb_grpc.GatewayStub, max_tokens: int, variant: str = "") -> Call:
    async def call(prompt: str) -> Sample:
        request = pb.GenerateRequest(
            prompt=prompt, max_tokens=max_tokens, temperature=0.0, variant=variant, ignore_eos=True
        )
        t0 = time.perf_counter()
        ttft = None
        tokens = 0
        try:
            async for chunk in stub.GenerateStream(request):
                if ttft is None and chunk.text:
                    ttft = time.perf_counter() - t0
                if chunk.finished:
                    tokens = int(chunk.completion_tokens)
        except Exception:  # a failed request is a sample, never a stray exception in the loop
            return Sample(time.perf_counter() - t0, 0.0, 0, ok=False)
        latency = time.perf_counter() - t0
        return Sample(latency, latency if ttft is None else ttft, tokens)

    return call


def sse_event(line: bytes) -> dict[str, Any] | None:
    """The JSON of one SSE `data:` line; None for any other line and for `[DONE]`."""
    text = line.decode().strip()
    if not text.startswith("data:"):
        return None
    data = text[5:].strip()
    if data == "[DONE]":
        return None
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def openai_call(session: aiohttp.ClientSession, base_url: str, model: str, max_tokens: int) -> Call:
    url = f"{base_url}/v1/completions"

    async def call(prompt: str) -> Sample:
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,  # vLLM's extension; driftgate's HTTP door accepts it too
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        t0 = time.perf_counter()
        ttft = None
        tokens = 0
        try:
            async with session.post(url, json=body) as resp:
                if resp.status != 200:
                    await resp.read()
                    return Sample(time.perf_counter() - t0, 0.0, 0, ok=False)
                async for line in resp.content:
                    event = sse_event(line)
                    if event is None:
                        continue
                    if ttft is None and any(c.get("text") for c in event.get("choices", [])):
                        ttft = time.perf_counter() - t0
                    if event.get("usage"):
                        tokens = int(event["usage"]["completion_tokens"])
        except Exception:  # a failed request is a sample, never a stray exception in the loop
            return Sample(time.perf_counter() - t0, 0.0, 0, ok=False)
        latency = time.perf_counter() - t0
        return Sample(latency, latency if ttft is None else ttft, tokens)

    return call


class DirectClient:
    """`bench.direct` in a child process: started with a model and cores, then asked over its
    stdin for closed-loop runs; each answer is one JSON line of samples on its stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, model: str, cores: str, log_path: Path, **settings: str) -> DirectClient:
        """`settings`: engine settings other than the defaults (`bench.direct.SETTINGS`)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            chosen = [f"{k}={v}" for k, v in settings.items()]
            command = [sys.executable, "-m", "bench.direct", model, cores, *chosen]
            process = await asyncio.create_subprocess_exec(
                *with_parent_death_signal(command),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=1 << 24,
            )
        return cls(process)

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), timeout_s)
        except TimeoutError:
            raise RuntimeError(f"bench.direct did not answer within {timeout_s:.0f} s: see its log") from None
        if not line:
            raise RuntimeError(f"bench.direct exited with {await self._process.wait()}: see its log")
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    @property
    def pid(self) -> int:
        return self._process.pid

    async def ready(self) -> float:
        """Waits until the engine is built; returns its start seconds."""
        return float((await self._line(900.0))["ready_s"])

    async def _ask(self, ask: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps(ask) + "\n").encode())
        await self._process.stdin.drain()
        return await self._line(600.0)

    async def run(self, concurrency: int, total: int, max_tokens: int) -> tuple[list[Sample], float]:
        return await self._samples({"concurrency": concurrency, "total": total, "max_tokens": max_tokens})

    async def run_for(self, concurrency: int, seconds: float, max_tokens: int) -> tuple[list[Sample], float]:
        """A closed loop that starts requests for `seconds` (load beside another cell)."""
        return await self._samples({"concurrency": concurrency, "seconds": seconds, "max_tokens": max_tokens})

    async def _samples(self, ask: dict[str, Any]) -> tuple[list[Sample], float]:
        answer = await self._ask(ask)
        return [Sample(**s) for s in answer["samples"]], float(answer["seconds"])

    async def answers(self, max_tokens: int) -> list[list[int]]:
        """The engine's greedy answers to `bench.load.PROMPTS`, as token ids."""
        answer = await self._ask({"answers": True, "max_tokens": max_tokens})
        return [list(map(int, ids)) for ids in answer["token_ids"]]

    def runner(self, max_tokens: int) -> Runner:
        """`run` with `max_tokens` fixed: a bench runner."""

        async def run(concurrency: int, total: int) -> tuple[list[Sample], float]:
            return await self.run(concurrency, total, max_tokens)

        return run

    async def stop(self) -> None:
        if self._process.returncode is None and self._process.stdin is not None:
            self._process.stdin.close()
            try:
                await asyncio.wait_for(self._process.wait(), 60)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


def samples_json(samples: list[Sample], seconds: float) -> str:
    return json.dumps({"samples": [asdict(s) for s in samples], "seconds": seconds})
