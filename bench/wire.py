"""The `wire` suite's server: the gateway's two doors and two bare servers of the same protocols,
in one process on one core, over one `TickEngine` (no vLLM).

The engine releases one token to every running stream per tick, as an engine step does, and the
token's text is the tick's `time.perf_counter()` (CLOCK_MONOTONIC: one clock for every process of
the machine). A client on another core subtracts it from the time it read the token: the whole
path from the engine's output to the client, through a door or a bare server, with no engine
noise in it. The bare servers are what a team would write with no gateway:
- `bare-grpc`: a grpc.aio server with the same `driftgate.v1.Gateway` contract, whose
  `GenerateStream` writes the engine's chunks as they come (no interceptors, no routing);
- `bare-http`: starlette's `StreamingResponse` of OpenAI completion chunks on uvicorn, the
  shape of vLLM's own server.

Run as `python -m bench.wire TICK_S CPU`; it pins itself to CPU, prints one JSON line of ports and
serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

from serving.engines.base import Chunk, SamplingSpec, TokenLogprobs
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc


def stamps(text: str) -> list[float]:
    """The tick stamps in a streamed text (one per token, each ended by ';')."""
    return [float(x) for x in text.split(";") if x.strip()]


class TickEngine:
    """An `Engine` whose every running stream gets one token per tick, stamped with the tick."""

    name = "dense"
    max_model_len = 4096

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._next: asyncio.Future[float] | None = None

    async def run(self) -> None:
        """The engine's steps (runs until cancelled)."""
        loop = asyncio.get_running_loop()
        self._next = loop.create_future()
        while True:
            await asyncio.sleep(self.tick_s)
            step, self._next = self._next, loop.create_future()
            step.set_result(time.perf_counter())

    async def _tick(self) -> float:
        assert self._next is not None, "TickEngine.run is not running"
        return await asyncio.shield(self._next)

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        return tuple(range(len(prompt.split())))

    async def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        return "".join(m["content"] for m in messages)

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        n = sampling.max_tokens
        for i in range(n):
            stamp = await self._tick()
            last = i == n - 1
            yield Chunk(
                text=f"{stamp!r};",
                token_ids=(i,),
                finished=last,
                finish_reason="length" if last else None,
                prompt_tokens=len(prompt_token_ids),
                completion_tokens=i + 1,
            )

    async def score(
        self, token_ids: Sequence[int], start: int, top_k: int, request_id: str
    ) -> list[TokenLogprobs]:
        return [{t: 0.0} for t in token_ids[start:]]

    async def abort(self, request_id: str) -> None:
        return None

    async def check_health(self) -> None:
        return None

    def num_unfinished(self) -> int:
        return 0

    async def shutdown(self) -> None:
        return None


class BareServicer(pb_grpc.GatewayServicer):
    """`GenerateStream` straight from the engine: the gRPC baseline."""

    def __init__(self, engine: TickEngine) -> None:
        self._engine = engine

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.GenerateChunk]:
        sampling = SamplingSpec(max_tokens=request.max_tokens or 16, ignore_eos=True)
        async for chunk in self._engine.generate(request.prompt, sampling, request.request_id):
            if chunk.finished:
                yield pb.GenerateChunk(
                    text=chunk.text, finished=True, completion_tokens=chunk.completion_tokens
                )
            else:
                yield pb.GenerateChunk(text=chunk.text)


def bare_http_app(engine: TickEngine) -> Any:
    """POST /v1/completions as starlette's `StreamingResponse` of OpenAI chunks: the HTTP baseline."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        sampling = SamplingSpec(max_tokens=int(body.get("max_tokens", 16)), ignore_eos=True)

        async def events() -> AsyncIterator[str]:
            async for chunk in engine.generate(body["prompt"], sampling, ""):
                choice = {"index": 0, "text": chunk.text, "finish_reason": chunk.finish_reason}
                yield f"data: {json.dumps({'object': 'text_completion', 'choices': [choice]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


async def serve(tick_s: float) -> None:
    import grpc
    import uvicorn

    from serving.app import start_app
    from serving.config import Config, LimitsConfig, ServerConfig, VariantConfig

    engine = TickEngine(tick_s)
    ticking = asyncio.create_task(engine.run())
    server = ServerConfig(
        host="127.0.0.1", grpc_port=0, http_port=0, metrics_port=0, max_concurrent_requests=1024
    )
    config = Config(server=server, variants=[VariantConfig(name="dense")], limits=LimitsConfig())
    app = await start_app(config, engines={"dense": engine})  # type: ignore[dict-item]
    bare = grpc.aio.server()
    pb_grpc.add_GatewayServicer_to_server(BareServicer(engine), bare)
    bare_grpc_port = bare.add_insecure_port("127.0.0.1:0")
    await bare.start()
    sock = socket.create_server(("127.0.0.1", 0))  # listening before uvicorn starts: no wait
    http = uvicorn.Server(uvicorn.Config(bare_http_app(engine), log_level="warning"))
    serving = asyncio.create_task(http.serve(sockets=[sock]))
    bare_http_port = sock.getsockname()[1]
    ports = {
        "driftgate-grpc": app.grpc.port,
        "driftgate-http": app.http_port,
        "bare-grpc": bare_grpc_port,
        "bare-http": bare_http_port,
        "metrics": app.metrics_port,
    }
    print(json.dumps(ports), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        ticking.cancel()
        serving.cancel()


if __name__ == "__main__":
    os.sched_setaffinity(0, {int(sys.argv[2])})
    asyncio.run(serve(float(sys.argv[1])))
