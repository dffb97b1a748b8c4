"""Mirroring and online comparison with real vLLM engines behind a real grpc.aio server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from serving.app import App, start_app
from serving.config import EngineConfig, Role, VariantConfig
from serving.engines.base import Engine
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import dense_variant, make_config, model_dir
from tests.fakes import HangingEngine, RaisingEngine

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]

PROMPTS = [
    "The capital of France is",
    "The capital of Japan is",
    "The capital of Italy is",
    "The capital of Germany is",
    "The capital of Spain is",
    "The capital of Egypt is",
]
SLOW_TIMEOUT_S = 4.0


def shadow(name: str, **kw: object) -> VariantConfig:
    return dense_variant(name, role=Role.SHADOW, **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(dense_engine: Engine) -> AsyncIterator[App]:
    """dense (primary) + twin (the same real engine as a shadow) + a failing and a hanging shadow."""
    config = make_config(
        dense_variant(),
        shadow("twin"),
        shadow("broken"),
        shadow("slow", max_in_flight=2, timeout_s=SLOW_TIMEOUT_S),
    )
    engines = {
        "dense": dense_engine,
        "twin": dense_engine,
        "broken": RaisingEngine(dense_engine),
        "slow": HangingEngine(dense_engine),
    }
    running = await start_app(config, engines=engines)
    yield running
    await running.stop()


def value(app: App, name: str, **labels: str) -> float:
    return app.registry.get_sample_value(name, labels) or 0.0


async def summary(stub: pb_grpc.GatewayStub) -> dict[str, pb.VariantDrift]:
    resp = await stub.GetDriftSummary(pb.GetDriftSummaryRequest())
    return {v.variant: v for v in resp.variants}


async def test_identical_shadow_matches_and_faulty_shadows_do_not_touch_the_primary(
    app: App, stub: pb_grpc.GatewayStub
) -> None:
    before = await summary(stub)
    replies, latencies = [], []
    for prompt in PROMPTS:
        t0 = time.perf_counter()
        replies.append(await stub.Generate(pb.GenerateRequest(prompt=prompt, max_tokens=12)))
        latencies.append(time.perf_counter() - t0)
    # Every primary answer is intact, from the primary, and did not wait for the hanging shadow.
    assert [r.variant for r in replies] == ["dense"] * len(PROMPTS)
    assert "Paris" in replies[0].text and "Tokyo" in replies[1].text
    assert max(latencies) < SLOW_TIMEOUT_S / 2, latencies
    await asyncio.wait_for(app.gateway.mirror.drain(), SLOW_TIMEOUT_S + 30)
    after = await summary(stub)
    n = len(PROMPTS)
    twin = after["twin"]
    assert twin.compared - before["twin"].compared == n
    assert twin.exact_match_rate == 1.0
    assert twin.mean_token_agreement == 1.0
    assert twin.mean_teacher_forced_agreement == 1.0
    assert twin.HasField("mean_kl") and 0.0 <= twin.mean_kl < 1e-3
    assert twin.kl_scored - before["twin"].kl_scored == n  # score_rate 1: every copy scored
    assert after["broken"].errors - before["broken"].errors == n
    slow_done = (after["slow"].timeouts + after["slow"].dropped) - (
        before["slow"].timeouts + before["slow"].dropped
    )
    assert slow_done == n and after["slow"].timeouts > before["slow"].timeouts
    # Prometheus agrees, and every drift histogram is populated.
    assert value(app, "driftgate_mirror_total", variant="twin", outcome="compared") == twin.compared
    assert value(app, "driftgate_mirror_total", variant="broken", outcome="error") == after["broken"].errors
    assert value(app, "driftgate_drift_answers_total", variant="twin", match="true") == twin.compared
    for hist in (
        "driftgate_drift_token_agreement",
        "driftgate_drift_first_divergence_tokens",
        "driftgate_drift_teacher_forced_agreement",
        "driftgate_drift_kl",
    ):
        assert value(app, f"{hist}_count", variant="twin") == twin.compared
    # Shadows have the serving layer's per-variant metrics too, with role shadow.
    assert value(app, "driftgate_request_latency_seconds_count", variant="twin", role="shadow") >= n


async def test_full_in_flight_bound_drops_and_counts(app: App, stub: pb_grpc.GatewayStub) -> None:
    await asyncio.wait_for(app.gateway.mirror.drain(), SLOW_TIMEOUT_S + 30)
    slow = app.gateway.engines["slow"]
    assert isinstance(slow, HangingEngine)
    dropped0 = value(app, "driftgate_mirror_total", variant="slow", outcome="dropped")
    timeouts0 = value(app, "driftgate_mirror_total", variant="slow", outcome="timeout")
    replies = await asyncio.gather(
        *(stub.Generate(pb.GenerateRequest(prompt=p, max_tokens=4)) for p in PROMPTS[:5])
    )
    assert all(r.variant == "dense" and r.text for r in replies)
    assert app.gateway.mirror.in_flight("slow") == 2 and slow.holding == 2
    assert value(app, "driftgate_mirror_total", variant="slow", outcome="dropped") == dropped0 + 3
    await asyncio.wait_for(app.gateway.mirror.drain(), SLOW_TIMEOUT_S + 30)
    assert value(app, "driftgate_mirror_total", variant="slow", outcome="timeout") == timeouts0 + 2
    assert slow.holding == 0 and app.gateway.mirror.in_flight("slow") == 0


async def test_request_pinned_to_a_shadow_is_answered_by_it(app: App, stub: pb_grpc.GatewayStub) -> None:
    compared0 = (await summary(stub))["twin"].compared
    reply = await stub.Generate(pb.GenerateRequest(prompt=PROMPTS[0], max_tokens=6, variant="twin"))
    assert reply.variant == "twin" and "Paris" in reply.text
    await app.gateway.mirror.drain()
    assert (await summary(stub))["twin"].compared == compared0  # answers from a shadow are not mirrored


async def test_list_variants_reports_roles_and_readiness(stub: pb_grpc.GatewayStub) -> None:
    resp = await stub.ListVariants(pb.ListVariantsRequest())
    roles = {v.name: (v.role, v.ready, v.sample_rate, v.score_rate) for v in resp.variants}
    assert roles["dense"] == (pb.ROLE_PRIMARY, True, 0.0, 0.0)
    assert roles["twin"] == (pb.ROLE_SHADOW, True, 1.0, 1.0)


async def test_score_rate_0_compares_copies_on_their_text_only(
    app: App, stub: pb_grpc.GatewayStub, dense_engine: Engine
) -> None:
    """score_rate 0 (config or SetTraffic): copies compared, none scored teacher-forced (no KL). A
    shadow whose KL gate is on cannot have it: its verdict would wait for KL samples forever."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SetTraffic(pb.SetTrafficRequest(variant="twin", score_rate=0.0))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gate.max_kl needs teacher-forced KL scores of twin" in str(refused.value.details())
    config = make_config(dense_variant(), shadow("text", gate={"max_kl": None}))
    text_app = await start_app(config, engines={"dense": dense_engine, "text": dense_engine})
    try:
        async with grpc.aio.insecure_channel(text_app.address) as channel:
            text_stub = pb_grpc.GatewayStub(channel)
            listed = await text_stub.SetTraffic(pb.SetTrafficRequest(variant="text", score_rate=0.0))
            assert {v.name: v.score_rate for v in listed.variants}["text"] == 0.0
            for prompt in PROMPTS[:3]:
                reply = await text_stub.Generate(pb.GenerateRequest(prompt=prompt, max_tokens=8))
                assert reply.variant == "dense" and reply.text
            await asyncio.wait_for(text_app.gateway.mirror.drain(), 60)
            text = (await summary(text_stub))["text"]
    finally:
        await text_app.stop()
    assert text.compared == 3 and text.exact_match_rate == 1.0
    assert text.kl_scored == 0 and not text.HasField("mean_kl")
    assert value(text_app, "driftgate_drift_kl_count", variant="text") == 0
    assert value(text_app, "driftgate_drift_token_agreement_count", variant="text") == 3


