"""Serving benchmarks: gateway vs direct AsyncLLM, and mirroring off vs on (measured in one run)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from serving.app import start_app
from serving.config import Config, DriftConfig, EngineConfig, Role, ServerConfig, VariantConfig
from serving.engines.vllm_engine import VllmEngine
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea.",
    "Explain what a CPU cache is.",
    "List three uses of copper.",
    "The largest planet in the solar system is",
    "Describe a sunrise in one paragraph.",
    "What is the boiling point of water?",
    "Give two reasons to learn Python.",
]
MAX_TOKENS = 48


@dataclass(frozen=True)
class Run:
    requests: int
    tokens: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


async def measure(call: Callable[[str], Awaitable[int]], concurrency: int, total: int) -> Run:
    """Runs `total` calls with `concurrency` workers; each call returns its completion tokens."""
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(total)]
    latencies: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            prompt = queue.pop()
            t0 = time.perf_counter()
            n = await call(prompt)  # not `tokens += await ...`: that loses updates across workers
            tokens += n
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(total, tokens, time.perf_counter() - start, tuple(latencies))


def variant(name: str, model: str, cores: str, role: Role = Role.PRIMARY, **kw: object) -> VariantConfig:
    engine = EngineConfig(max_model_len=1024, kv_cache_gib=1.0, cpu_cores=cores)
    return VariantConfig(name=name, model=model, role=role, engine=engine, **kw)  # type: ignore[arg-type]


def config(*variants: VariantConfig, teacher_forced: bool = True) -> Config:
    return Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=-1),
        drift=DriftConfig(teacher_forced=teacher_forced),
        variants=list(variants),
    )


def grpc_call(stub: pb_grpc.GatewayStub) -> Callable[[str], Awaitable[int]]:
    async def call(prompt: str) -> int:
        reply = await stub.Generate(pb.GenerateRequest(prompt=prompt, max_tokens=MAX_TOKENS, temperature=0.0))
        return int(reply.completion_tokens)

    return call


async def gateway_vs_direct(model: str, concurrencies: Sequence[int] = (1, 16)) -> list[str]:
    """The same prompts straight into AsyncLLM and through gRPC + gateway, on one engine."""
    from vllm import SamplingParams

    cfg = config(variant("dense", model, "0-1"))
    engine = await VllmEngine.start(cfg.primary)
    llm = engine._llm
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)

    async def direct(prompt: str) -> int:
        final = None
        async for out in llm.generate({"prompt": prompt}, params, uuid.uuid4().hex):
            final = out
        assert final is not None
        return len(final.outputs[0].token_ids)

    lines = ["gateway vs direct AsyncLLM (dense bf16, cores 0-1, greedy, 48 tokens):"]
    app = await start_app(cfg, engines={"dense": engine})
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            via_gateway = grpc_call(pb_grpc.GatewayStub(channel))
            await measure(direct, 4, 8)  # warm-up
            await measure(via_gateway, 4, 8)
            for c in concurrencies:
                total = 8 if c == 1 else 64
                d = await measure(direct, c, total)
                g = await measure(via_gateway, c, total)
                lines.append(
                    f"  c={c:<3} direct {d.rps:6.2f} req/s {d.tps:7.1f} tok/s | gateway {g.rps:6.2f} req/s "
                    f"{g.tps:7.1f} tok/s | ratio gateway/direct tok/s {g.tps / d.tps:.3f}"
                )
                if c == 1:
                    roofline = 25e9 / (2 * 134.5e6)  # bandwidth / bf16 bytes read per token
                    lines.append(
                        f"        single-stream roofline ~{roofline:.0f} tok/s; direct at {d.tps / roofline:.2f}"
                    )
    finally:
        await app.stop()
        await engine.shutdown()
    return lines


async def mirroring_off_vs_on(model: str, concurrency: int = 8, total: int = 48) -> list[str]:
    """Primary latency and throughput without and with one shadow mirrored at sample rate 1.0.

    The primary is bound to core 0 and the shadow to core 1, as in configs/demo.yaml."""
    primary_cfg = variant("dense", model, "0")
    shadow_on = variant("shadow", model, "1", Role.SHADOW, sample_rate=1.0, max_in_flight=16)
    shadow_off = variant("shadow", model, "1", Role.SHADOW, sample_rate=0.0)
    primary = await VllmEngine.start(primary_cfg)
    shadow = await VllmEngine.start(shadow_on)
    lines = [f"mirroring off vs on (primary on core 0, shadow on core 1, c={concurrency}, {total} requests):"]
    runs: dict[str, Run] = {}
    try:
        cases = (("off", shadow_off, False), ("on, no TF", shadow_on, False), ("on", shadow_on, True))
        for label, shadow_cfg, tf in cases:
            cfg = config(primary_cfg, shadow_cfg, teacher_forced=tf)
            app = await start_app(cfg, engines={"dense": primary, "shadow": shadow})
            try:
                async with grpc.aio.insecure_channel(app.address) as channel:
                    call = grpc_call(pb_grpc.GatewayStub(channel))
                    await measure(call, concurrency, 8)
                    await app.gateway.mirror.drain()
                    app.gateway.drift_summary(reset=True)
                    runs[label] = run = await measure(call, concurrency, total)
                    await app.gateway.mirror.drain()
                    summary, _ = app.gateway.drift_summary()
            finally:
                await app.stop()
            s = summary["shadow"]
            lines.append(
                f"  mirroring {label:<9}: p50 {statistics.median(run.latencies):.3f} s  p99 {run.pct(0.99):.3f} s  "
                f"{run.rps:.2f} req/s {run.tps:.1f} tok/s | mirrored compared {s.compared} dropped {s.dropped} "
                f"timeout {s.timeout} error {s.error}"
            )
        off = runs["off"]
        for label in ("on, no TF", "on"):
            on = runs[label]
            lines.append(
                f"  ratio {label}/off: p50 {statistics.median(on.latencies) / statistics.median(off.latencies):.3f}  "
                f"p99 {on.pct(0.99) / off.pct(0.99):.3f}  throughput {on.tps / off.tps:.3f}"
            )
        lines.append(
            "  (TF = teacher-forced scoring: the primary returns top-k logprobs, the shadow scores its answer)"
        )
    finally:
        await primary.shutdown()
        await shadow.shutdown()
    return lines
