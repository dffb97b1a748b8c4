"""The gateway-added latency: `serving.span` (pure) and what the gateway reports with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import pytest

from serving.config import Config, VariantConfig
from serving.engines.base import Chunk, SamplingSpec
from serving.errors import InvalidArgument
from serving.gateway import Gateway, GenerateCall, StreamEvent
from serving.span import Span
from serving.stats import ListSink
from tests.fakes import FakeEngine


def test_added_is_the_gateway_span_minus_the_engine_span() -> None:
    span = Span(received=10.0, engine_called=10.002, engine_first=10.050, engine_last=10.300)
    span.delivered_first = 10.051
    first, total = span.added(done=10.3015)  # type: ignore[misc]
    assert first == pytest.approx(0.003)  # 2 ms before the engine, 1 ms to hand the first event over
    assert total == pytest.approx(0.0035)  # 2 ms before, 1.5 ms after the engine's last output


def test_added_counts_the_door_done_time_when_no_event_came_before_the_last() -> None:
    span = Span(received=1.0, engine_called=1.001, engine_first=1.2, engine_last=1.2)
    assert span.added(done=1.204) == pytest.approx((0.005, 0.005))


def test_a_door_that_marks_its_hand_offs_overrides_the_resume_marks() -> None:
    span = Span(received=1.0, engine_called=1.001, engine_first=1.2, engine_last=1.5)
    span.handed_off()
    assert span.door_marks and span.delivered_last is None  # not the final event
    span.delivered_first = 1.201
    span.delivered()  # the stream resumed after the door's write completed: ignored now
    assert (span.delivered_first, span.delivered_last) == (1.201, None)
    assert span.added(done=1.9) == pytest.approx((0.002, 0.401))  # the last event was not handed off
    span.handed_off(last=True)
    last = span.delivered_last
    assert span.delivered_first == 1.201 and last is not None and last > 1.5
    span.delivered_last = 1.502
    assert span.added(done=1.9) == pytest.approx((0.002, 0.003))  # not the 400 ms after the hand-off


def test_nothing_is_added_for_an_engine_that_never_finished() -> None:
    assert Span(received=1.0).added(2.0) is None
    assert Span(received=1.0, engine_called=1.1, engine_first=1.2).added(2.0) is None


class SlowEngine(FakeEngine):
    """Takes `delay_s` before each chunk, like a decoding engine."""

    def __init__(self, delay_s: float) -> None:
        super().__init__("dense", text="one two three four")
        self.delay_s = delay_s

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        async for chunk in super().generate(prompt, sampling, request_id, logprobs, prompt_token_ids):
            await asyncio.sleep(self.delay_s)
            yield chunk


def _gateway(delay_s: float) -> tuple[Gateway, ListSink]:
    sink = ListSink()
    gateway = Gateway(Config(variants=[VariantConfig(name="dense")]), sink)
    gateway.attach("dense", SlowEngine(delay_s))
    return gateway, sink


async def test_the_engines_time_is_not_counted_as_added() -> None:
    gateway, sink = _gateway(delay_s=0.05)  # 200 ms of "decoding"
    reply = await gateway.generate(GenerateCall(prompt="count", door="grpc"))
    assert reply.completion_tokens == 4
    chunks = [e async for e in gateway.stream(GenerateCall(prompt="count", door="grpc"))]
    assert chunks[-1].final is not None
    unary, streamed = sink.overheads
    assert (unary.variant, unary.door, unary.first_s) == ("dense", "grpc", None)  # no first event
    assert streamed.first_s is not None and 0.0 <= streamed.first_s < 0.04
    for added in (unary, streamed):
        assert 0.0 <= added.total_s < 0.04  # far below the engine's 200 ms
    assert all(r.latency_s >= 0.2 for r in sink.requests)


async def test_a_slow_door_and_the_time_before_the_gateway_are_counted() -> None:
    gateway, sink = _gateway(delay_s=0.01)
    received = time.perf_counter() - 0.03  # the door took 30 ms before handing the call over
    async with aclosing(gateway.stream(GenerateCall(prompt="count", received_at=received))) as events:
        async for event in events:
            await asyncio.sleep(0.02)  # the door spends 20 ms on every event it takes
            if event.final is not None:
                break
    (added,) = sink.overheads
    assert added.door == "internal" and added.first_s is not None
    assert 0.05 <= added.first_s < 0.2  # 30 ms before + 20 ms on the first event
    assert 0.05 <= added.total_s < 0.2  # 30 ms before + 20 ms on the last


async def test_a_door_that_hands_off_before_a_slow_write_is_not_charged_for_the_write() -> None:
    """The gRPC door's case: it marks each hand-off, then its transport takes 20 ms to report the
    write done (grpc.aio's completion trip), which delays no byte and is not counted."""
    gateway, sink = _gateway(delay_s=0.01)
    received = time.perf_counter() - 0.03
    async with aclosing(gateway.stream(GenerateCall(prompt="count", received_at=received))) as events:
        async for event in events:
            event.handed_off()
            await asyncio.sleep(0.02)
            if event.final is not None:
                break
    (added,) = sink.overheads
    assert added.first_s is not None
    assert 0.03 <= added.first_s < 0.045  # the 30 ms before the gateway, not the write
    assert 0.03 <= added.total_s < 0.045


async def test_failed_requests_report_no_added_latency() -> None:
    gateway, sink = _gateway(delay_s=0.0)
    with pytest.raises(InvalidArgument):
        await gateway.generate(GenerateCall(prompt=""))
    assert sink.overheads == []


async def test_the_grpc_door_marks_its_own_hand_offs_and_the_http_door_leaves_them_to_the_gateway() -> None:
    """Over real servers: every gRPC stream's span is marked by the servicer before each write
    (`door_marks`), an HTTP stream's by the gateway when the door resumes it."""
    import grpc
    import httpx

    from serving.app import start_app
    from serving.config import ServerConfig
    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc

    config = Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=0), variants=[VariantConfig(name="dense")]
    )
    app = await start_app(config, engines={"dense": SlowEngine(0.0)})
    spans: dict[str, list[Span]] = {"grpc": [], "http": []}
    stream = app.gateway.stream

    async def recording(call: GenerateCall) -> AsyncGenerator[StreamEvent, None]:
        async with aclosing(stream(call)) as events:
            async for event in events:
                if event.final is not None and event.span is not None:
                    spans[call.door].append(event.span)
                yield event

    app.gateway.stream = recording  # type: ignore[method-assign]
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            chunks = [
                c async for c in pb_grpc.GatewayStub(channel).GenerateStream(pb.GenerateRequest(prompt="x"))
            ]
        assert chunks[-1].finished and "".join(c.text for c in chunks) == "one two three four"
        body = {"model": "dense", "prompt": "x", "stream": True}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
            answer = await http.post("/v1/completions", json=body)
        assert answer.status_code == 200 and answer.text.rstrip().endswith("data: [DONE]")
    finally:
        await app.stop()
    ((grpc_span,), (http_span,)) = spans["grpc"], spans["http"]
    assert grpc_span.door_marks and not http_span.door_marks
    for span in (grpc_span, http_span):
        assert span.engine_first is not None and span.delivered_first is not None
        assert span.delivered_first >= span.engine_first
