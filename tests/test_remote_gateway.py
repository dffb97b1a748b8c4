"""Remote mode end to end: the gateway in front of two real vLLM OpenAI servers (dense and
int8-w8a8, one core each), compared with the same gateway on in-process engines; then the
servers are killed and restarted under the gateway's feet."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.app import App, start_app
from serving.config import Config, EngineConfig, Role, ServerConfig, VariantConfig
from serving.engines.base import Engine
from serving.engines.vllm_server import (
    ServerProcess,
    free_port,
    running_server,
    server_env,
    variant_command,
    variant_env,
    wait_healthy,
)
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import dense_variant, model_dir

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]

SUBJECTS = ["France", "Japan", "Italy", "Egypt", "Canada", "Brazil", "Kenya", "Spain"]
PROMPTS = [
    *(f"The capital of {c} is" for c in SUBJECTS),
    *(f"The official language of {c} is" for c in SUBJECTS),
    *(f"{c} is a country in" for c in SUBJECTS),
    *(f"The currency of {c} is the" for c in SUBJECTS),
]
MAX_TOKENS = 16
EAGER = ["--enforce-eager"]  # restarts skip graph compilation: readiness is what they test


@dataclass
class Figures:
    answers: list[str]
    agreement: float
    kl: float


def _variant(name: str, path: Path, role: Role, cores: str, url: str = "", served: str = "") -> VariantConfig:
    engine = EngineConfig(
        url=url, served_model_name=served, max_model_len=512, kv_cache_gib=0.5, cpu_cores=cores
    )
    return VariantConfig(
        name=name, model=str(path), role=role, engine=engine, max_in_flight=64, timeout_s=300
    )


def _config(*variants: VariantConfig) -> Config:
    server = ServerConfig(
        grpc_port=0, metrics_port=0, http_port=-1, health_interval_s=0.5, verdict_refresh_s=0
    )
    return Config(server=server, variants=list(variants))


async def _figures(app: App) -> Figures:
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        replies = await asyncio.gather(
            *(
                stub.Generate(pb.GenerateRequest(prompt=p, max_tokens=MAX_TOKENS, temperature=0.0))
                for p in PROMPTS
            )
        )
        await asyncio.wait_for(app.gateway.mirror.drain(), 600)
        assert {r.variant for r in replies} == {"dense"}
    int8 = app.gateway.drift_summary()[0]["int8-w8a8"]
    assert (
        int8.compared == len(PROMPTS) and int8.mean_token_agreement is not None and int8.mean_kl is not None
    )
    return Figures([r.text for r in replies], int8.mean_token_agreement, int8.mean_kl)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def int8_path() -> Path:
    from compress.api import build_recipes

    return (await asyncio.to_thread(build_recipes, model_dir(), ["int8-w8a8"]))["int8-w8a8"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def in_process(dense_engine: Engine, int8_path: Path) -> Figures:
    """The in-process gateway's answers and int8 figures (its int8 engine is gone afterwards)."""
    from serving.engines.vllm_engine import VllmEngine

    int8_cfg = _variant("int8-w8a8", int8_path, Role.SHADOW, "1")
    int8 = await VllmEngine.start(int8_cfg)
    app = await start_app(
        _config(dense_variant(), int8_cfg), engines={"dense": dense_engine, "int8-w8a8": int8}
    )
    try:
        return await _figures(app)
    finally:
        await app.stop()
        await int8.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def servers(
    in_process: Figures, int8_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("servers")
    wanted = {"dense": (model_dir(), "0"), "int8-w8a8": (int8_path, "1")}
    async with contextlib.AsyncExitStack() as stack:
        started = {}
        for name, (path, cores) in wanted.items():
            port = free_port()
            variant = _variant(name, path, Role.SHADOW, cores)
            command, log = variant_command(variant, port), logs / f"{name}.log"
            # Compiled into driftgate's cache, as `driftgate variant serve` does: warm next time.
            started[name] = await stack.enter_async_context(
                running_server(command, variant_env(variant), log, port, wait=False)
            )
        await asyncio.gather(*(wait_healthy(s, 600) for s in started.values()))
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def remote_app(servers: dict[str, ServerProcess], int8_path: Path) -> AsyncIterator[App]:
    dense, int8 = servers["dense"].url, servers["int8-w8a8"].url
    config = _config(
        _variant("dense", model_dir(), Role.PRIMARY, "0", url=dense),
        _variant("twin", model_dir(), Role.SHADOW, "0", url=dense, served="dense"),
        _variant("int8-w8a8", int8_path, Role.SHADOW, "1", url=int8),
    )
    app = await start_app(config)
    for _ in range(100):
        if all(v.ready for v in app.gateway.variants()):
            break
        await asyncio.sleep(0.1)
    yield app
    await app.stop()


async def test_remote_answers_and_drift_match_in_process(remote_app: App, in_process: Figures) -> None:
    remote = await _figures(remote_app)
    assert remote.answers == in_process.answers
    twin = remote_app.gateway.drift_summary()[0]["twin"]
    assert twin.compared == len(PROMPTS) and twin.exact_match_rate == 1.0
    assert twin.mean_kl is not None and twin.mean_kl < 1e-3
    assert abs(remote.agreement - in_process.agreement) <= 0.02, (remote, in_process)
    assert abs(remote.kl - in_process.kl) <= max(0.1 * in_process.kl, 1e-3), (remote, in_process)


async def _running(server: ServerProcess) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    values = [float(v) for v in re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+-]+)$", text, re.M)]
    assert values, "vllm:num_requests_running not exported"
    return sum(values)


