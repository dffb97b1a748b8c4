"""The promotion verdict of a running gateway: evidence gathered on the hot path, GetVerdict,
the gauges, and `driftgate gate` exit codes (fake engines, real gRPC server and registry)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from serving.app import App, start_app
from serving.commands.main import main as driftgate
from serving.config import Config, Role, ServerConfig, VariantConfig
from serving.gate.book import GateBook
from serving.gate.verdict import GateConfig
from serving.gateway import GenerateCall
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.stats import LATENCY_BUCKETS, ProbeStats, RequestStats
from tests.fakes import FakeEngine

# Fakes carry no probe traffic and only placeholder logprobs (every token certain): the
# answer-comparison gates judge them.
FAKE_GATES = {"probe_margin": None, "max_kl": None, "min_exact_match": 0.5, "min_token_agreement": 0.8}


def test_gate_book_pairs_probes_and_counts_failures() -> None:
    book = GateBook(LATENCY_BUCKETS)
    for code, latency in (("OK", 0.02), ("OK", 0.3), ("UNAVAILABLE", 1.0), ("CANCELLED", 5.0)):
        book.request(RequestStats("v", "shadow", code, latency))
    for primary_right, right in ((True, True), (True, False), (False, True), (False, False), (None, True)):
        book.probe(ProbeStats("v", "capital", right, None, primary_right))
    t = book.tally("v")
    assert (t.requests, t.errors) == (4, 1)
    assert sum(t.latency_counts) == 2  # failed and cancelled requests have no latency
    assert t.latency_counts[1] == 1 and t.latency_counts[5] == 1
    assert (t.both, t.lost, t.gained, t.neither) == (1, 1, 1, 1)


def _config(refresh_s: float = 0.0) -> Config:
    shadow = {"role": Role.SHADOW, "max_in_flight": 1000}
    return Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=-1, verdict_refresh_s=refresh_s),
        gate=GateConfig().with_overrides(FAKE_GATES),
        variants=[
            VariantConfig(name="dense"),
            VariantConfig(name="twin", **shadow),  # type: ignore[arg-type]
            VariantConfig(name="garbage", **shadow),  # type: ignore[arg-type]
            VariantConfig(name="quiet", sample_rate=0.0, **shadow),  # type: ignore[arg-type]
        ],
    )


@pytest_asyncio.fixture(loop_scope="session")
async def app() -> AsyncIterator[App]:
    engines = {
        "dense": FakeEngine("dense", "Paris is the capital"),
        "twin": FakeEngine("twin", "Paris is the capital"),
        "garbage": FakeEngine("garbage", "the the the the", first_id=100),
        "quiet": FakeEngine("quiet", "Paris is the capital"),
    }
    running = await start_app(_config(refresh_s=0.05), engines=engines)  # type: ignore[arg-type]
    for i in range(120):
        await running.gateway.generate(GenerateCall(prompt=f"question {i}"))
    await running.gateway.mirror.drain()
    yield running
    await running.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_get_verdict_judges_each_shadow(app: App) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        reply = await stub.GetVerdict(pb.GetVerdictRequest())
        verdicts = {v.variant: v for v in reply.verdicts}
        assert reply.primary == "dense" and set(verdicts) == {"twin", "garbage", "quiet"}
        assert verdicts["twin"].verdict == pb.VERDICT_PASS
        assert verdicts["garbage"].verdict == pb.VERDICT_FAIL
        assert verdicts["quiet"].verdict == pb.VERDICT_UNDECIDED  # never mirrored: no evidence
        exact = next(c for c in verdicts["garbage"].checks if c.name == "exact_match")
        assert exact.verdict == pb.VERDICT_FAIL and exact.samples == 120 and exact.upper < exact.threshold
        summary = await stub.GetDriftSummary(pb.GetDriftSummaryRequest())
        assert {v.variant: v.verdict for v in summary.variants}["garbage"] == pb.VERDICT_FAIL
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetVerdict(pb.GetVerdictRequest(variant="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetVerdict(pb.GetVerdictRequest(variant="dense"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.asyncio(loop_scope="session")
async def test_gauges_follow_the_verdicts(app: App) -> None:
    def value(name: str, **labels: str) -> float | None:
        return app.registry.get_sample_value(name, labels)

    for _ in range(100):
        if value("driftgate_gate_verdict", variant="garbage") == -1.0:
            break
        await asyncio.sleep(0.05)
    assert value("driftgate_gate_verdict", variant="garbage") == -1.0
    assert value("driftgate_gate_verdict", variant="twin") == 1.0
    assert value("driftgate_gate_verdict", variant="quiet") == 0.0
    assert value("driftgate_gate_check", variant="garbage", check="exact_match") == -1.0
    assert value("driftgate_gate_check_samples", variant="twin", check="exact_match") == 120.0


@pytest.mark.asyncio(loop_scope="session")
async def test_gate_command_exit_codes_follow_the_verdicts(app: App) -> None:
    async def gate(*args: str) -> int:
        return await asyncio.to_thread(driftgate, ["gate", "--target", app.address, *args])

    assert await gate("--variant", "twin") == 0
    assert await gate("--variant", "garbage") == 1
    assert await gate("--variant", "quiet") == 3
    assert await gate() == 1  # any FAIL fails the pipeline
    assert await gate("--variant", "nope") == 2


def test_gate_command_on_a_probe_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def row(p_at_1: float, lost: int, gained: int) -> dict[str, object]:
        return {"n": 200, "p_at_1": p_at_1, "flips_lost": lost, "flips_gained": gained}

    report = {
        "primary": "dense",
        "variants": {"dense": row(0.6, 0, 0), "int8": row(0.6, 4, 4), "pruned": row(0.2, 90, 10)},
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert driftgate(["gate", "--report", str(path), "--variant", "int8"]) == 0
    assert driftgate(["gate", "--report", str(path), "--variant", "pruned"]) == 1
    out = capsys.readouterr().out
    assert "int8" in out and "pruned" in out and "PASS" in out and "FAIL" in out
