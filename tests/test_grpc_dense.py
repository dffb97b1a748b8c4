"""The dense model served by a real vLLM engine through a real grpc.aio server."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.app import App
from serving.engines.base import Engine
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import FRANCE, model_dir

COUNT = "Count from one to five hundred: one, two, three,"

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]


def _sample(app: App, name: str, labels: dict[str, str]) -> float:
    value = app.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_unary_greedy_answers_paris(stub: pb_grpc.GatewayStub) -> None:
    reply = await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=8, temperature=0.0))
    assert "Paris" in reply.text
    assert reply.variant == "dense"
    assert reply.finish_reason in ("length", "stop")
    assert reply.prompt_tokens == 5 and 1 <= reply.completion_tokens <= 8
    assert reply.request_id  # generated when the client sends none


async def test_stream_text_equals_unary_text(stub: pb_grpc.GatewayStub) -> None:
    req = pb.GenerateRequest(prompt=FRANCE, max_tokens=16, temperature=0.0)
    unary = await stub.Generate(req)
    chunks = [c async for c in stub.GenerateStream(req)]
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == unary.text
    assert [c.finished for c in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1]
    assert (last.variant, last.completion_tokens, last.finish_reason) == (
        "dense",
        unary.completion_tokens,
        unary.finish_reason,
    )


async def test_stream_interval_sends_fewer_chunks_with_the_same_answer(
    app: App, stub: pb_grpc.GatewayStub
) -> None:
    """GenerateStream's stream_interval (vLLM's): the first token at once, then every 5 tokens and
    the rest at the end. A unary answer is asked for whole (first token, then the rest) and still
    has its TTFT recorded."""
    every = pb.GenerateRequest(prompt=COUNT, max_tokens=12, ignore_eos=True)
    one_by_one = [c async for c in stub.GenerateStream(every)]
    batched_req = pb.GenerateRequest(prompt=COUNT, max_tokens=12, ignore_eos=True, stream_interval=5)
    batched = [c async for c in stub.GenerateStream(batched_req)]
    assert "".join(c.text for c in batched) == "".join(c.text for c in one_by_one)
    assert len(one_by_one) == 12 and len(batched) == 4  # 1, 5, 5 tokens, then the last with the summary
    assert batched[-1].completion_tokens == 12 and batched[-1].finished
    # The HTTP door takes vLLM's field too: the same four chunks of text as server-sent events.
    body = {"model": "dense", "prompt": COUNT, "max_tokens": 12, "ignore_eos": True, "stream": True}
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.http_port}/v1/completions"
        async with session.post(url, json={**body, "stream_interval": 5}) as resp:
            events = [json.loads(line[6:]) async for line in resp.content if line.startswith(b"data: {")]
    texts = [e["choices"][0]["text"] for e in events if e.get("choices") and e["choices"][0]["text"]]
    assert "".join(texts) == "".join(c.text for c in one_by_one) and len(texts) == 4
    ttft = {"variant": "dense", "role": "primary"}
    before = _sample(app, "driftgate_time_to_first_token_seconds_count", ttft)
    reply = await stub.Generate(every)
    assert reply.text == "".join(c.text for c in one_by_one)
    assert _sample(app, "driftgate_time_to_first_token_seconds_count", ttft) == before + 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [c async for c in stub.GenerateStream(pb.GenerateRequest(prompt=COUNT, stream_interval=0))]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stream_interval must be in" in (info.value.details() or "")


async def test_health_is_serving(app: App) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "driftgate.v1.Gateway"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def _reflect_and_call(address: str) -> tuple[list[str], str]:
    """A generic client with no project stubs: discovers the service by reflection."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = list(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)
        service = pool.FindServiceByName("driftgate.v1.Gateway")
        method = service.methods_by_name["Generate"]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        reply = call(request_cls(prompt=FRANCE, max_tokens=8, temperature=0.0), timeout=60)
        return services, reply.text


async def test_reflection_client_gets_the_same_answer(app: App, stub: pb_grpc.GatewayStub) -> None:
    services, text = await asyncio.to_thread(_reflect_and_call, app.address)
    assert "driftgate.v1.Gateway" in services and "grpc.health.v1.Health" in services
    direct = await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=8, temperature=0.0))
    assert text == direct.text and "Paris" in text