async def test_an_expired_call_leaves_nothing_running_on_the_server(
    remote_app: App, servers: dict[str, ServerProcess]
) -> None:
    async with grpc.aio.insecure_channel(remote_app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        req = pb.GenerateRequest(prompt="Count from one to five hundred: one, two,", max_tokens=400)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(req, timeout=1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(50):
        if await _running(servers["dense"]) == 0 and await _running(servers["int8-w8a8"]) == 0:
            break
        await asyncio.sleep(0.2)
    assert await _running(servers["dense"]) == 0 and await _running(servers["int8-w8a8"]) == 0
    await asyncio.wait_for(remote_app.gateway.mirror.drain(), 60)
    assert all(e.num_unfinished() == 0 for e in remote_app.gateway.engines.values())


async def _ready(app: App, name: str, want: bool, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if next(v.ready for v in app.gateway.variants() if v.name == name) == want:
            return True
        await asyncio.sleep(0.2)
    return False


async def _restart(server: ServerProcess, variant: VariantConfig, stack: contextlib.AsyncExitStack) -> None:
    command = variant_command(variant, server.port) + EAGER
    log = server.log_path.with_suffix(".restart.log")
    await stack.enter_async_context(
        running_server(command, server_env(variant.engine.cpu_cores), log, server.port)
    )


async def test_killing_the_shadow_server_under_load_costs_the_primary_nothing(
    remote_app: App, servers: dict[str, ServerProcess], int8_path: Path
) -> None:
    outcomes = remote_app.registry.get_sample_value
    lost_before = sum(
        outcomes("driftgate_mirror_total", {"variant": "int8-w8a8", "outcome": o}) or 0
        for o in ("error", "dropped")
    )
    errors: list[BaseException] = []
    answered = 0

    async def user(stub: pb_grpc.GatewayStub, until: float) -> None:
        nonlocal answered
        while time.monotonic() < until:
            try:
                await stub.Generate(
                    pb.GenerateRequest(prompt="The capital of Spain is", max_tokens=8), timeout=60
                )
                answered += 1
            except grpc.aio.AioRpcError as exc:
                errors.append(exc)

    async with grpc.aio.insecure_channel(remote_app.address) as channel, contextlib.AsyncExitStack() as stack:
        stub = pb_grpc.GatewayStub(channel)
        load = [asyncio.create_task(user(stub, time.monotonic() + 20)) for _ in range(8)]
        await asyncio.sleep(5)
        servers["int8-w8a8"].kill()
        assert await _ready(remote_app, "int8-w8a8", False, 15)
        await asyncio.gather(*load)
        assert errors == [] and answered > 8
        lost = sum(
            outcomes("driftgate_mirror_total", {"variant": "int8-w8a8", "outcome": o}) or 0
            for o in ("error", "dropped")
        )
        assert lost > lost_before
        listed = await stub.ListVariants(pb.ListVariantsRequest())
        assert {v.name: v.ready for v in listed.variants} == {"dense": True, "twin": True, "int8-w8a8": False}
        await _restart(servers["int8-w8a8"], _variant("int8-w8a8", int8_path, Role.SHADOW, "1"), stack)
        assert await _ready(remote_app, "int8-w8a8", True, 30)


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


async def test_killing_the_primary_server_turns_health_off_until_it_is_back(
    remote_app: App, servers: dict[str, ServerProcess]
) -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    async with grpc.aio.insecure_channel(remote_app.address) as channel, contextlib.AsyncExitStack() as stack:
        stub = pb_grpc.GatewayStub(channel)
        assert await _health(remote_app.address) == serving
        servers["dense"].kill()
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(pb.GenerateRequest(prompt="Hi", max_tokens=4), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - start < 10
        assert await _ready(remote_app, "dense", False, 15)
        assert await _health(remote_app.address) == not_serving
        await _restart(servers["dense"], _variant("dense", model_dir(), Role.PRIMARY, "0"), stack)
        assert await _ready(remote_app, "dense", True, 30)
        assert await _health(remote_app.address) == serving
        reply = await stub.Generate(pb.GenerateRequest(prompt="The capital of France is", max_tokens=4))
        assert "Paris" in reply.text
