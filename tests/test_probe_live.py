"""Online probing on the real dense engine: synthetic probe rounds and scoring of live requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from serving.app import App, start_app
from serving.config import ProbeConfig, Role
from serving.engines.base import Engine
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.probes.facts import Fact, dumps_probes, load_builtin
from serving.probes.live import LiveProbeScorer, flip_of
from serving.probes.scoring import is_correct
from serving.stats import ListSink
from tests.conftest import FRANCE, dense_variant, make_config
from tests.fakes import RaisingEngine

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]


def facts() -> list[Fact]:
    return load_builtin("capitals-small")[:8]


def probe_cfg(tmp_path: Path, rate: float) -> ProbeConfig:
    path = tmp_path / "probes.jsonl"
    path.write_text(dumps_probes(facts()))
    return ProbeConfig(enabled=True, rate_per_s=rate, file=str(path))


def count(app: App, metric: str, variant: str, **labels: str) -> float:
    value = app.registry.get_sample_value(metric, {"variant": variant, **labels})
    return value or 0.0


def asked(app: App, variant: str) -> float:
    return count(app, "driftgate_probe_total", variant, relation="capital")


async def wait_for(cond: object, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond() and loop.time() < end:  # type: ignore[operator]
        await asyncio.sleep(0.1)
    return bool(cond())  # type: ignore[operator]


async def test_probe_traffic_counts_while_the_gateway_idles(dense_engine: Engine, tmp_path: Path) -> None:
    config = make_config(
        dense_variant(),
        dense_variant("twin", role=Role.SHADOW, sample_rate=0.0),
        dense_variant("broken", role=Role.CANDIDATE, weight=0.0),
        probes=probe_cfg(tmp_path, rate=5.0),
    )
    engines = {"dense": dense_engine, "twin": dense_engine, "broken": RaisingEngine(dense_engine)}
    app = await start_app(config, engines=engines)  # type: ignore[dict-item]
    try:
        assert await wait_for(lambda: asked(app, "dense") >= 6 and asked(app, "twin") >= 6, 20.0)
        task = app.background[0]
        assert not task.done()
        failed = count(app, "driftgate_requests_total", "broken", role="candidate", code="INTERNAL")
        assert failed >= 6 and asked(app, "broken") == 0
        assert count(app, "driftgate_requests_total", "dense", role="primary", code="OK") >= 6
        right = count(app, "driftgate_probe_correct_total", "dense", relation="capital")
        assert 0 < right <= asked(app, "dense")
        before = asked(app, "dense")
        assert await wait_for(lambda: asked(app, "dense") >= before + 2, 10.0)  # still going
    finally:
        await app.stop()
    assert task.done()
    assert dense_engine.num_unfinished() == 0
    assert app.gateway.on_answer is None


async def test_live_requests_on_probe_prompts_are_scored(dense_engine: Engine, tmp_path: Path) -> None:
    config = make_config(
        dense_variant(), dense_variant("twin", role=Role.SHADOW), probes=probe_cfg(tmp_path, rate=0.0)
    )
    app = await start_app(config, engines={"dense": dense_engine, "twin": dense_engine})
    try:
        assert await wait_for(lambda: app.gateway.on_answer is not None, 5.0)
        fact = facts()[0]
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            reply = await stub.Generate(pb.GenerateRequest(prompt=f"  {fact.prompt} ", max_tokens=8))
            await stub.Generate(pb.GenerateRequest(prompt=FRANCE + " a city", max_tokens=4))
        await app.gateway.mirror.drain()
        for name in ("dense", "twin"):
            assert asked(app, name) == 1
            right = count(app, "driftgate_probe_correct_total", name, relation="capital")
            assert right == float(is_correct(reply.text, fact))
    finally:
        await app.stop()


async def test_flips_are_relative_to_the_primary_answer() -> None:
    sink = ListSink()
    scorer = LiveProbeScorer(facts(), sink)
    prompt = facts()[0].prompt  # Argentina -> Buenos Aires
    scorer("twin", prompt, " Buenos Aires.", " La Paz")
    scorer("twin", prompt, " La Paz", " Buenos Aires")
    scorer("dense", prompt, " Buenos Aires", None)
    scorer("dense", "The capital of Narnia is", " Cair Paravel", None)
    assert [(p.variant, p.correct, p.flip) for p in sink.probes] == [
        ("twin", True, "gained"),
        ("twin", False, "lost"),
        ("dense", True, None),
    ]
    assert (flip_of(None, True), flip_of(True, True), flip_of(False, False)) == (None, None, None)
