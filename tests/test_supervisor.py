"""The supervisor: variants join and leave the gateway with their engine's health, and the gRPC
health status follows the primary (fakes: pure lifecycle logic)."""

from __future__ import annotations

import asyncio

import pytest

from serving.config import Config, Role, VariantConfig
from serving.errors import Unavailable
from serving.gateway import Gateway, GenerateCall
from serving.stats import ListSink
from serving.supervisor import Supervisor
from tests.fakes import FakeEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Flaky(FakeEngine):
    """A fake whose health (and connect, like a remote engine's) fails while `down`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = False
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1
        await self.check_health()

    async def check_health(self) -> None:
        if self.down:
            raise Unavailable(f"{self.name} is down")


async def test_variants_follow_their_health_and_serving_follows_the_primary() -> None:
    config = Config(variants=[VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW)])
    sink = ListSink()
    gateway = Gateway(config, sink)
    engines = {"dense": Flaky("dense"), "shadow": Flaky("shadow")}
    serving: list[bool] = []

    async def set_serving(value: bool) -> None:
        serving.append(value)

    supervisor = Supervisor(gateway, engines, sink, set_serving)
    engines["dense"].down = True
    await supervisor.check_once()
    assert serving == [False] and gateway.is_attached("shadow") and not gateway.is_attached("dense")
    with pytest.raises(Unavailable, match="no variant is ready"):
        await gateway.generate(GenerateCall(prompt="hi"))

    engines["dense"].down = False
    await supervisor.check_once()
    assert serving == [False, True] and gateway.is_ready()
    assert (await gateway.generate(GenerateCall(prompt="hi"))).variant == "dense"

    engines["shadow"].down = True  # a dead shadow costs the primary nothing
    await supervisor.check_once()
    assert serving == [False, True] and not gateway.is_attached("shadow")
    await gateway.generate(GenerateCall(prompt="hi"))
    await gateway.mirror.drain()
    assert [m.outcome for m in sink.mirrors][-1] == "dropped"

    engines["shadow"].down = False
    engines["dense"].down = True
    await supervisor.check_once()
    assert serving == [False, True, False] and gateway.is_attached("shadow")
    assert engines["dense"].connects == 2 and engines["shadow"].connects == 1  # connect until it succeeds
    assert sink.readiness == [
        ("shadow", True),
        ("dense", True),
        ("shadow", False),
        ("dense", False),  # one round: in config order
        ("shadow", True),
    ]


async def test_a_failed_engine_is_restarted_with_backoff_and_bounded() -> None:
    config = Config(variants=[VariantConfig(name="dense")])
    sink = ListSink()
    gateway = Gateway(config, sink)
    dead = Flaky("dense")
    dead.down = True
    built: list[Flaky] = []
    fail_builds = 2

    async def restart(name: str) -> Flaky:
        nonlocal fail_builds
        if fail_builds:
            fail_builds -= 1
            raise RuntimeError("no memory")
        built.append(Flaky(name))
        return built[-1]

    async def set_serving(value: bool) -> None:
        return None

    supervisor = Supervisor(
        gateway,
        {"dense": dead},
        sink,
        set_serving,
        restart=restart,
        restartable=frozenset({"dense"}),
        backoff_s=0.01,
    )
    await supervisor.check_once()
    assert not gateway.is_ready()
    for _ in range(100):  # backoff 0.01, 0.02, 0.04 s: two failed builds, then a good one
        await asyncio.sleep(0.02)
        await supervisor.check_once()
        if gateway.is_ready():
            break
    assert gateway.is_ready() and supervisor.engines["dense"] is built[0]
    assert sink.restarts == [("dense", "failed"), ("dense", "failed"), ("dense", "restarted")]

    built[0].down = True  # fails again, and every rebuild fails: bounded
    fail_builds = 99
    bounded = Supervisor(
        gateway, {"dense": built[0]}, sink, set_serving, restart=restart, restartable=frozenset({"dense"}),
        max_restarts=3, backoff_s=0.001,
    )  # fmt: skip
    await bounded.check_once()
    for _ in range(50):
        await asyncio.sleep(0.02)
    assert sink.restarts.count(("dense", "failed")) == 2 + 3 and not gateway.is_ready()
    await bounded.close()


class Holding(Flaky):
    """A fake that says it holds `held` requests; `num_unfinished` raises while `broken`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.held = 0
        self.broken = False

    def num_unfinished(self) -> int:
        if self.broken:
            raise Unavailable(f"{self.name} has been shut down")
        return self.held


async def test_each_round_samples_every_engines_unfinished_requests_into_the_gauge() -> None:
    from prometheus_client import CollectorRegistry

    from serving.metrics import PrometheusSink
    from serving.stats import FanoutSink

    config = Config(variants=[VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW)])
    registry = CollectorRegistry()
    listed = ListSink()
    sink = FanoutSink(PrometheusSink(registry, config.variants), listed)
    engines = {"dense": Holding("dense"), "shadow": Holding("shadow")}

    async def set_serving(value: bool) -> None:
        return None

    def gauge(variant: str) -> float | None:
        return registry.get_sample_value("driftgate_engine_unfinished_requests", {"variant": variant})

    supervisor = Supervisor(Gateway(config, sink), engines, sink, set_serving)
    assert gauge("dense") == 0.0 and gauge("shadow") == 0.0  # created at zero with the variants
    engines["dense"].held, engines["shadow"].held = 3, 5
    await supervisor.check_once()
    assert (gauge("dense"), gauge("shadow")) == (3.0, 5.0)
    engines["dense"].held, engines["shadow"].broken = 0, True
    await supervisor.check_once()  # an engine that cannot say keeps its last sample
    assert (gauge("dense"), gauge("shadow")) == (0.0, 5.0)
    assert listed.unfinished_now == {"dense": 0, "shadow": 5}


async def test_engines_attached_before_the_first_round_are_reported_ready() -> None:
    """`start_app` attaches in-process engines as it builds them: the first round must still turn
    their `driftgate_variant_ready` gauge to 1 (it stayed 0 before)."""
    from prometheus_client import CollectorRegistry

    from serving.metrics import PrometheusSink

    config = Config(variants=[VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW)])
    registry = CollectorRegistry()
    sink = PrometheusSink(registry, config.variants)
    gateway = Gateway(config, sink)
    engines = {"dense": Flaky("dense"), "shadow": Flaky("shadow")}
    for name, engine in engines.items():
        gateway.attach(name, engine)

    async def set_serving(value: bool) -> None:
        return None

    def ready() -> list[float | None]:
        return [registry.get_sample_value("driftgate_variant_ready", {"variant": n}) for n in engines]

    supervisor = Supervisor(gateway, engines, sink, set_serving)
    assert ready() == [0.0, 0.0]
    await supervisor.check_once()
    assert ready() == [1.0, 1.0]
    engines["shadow"].down = True
    await supervisor.check_once()
    assert ready() == [1.0, 0.0]