@pytest.mark.parametrize(
    ("request_kw", "code", "fragment"),
    [
        ({"prompt": ""}, grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty"),
        ({"prompt": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty"),
        ({"prompt": FRANCE, "max_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
        ({"prompt": FRANCE, "max_tokens": 600}, grpc.StatusCode.INVALID_ARGUMENT, "context of 512"),
        ({"prompt": "word " * 600, "max_tokens": 4}, grpc.StatusCode.INVALID_ARGUMENT, "exceeds"),
        ({"prompt": FRANCE, "temperature": -0.5}, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        ({"prompt": FRANCE, "temperature": math.nan}, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        ({"prompt": FRANCE, "top_p": 0.0}, grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        ({"prompt": FRANCE, "top_p": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        ({"prompt": FRANCE, "stop": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "stop"),
        ({"prompt": FRANCE, "variant": "nope"}, grpc.StatusCode.NOT_FOUND, "unknown variant 'nope'"),
    ],
)
async def test_bad_input_gets_a_clear_status(
    stub: pb_grpc.GatewayStub, request_kw: dict[str, object], code: grpc.StatusCode, fragment: str
) -> None:
    for call in (stub.Generate, lambda r: _drain(stub.GenerateStream(r))):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(pb.GenerateRequest(**request_kw))  # type: ignore[arg-type]
        assert info.value.code() == code
        assert fragment in (info.value.details() or "")
        assert "Traceback" not in (info.value.details() or "")


async def _drain(stream: AsyncIterator[pb.GenerateChunk]) -> list[pb.GenerateChunk]:
    return [c async for c in stream]


async def _wait_idle(engine: Engine, timeout: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while engine.num_unfinished() and loop.time() < end:
        await asyncio.sleep(0.05)
    return engine.num_unfinished()


async def test_cancelled_stream_aborts_the_engine_request(
    stub: pb_grpc.GatewayStub, dense_engine: Engine
) -> None:
    call = stub.GenerateStream(pb.GenerateRequest(prompt=COUNT, max_tokens=400))
    first = await call.read()
    assert first.text and not first.finished  # mid-stream: the count goes on for 400 tokens
    assert dense_engine.num_unfinished() == 1
    call.cancel()
    assert await _wait_idle(dense_engine) == 0


async def test_deadline_exceeded_aborts_the_engine_request(
    stub: pb_grpc.GatewayStub, dense_engine: Engine
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(pb.GenerateRequest(prompt=COUNT, max_tokens=400), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await _wait_idle(dense_engine) == 0


async def test_list_variants(stub: pb_grpc.GatewayStub) -> None:
    resp = await stub.ListVariants(pb.ListVariantsRequest())
    (v,) = resp.variants
    assert (v.name, v.role, v.ready, v.weight) == ("dense", pb.ROLE_PRIMARY, True, 1.0)
    assert v.model_path.endswith("smollm2-135m-instruct")


async def test_metrics_count_requests_and_tokens(app: App, stub: pb_grpc.GatewayStub) -> None:
    labels = {"variant": "dense", "role": "primary"}
    ok_before = _sample(app, "driftgate_requests_total", {**labels, "code": "OK"})
    gen_before = _sample(app, "driftgate_generated_tokens_total", labels)
    prompt_before = _sample(app, "driftgate_prompt_tokens_total", labels)
    lat_before = _sample(app, "driftgate_request_latency_seconds_count", labels)
    ttft_before = _sample(app, "driftgate_time_to_first_token_seconds_count", labels)
    itl_before = _sample(app, "driftgate_inter_token_latency_seconds_count", labels)
    replies = [await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=6)) for _ in range(3)]
    assert _sample(app, "driftgate_requests_total", {**labels, "code": "OK"}) == ok_before + 3
    generated = sum(r.completion_tokens for r in replies)
    assert _sample(app, "driftgate_generated_tokens_total", labels) == gen_before + generated
    assert _sample(app, "driftgate_prompt_tokens_total", labels) == prompt_before + 15
    assert _sample(app, "driftgate_request_latency_seconds_count", labels) == lat_before + 3
    # one first token per request, and a gap between each two tokens after it
    assert _sample(app, "driftgate_time_to_first_token_seconds_count", labels) == ttft_before + 3
    assert _sample(app, "driftgate_inter_token_latency_seconds_count", labels) == itl_before + generated - 3
    assert _sample(app, "driftgate_requests_in_flight", {"variant": "dense"}) == 0


async def test_metrics_show_what_the_gateway_adds_apart_from_the_engine(
    app: App, stub: pb_grpc.GatewayStub
) -> None:
    """The engine decodes 12 tokens (over 100 ms here); the gateway's own share stays far below."""
    series = "driftgate_gateway_added_seconds"
    labels = {"variant": "dense", "door": "grpc"}
    before = {
        (phase, le): _sample(app, f"{series}_bucket", {**labels, "phase": phase, "le": le})
        for phase in ("first", "total")
        for le in ("0.1", "+Inf")
    }
    for _ in range(2):
        reply = await stub.Generate(pb.GenerateRequest(prompt=COUNT, max_tokens=12))
        assert reply.completion_tokens == 12
    chunks = [c async for c in stub.GenerateStream(pb.GenerateRequest(prompt=COUNT, max_tokens=12))]
    assert chunks[-1].finished
    for (phase, le), count in before.items():  # a unary answer has no first event: 1 first, 3 totals
        now = _sample(app, f"{series}_bucket", {**labels, "phase": phase, "le": le})
        assert now == count + (1 if phase == "first" else 3), (phase, le)


async def test_metrics_count_cancelled_requests(
    app: App, stub: pb_grpc.GatewayStub, dense_engine: Engine
) -> None:
    labels = {"variant": "dense", "role": "primary", "code": "CANCELLED"}
    before = _sample(app, "driftgate_requests_total", labels)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Generate(pb.GenerateRequest(prompt=COUNT, max_tokens=400), timeout=0.3)
    assert await _wait_idle(dense_engine) == 0
    for _ in range(50):  # the handler's cleanup records the outcome just after the abort
        if _sample(app, "driftgate_requests_total", labels) == before + 1:
            break
        await asyncio.sleep(0.1)
    assert _sample(app, "driftgate_requests_total", labels) == before + 1
    assert _sample(app, "driftgate_requests_in_flight", {"variant": "dense"}) == 0


async def test_chat_request_is_answered_with_the_models_chat_template(stub: pb_grpc.GatewayStub) -> None:
    from transformers import AutoTokenizer

    chat = [{"role": "user", "content": "What is the capital of France?"}]
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    rendered = str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    assert "<|im_start|>assistant" in rendered  # the checkpoint's template, not a plain join
    messages = [pb.ChatMessage(role=m["role"], content=m["content"]) for m in chat]
    by_chat = await stub.Generate(pb.GenerateRequest(messages=messages, max_tokens=12, temperature=0.0))
    by_prompt = await stub.Generate(pb.GenerateRequest(prompt=rendered, max_tokens=12, temperature=0.0))
    assert by_chat.text == by_prompt.text and by_chat.text.strip()
    assert by_chat.prompt_tokens == len(tokenizer(rendered)["input_ids"]) == by_prompt.prompt_tokens
    streamed = [c async for c in stub.GenerateStream(pb.GenerateRequest(messages=messages, max_tokens=12))]
    assert "".join(c.text for c in streamed) == by_chat.text


async def test_ignore_eos_generates_up_to_max_tokens(stub: pb_grpc.GatewayStub) -> None:
    """The chat answer ("Hello! How can I assist you today?") ends with the end-of-turn token well
    before 48 tokens; with ignore_eos the model goes on past it to max_tokens (fixed-length answers
    for load tests)."""
    messages = [pb.ChatMessage(role="user", content="Hi!")]
    req = pb.GenerateRequest(messages=messages, max_tokens=48, temperature=0.0)
    ended = await stub.Generate(req)
    assert ended.finish_reason == "stop" and ended.completion_tokens < 48, ended
    req.ignore_eos = True
    full = await stub.Generate(req)
    assert full.finish_reason == "length" and full.completion_tokens == 48, full
    assert full.text.startswith(ended.text)  # greedy: the same answer, then more
    chunks = [c async for c in stub.GenerateStream(req)]
    assert "".join(c.text for c in chunks) == full.text and chunks[-1].completion_tokens == 48


async def test_bad_chat_request_is_invalid_argument(stub: pb_grpc.GatewayStub) -> None:
    bad = pb.GenerateRequest(prompt="hi", messages=[pb.ChatMessage(role="user", content="hi")])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "either prompt or messages" in (info.value.details() or "")


async def test_metrics_endpoint_passes_promtool(app: App, stub: pb_grpc.GatewayStub) -> None:
    await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=4))
    url = f"http://127.0.0.1:{app.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    text = body.decode()
    assert 'driftgate_requests_total{code="OK",role="primary",variant="dense"}' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; `make test` installs it)")
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
