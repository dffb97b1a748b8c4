"""The composition root: engine ownership, start-up checks and health during a real engine build."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.app import start_app
from serving.config import Config, Role, ServerConfig, VariantConfig
from serving.engines.base import Engine
from serving.errors import ConfigError
from serving.gateway import GenerateCall
from tests.conftest import dense_variant
from tests.fakes import OwnedFake

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _config(*variants: VariantConfig) -> Config:
    return Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=-1, drain_timeout_s=1.0),
        variants=list(variants),
    )


async def test_stop_shuts_down_built_engines_and_leaves_borrowed_ones() -> None:
    built: list[OwnedFake] = []

    async def factory(variant: VariantConfig) -> Engine:
        built.append(OwnedFake(variant.name))
        return built[-1]

    borrowed = OwnedFake("dense")
    cfg = _config(VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW))
    app = await start_app(cfg, factory=factory, engines={"dense": borrowed})
    assert [e.name for e in built] == ["shadow"] and set(app.gateway.engines) == {"dense", "shadow"}
    await app.stop()
    assert built[0].shut and not borrowed.shut


async def test_every_missing_checkpoint_is_named_before_any_engine_starts(tmp_path: Path) -> None:
    cfg = _config(
        dense_variant(),
        VariantConfig(name="gone-a", model=str(tmp_path / "a"), role=Role.SHADOW),
        VariantConfig(name="gone-b", model=str(tmp_path / "b"), role=Role.SHADOW),
    )
    with pytest.raises(
        ConfigError, match=r"variant gone-a: no checkpoint at .*variant gone-b: no checkpoint"
    ):
        await start_app(cfg)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2.0
            )
        except grpc.aio.AioRpcError as exc:
            return -1 if exc.code() is grpc.StatusCode.UNAVAILABLE else -2
        return int(reply.status)


@pytest.mark.engine
async def test_health_answers_not_serving_while_the_engine_builds() -> None:
    """The real vLLM engine is built off the event loop: health checks answer during the build
    (NOT_SERVING), the loop never stalls for long, and SERVING follows once the engine is up."""
    port = _free_port()
    cfg = Config(
        server=ServerConfig(grpc_port=port, metrics_port=-1, http_port=-1), variants=[dense_variant()]
    )
    starting = asyncio.create_task(start_app(cfg))
    seen: list[int] = []
    worst_gap, last = 0.0, time.perf_counter()
    while not starting.done():
        await asyncio.sleep(0.25)
        now = time.perf_counter()
        worst_gap, last = max(worst_gap, now - last), now
        seen.append(await _health(f"127.0.0.1:{port}"))
    app = starting.result()
    try:
        seen.append(await _health(app.address))
        assert seen.count(health_pb2.HealthCheckResponse.NOT_SERVING) >= 3, seen
        assert seen[-1] == health_pb2.HealthCheckResponse.SERVING
        assert worst_gap < 2.0, f"the event loop stalled for {worst_gap:.1f} s while the engine started"
    finally:
        await app.stop()


@pytest.mark.engine
async def test_a_dead_engine_core_turns_health_off_and_is_restarted() -> None:
    """Kill the engine-core process of an in-process engine: the primary turns not-ready (health
    NOT_SERVING, callers UNAVAILABLE), the supervisor builds a new engine, SERVING comes back."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    cfg = Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=-1, health_interval_s=0.5),
        variants=[dense_variant()],
    )
    app = await start_app(cfg)
    try:
        cores = [p for p in me.children(recursive=True) if p.pid not in before and "EngineCore" in p.name()]
        assert len(cores) == 1, [p.name() for p in me.children(recursive=True)]
        cores[0].kill()
        seen: list[int] = []
        for _ in range(600):  # up to ~5 min on a busy 2-core box: a restart builds a whole engine
            seen.append(await _health(app.address))
            if (
                health_pb2.HealthCheckResponse.NOT_SERVING in seen
                and seen[-1] == health_pb2.HealthCheckResponse.SERVING
            ):
                break
            await asyncio.sleep(0.5)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
        assert seen[-1] == health_pb2.HealthCheckResponse.SERVING
        restarted = app.registry.get_sample_value(
            "driftgate_engine_restarts_total", {"variant": "dense", "outcome": "restarted"}
        )
        assert restarted == 1
        reply = await app.gateway.generate(GenerateCall(prompt="The capital of France is", max_tokens=4))
        assert "Paris" in reply.text
    finally:
        await app.stop()