async def test_shutdown_cancels_mirrored_copies(dense_engine: Engine) -> None:
    hanging = HangingEngine(dense_engine)
    config = make_config(dense_variant(), shadow("slow", timeout_s=60.0))
    app = await start_app(config, engines={"dense": dense_engine, "slow": hanging})
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            reply = await pb_grpc.GatewayStub(channel).Generate(
                pb.GenerateRequest(prompt=PROMPTS[0], max_tokens=4)
            )
        assert reply.variant == "dense" and hanging.holding == 1
    finally:
        await asyncio.wait_for(app.stop(), 30)
    assert hanging.holding == 0 and hanging.cancelled == 1


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pruned_app(dense_engine: Engine) -> AsyncIterator[App]:
    """dense + twin + a real compressed shadow (global magnitude pruning, 50%) on its own engine."""
    from compress.api import build_recipes
    from serving.engines.vllm_engine import VllmEngine

    recipe = "magnitude-global-all-50"
    path = (await asyncio.to_thread(build_recipes, model_dir(), [recipe]))[recipe]
    pruned_cfg = VariantConfig(
        name="pruned",
        model=str(path),
        role=Role.SHADOW,
        engine=EngineConfig(max_model_len=512, kv_cache_gib=0.25, cpu_cores="1"),
    )
    pruned = await VllmEngine.start(pruned_cfg)
    config = make_config(dense_variant(), shadow("twin"), pruned_cfg)
    running = await start_app(config, engines={"dense": dense_engine, "twin": dense_engine, "pruned": pruned})
    yield running
    await running.stop()
    await pruned.shutdown()


async def test_compressed_shadow_drifts_more_than_an_identical_one(pruned_app: App) -> None:
    async with grpc.aio.insecure_channel(pruned_app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        for prompt in PROMPTS:
            reply = await stub.Generate(pb.GenerateRequest(prompt=prompt, max_tokens=12))
            assert reply.variant == "dense"
        await asyncio.wait_for(pruned_app.gateway.mirror.drain(), 120)
        drift = await summary(stub)
        pinned = await stub.Generate(pb.GenerateRequest(prompt=PROMPTS[0], max_tokens=6, variant="pruned"))
    twin, pruned = drift["twin"], drift["pruned"]
    assert twin.compared == pruned.compared == len(PROMPTS)
    assert pruned.mean_token_agreement < twin.mean_token_agreement == 1.0
    assert pruned.mean_teacher_forced_agreement < twin.mean_teacher_forced_agreement
    assert pruned.mean_kl > max(0.05, 10 * twin.mean_kl)
    assert pinned.variant == "pruned"
