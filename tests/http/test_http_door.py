"""The OpenAI-compatible HTTP door over scripted engines: a real uvicorn server on port 0, the
official `openai` client and raw httpx bodies. (The real-engine checks are in test_http_engine.py.)"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import grpc
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from serving.app import start_app
from serving.config import LimitsConfig, Role, VariantConfig
from serving.engines.base import Chunk, SamplingSpec
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.http.body import MAX_BODY_BYTES
from serving.http.routes import DEFAULT_MODEL
from serving.http.server import start_http
from tests.fakes import FakeEngine, HangingEngine
from tests.http.conftest import (
    Door,
    FailingEngine,
    RecordingEngine,
    assert_openai_error,
    fake_config,
    open_door,
    openai_client,
    sse_events,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def _ab_door() -> AsyncIterator[Door]:
    config = fake_config(
        VariantConfig(name="dense", weight=1.0),
        VariantConfig(name="cand", role=Role.CANDIDATE, weight=1.0),
        VariantConfig(name="twin", role=Role.SHADOW, sample_rate=1.0),
    )
    engines = {n: FakeEngine(n, text=f"answer from {n}") for n in ("dense", "cand", "twin")}
    async with open_door(config, engines) as door:
        yield door


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async for d in _ab_door():
        yield d


# ---------------------------------------------------------------------------------- happy paths
async def test_models_list_the_router_first_then_every_variant(door: Door) -> None:
    models = await door.openai().models.list()
    assert [m.id for m in models.data] == [DEFAULT_MODEL, "dense", "cand", "twin"]
    assert all(m.object == "model" and m.owned_by == "driftgate" for m in models.data)
    async with door.client() as http:
        card = (await http.get("/v1/models/twin")).json()
        assert (card["id"], card["role"], card["ready"]) == ("twin", "shadow", True)
        error = assert_openai_error(await http.get("/v1/models/nope"), 404)
        assert error["code"] == "model_not_found" and "dense" in error["message"]
        assert (await http.get("/health")).json() == {"status": "ok"}


async def test_completion_and_chat_through_the_openai_client(door: Door) -> None:
    client = door.openai()
    raw = await client.completions.with_raw_response.create(model="dense", prompt="hi", max_tokens=4)
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.model == "dense"
    assert completion.choices[0].text == "answer from dense" and completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].logprobs is None
    assert completion.usage is not None and completion.usage.total_tokens == 1 + 3
    assert raw.headers["x-driftgate-variant"] == "dense" and raw.headers["x-request-id"]
    assert completion._request_id == raw.headers["x-request-id"]  # the client reads it too

    chat = await client.chat.completions.create(model="cand", messages=HI)
    assert chat.object == "chat.completion" and chat.model == "cand"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == "answer from cand"


async def test_streams_through_the_openai_client(door: Door) -> None:
    client = door.openai()
    stream = await client.completions.create(
        model="dense", prompt="hi", stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "answer from dense"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3 and {c.model for c in chunks} == {"dense"}

    chat = await client.chat.completions.create(model=DEFAULT_MODEL, messages=HI, stream=True, user="u1")
    deltas = [c async for c in chat]
    assert deltas[0].choices[0].delta.role == "assistant" and not deltas[0].choices[0].delta.content
    text = "".join(c.choices[0].delta.content or "" for c in deltas)
    assert deltas[-1].choices[0].finish_reason == "stop" and deltas[-1].choices[0].delta.content is None
    assert text in ("answer from dense", "answer from cand")
    assert deltas[-1].model == text.removeprefix("answer from ")  # the last chunk names the answerer
    assert [(o.door, o.variant) for o in door.sink.overheads] == [("http", "dense"), ("http", text[12:])]


async def test_raw_sse_framing_and_headers(door: Door) -> None:
    async with door.client() as http:
        body = {"model": "cand", "prompt": "hi", "stream": True}
        async with http.stream("POST", COMPLETIONS, json=body, headers={"x-request-id": "r-7"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["x-request-id"] == "r-7" and resp.headers["x-driftgate-variant"] == "cand"
            text = (await resp.aread()).decode()
    assert text.endswith("data: [DONE]\n\n")
    events = sse_events(text)
    assert events[-1] == "[DONE]" and all(e["object"] == "text_completion" for e in events[:-1])
    assert len({e["id"] for e in events[:-1]}) == 1 and events[0]["id"].startswith("cmpl-")


async def test_model_pins_any_role_and_driftgate_routes_sticky_by_user(door: Door) -> None:
    client = door.openai()
    for name in ("dense", "cand", "twin"):
        reply = await client.completions.create(model=name, prompt="hi")
        assert (reply.model, reply.choices[0].text) == (name, f"answer from {name}")
    by_user: dict[str, set[str]] = {}
    for i in range(40):
        for _ in range(3):
            routed = await client.completions.create(model=DEFAULT_MODEL, prompt="hi", user=f"user-{i}")
            by_user.setdefault(f"user-{i}", set()).add(routed.model)
    assert all(len(v) == 1 for v in by_user.values()), by_user  # sticky per user
    assert set().union(*by_user.values()) == {"dense", "cand"}  # a shadow never answers routed traffic
    async with door.client() as http:  # the x-request-id header is the sticky key too, and wins over user
        answers = set()
        for user in ("a", "b", "c", "d"):
            resp = await http.post(
                COMPLETIONS, json={"prompt": "hi", "user": user}, headers={"x-request-id": "fixed"}
            )
            answers.add(resp.json()["model"])
            assert resp.headers["x-request-id"] == "fixed"
        assert len(answers) == 1
        omitted = await http.post(COMPLETIONS, json={"prompt": "hi"})
        assert omitted.status_code == 200 and omitted.json()["model"] in ("dense", "cand")


async def test_http_and_grpc_hand_the_engine_the_same_request() -> None:
    """Both doors go through the same Gateway: the engine sees identical prompts and sampling."""
    engine = RecordingEngine("dense")
    app = await start_app(fake_config(), engines={"dense": engine})
    port = app.http_port
    try:
        assert port
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            await stub.Generate(
                pb.GenerateRequest(
                    prompt="hi there",
                    max_tokens=7,
                    temperature=0.5,
                    top_p=0.75,
                    seed=3,
                    stop=["x"],
                    ignore_eos=True,
                )
            )
            turns = [
                pb.ChatMessage(role="system", content="be\nbrief"),
                pb.ChatMessage(role="user", content="hi"),
            ]
            _ = [c async for c in stub.GenerateStream(pb.GenerateRequest(messages=turns, max_tokens=5))]
        client = openai_client(port)
        await client.completions.create(
            model=DEFAULT_MODEL,
            prompt="hi there",
            max_tokens=7,
            temperature=0.5,
            top_p=0.75,
            seed=3,
            stop="x",
            extra_body={"ignore_eos": True},  # vLLM's extension, as `vllm bench serve` sends it
        )
        messages: list[ChatCompletionMessageParam] = [
            {
                "role": "developer",
                "content": [{"type": "text", "text": "be"}, {"type": "text", "text": "brief"}],
            },
            {"role": "user", "content": "hi"},
        ]
        stream = await client.chat.completions.create(
            model="dense",
            messages=messages,
            max_completion_tokens=5,
            stream=True,
        )
        _ = [c async for c in stream]
        assert len(engine.seen) == 4
        assert engine.seen[2] == engine.seen[0] and engine.seen[3] == engine.seen[1]
        assert engine.seen[0][1].ignore_eos and not engine.seen[1][1].ignore_eos
        assert engine.seen[1][0] == "<system>be\nbrief\n<user>hi\n<assistant>"
    finally:
        await app.stop()
    with pytest.raises(httpx.ConnectError):  # App.stop closed the HTTP door
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/v1/models")


# ---------------------------------------------------------------------------------- errors
BAD_BODIES: list[tuple[str, bytes, int, str | None, str]] = [
    (COMPLETIONS, b"{not json", 400, None, "not valid JSON"),
    (COMPLETIONS, b"", 400, None, "empty"),
    (COMPLETIONS, b"[1, 2]", 400, None, "JSON object"),
    (COMPLETIONS, b"\xff\xfe{}", 400, None, "UTF-8"),
    (COMPLETIONS, b'{"prompt": "\\ud800 lone"}', 400, None, "surrogate"),
    (COMPLETIONS, b"[" * 50_000 + b"]" * 50_000, 400, None, "not valid JSON"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": "5"}', 400, "max_tokens", "valid integer"),
    (COMPLETIONS, b'{"prompt": "hi", "temperature": true}', 400, "temperature", "valid number"),
    (COMPLETIONS, b'{"prompt": "hi", "stream": "yes"}', 400, "stream", "valid boolean"),
    (COMPLETIONS, b'{"prompt": "hi", "ignore_eos": 1}', 400, "ignore_eos", "valid boolean"),
    (COMPLETIONS, b'{"prompt": "hi", "stream_interval": "4"}', 400, "stream_interval", "valid integer"),
    (COMPLETIONS, b'{"prompt": "hi", "stream": true, "stream_interval": 0}', 400, None, "stream_interval must be in"),
    (COMPLETIONS, b'{"prompt": "hi", "repetition_penalty": 1.2}', 400, "repetition_penalty", "not supported"),
    (COMPLETIONS, b'{"prompt": 5}', 400, "prompt", "must be a string"),
    (COMPLETIONS, b'{"prompt": ["a", "b"]}', 400, "prompt", "batches"),
    (COMPLETIONS, b'{"prompt": [1, 2, 3]}', 400, "prompt", "token-id"),
    (COMPLETIONS, b'{"max_tokens": 4}', 400, "prompt", "Field required"),
    (COMPLETIONS, b'{"prompt": "hi", "n": 2}', 400, "n", "n=1"),
    (COMPLETIONS, b'{"prompt": "hi", "logprobs": 2}', 400, "logprobs", "not supported"),
    (COMPLETIONS, b'{"prompt": "hi", "echo": true}', 400, "echo", "not supported"),
    (COMPLETIONS, b'{"prompt": "hi", "best_of": 3}', 400, "best_of", "best_of=1"),
    (COMPLETIONS, b'{"prompt": "hi", "tools": []}', 400, "tools", "unrecognized request argument"),
    (COMPLETIONS, b'{"prompt": "hi", "seed": -1}', 400, "seed", "greater than or equal to 0"),
    (COMPLETIONS, b'{"prompt": "hi", "stop": [1]}', 400, "stop", "list of strings"),
    (COMPLETIONS, b'{"prompt": "hi", "stream_options": {"include_usage": true}}', 400, "stream_options", "stream: true"),
    (COMPLETIONS, b'{"prompt": "hi", "model": "nope"}', 404, "model", "does not exist"),
    (COMPLETIONS, b'{"prompt": "   "}', 400, None, "prompt must not be empty"),
    (COMPLETIONS, b'{"prompt": "hi", "temperature": 5}', 400, None, "temperature must be in [0, 2]"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 0}', 400, None, "max_tokens must be in [1, 4096]"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 100000}', 400, None, "max_tokens must be in [1, 4096]"),
    (COMPLETIONS, b'{"prompt": "hi", "max_tokens": 600}', 400, None, "exceeds the model's context of 512"),
    (COMPLETIONS, b'{"prompt": "hi", "stop": [""]}', 400, None, "stop"),
    (CHAT, b'{"messages": "hi"}', 400, "messages", "valid list"),
    (CHAT, b'{"messages": []}', 400, "messages", "at least 1"),
    (CHAT, b'{"messages": [{"role": "user"}], "model": "dense"}', 400, None, "every message is empty"),
    (CHAT, b'{"messages": [{"role": "robot", "content": "hi"}]}', 400, None, "unknown message role"),
    (CHAT, b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', 400, "messages", "text"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": true}', 400, "logprobs", "not supported"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "n", "n=1"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}', 404, "model", "gpt-4o"),
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}', 400, "response_format", "text"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "param", "fragment"), BAD_BODIES)
async def test_bad_requests_get_openai_shaped_errors(
    door: Door, path: str, body: bytes, status: int, param: str | None, fragment: str
) -> None:
    contents = [body]
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and not {"stream", "stream_options"} & set(data):
        contents.append(json.dumps({**data, "stream": True}).encode())  # the same error when streaming
    async with door.client() as http:
        for content in contents:
            error = assert_openai_error(await http.post(path, content=content), status)
            assert fragment in error["message"], error
            assert error["param"] == param
            assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


async def test_the_openai_client_raises_its_own_error_classes(door: Door) -> None:
    client = door.openai()
    with pytest.raises(openai.NotFoundError) as missing:
        await client.completions.create(model="nope", prompt="hi")
    assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="dense", messages=HI, n=2)
    assert bad.value.param == "n" and bad.value.type == "invalid_request_error"


async def test_oversized_bodies_and_prompts_get_413() -> None:
    """Bodies over `limits.max_request_bytes` (gRPC's message limit) are refused before parsing,
    on Content-Length or as read; prompts over `limits.max_prompt_bytes` by the gateway."""
    limits = LimitsConfig(max_request_bytes=MAX_BODY_BYTES, max_prompt_bytes=1000)
    valid = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()
    padded = valid[:-1] + b" " * (MAX_BODY_BYTES - len(valid)) + b"}"
    assert len(padded) == MAX_BODY_BYTES

    async def chunked(data: bytes) -> AsyncIterator[bytes]:  # no Content-Length: counted as read
        for i in range(0, len(data), 64 * 1024):
            yield data[i : i + 64 * 1024]

    async with open_door(fake_config(limits=limits), {"dense": FakeEngine("dense")}) as door:
        async with door.client() as http:
            assert (await http.post(COMPLETIONS, content=padded)).status_code == 200  # the limit is inclusive
            for path in (COMPLETIONS, CHAT):
                error = assert_openai_error(await http.post(path, content=padded + b" "), 413)
                assert error["code"] == "request_too_large" and str(MAX_BODY_BYTES) in error["message"]
                assert_openai_error(await http.post(path, content=chunked(padded + b"x" * 1000)), 413)
            assert (await http.post(COMPLETIONS, content=chunked(padded))).status_code == 200
            error = assert_openai_error(await http.post(COMPLETIONS, json={"prompt": "é" * 501}), 413)
            assert "the prompt is 1002 bytes; the limit is 1000" in error["message"]
            messages = [{"role": "user", "content": "x" * 600}, {"role": "user", "content": "y" * 600}]
            assert_openai_error(await http.post(CHAT, json={"messages": messages}), 413)
            assert (await http.post(COMPLETIONS, json={"prompt": "hi"})).status_code == 200  # still serving


async def test_an_operator_can_turn_ignore_eos_off_for_both_doors() -> None:
    """`limits.allow_ignore_eos: false`: a request that asks for it is refused by both doors before
    any engine work; the same request without it is served."""
    engine = RecordingEngine("dense")
    app = await start_app(fake_config(limits=LimitsConfig(allow_ignore_eos=False)), engines={"dense": engine})
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Generate(pb.GenerateRequest(prompt="hi", max_tokens=4, ignore_eos=True))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "limits.allow_ignore_eos" in (info.value.details() or "")
            await stub.Generate(pb.GenerateRequest(prompt="hi", max_tokens=4))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
            body = {"prompt": "hi", "max_tokens": 4}
            error = assert_openai_error(await http.post(COMPLETIONS, json={**body, "ignore_eos": True}), 400)
            assert "turned off" in error["message"]
            assert (await http.post(COMPLETIONS, json={**body, "ignore_eos": False})).status_code == 200
        assert [sampling.ignore_eos for _, sampling in engine.seen] == [False, False]
    finally:
        await app.stop()


async def test_a_gateway_that_is_not_ready_or_draining_answers_503() -> None:
    async with open_door(fake_config(), {}) as door, door.client() as http:
        for path, body in ((COMPLETIONS, {"prompt": "hi"}), (CHAT, {"messages": HI})):
            for stream in (False, True):
                error = assert_openai_error(await http.post(path, json={**body, "stream": stream}), 503)
                assert error["type"] == "service_unavailable_error" and "ready" in error["message"]
        assert_openai_error(await http.get("/health"), 503)
        models = (await http.get("/v1/models")).json()["data"]
        assert [(m["id"], m["ready"]) for m in models] == [(DEFAULT_MODEL, False), ("dense", False)]
        door.gateway.attach("dense", FakeEngine("dense"))
        assert (await http.post(COMPLETIONS, json={"prompt": "hi"})).status_code == 200
        await door.gateway.drain(0.1)
        error = assert_openai_error(await http.post(COMPLETIONS, json={"prompt": "hi"}), 503)
        assert "shutting down" in error["message"]


async def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("stream", [False, True])
async def test_over_the_limit_is_429_and_a_disconnect_releases_the_request(stream: bool) -> None:
    hanging = HangingEngine(FakeEngine("dense"))
    async with open_door(fake_config(max_concurrent_requests=1), {"dense": hanging}) as door:
        async with door.client() as first_client, door.client() as http:
            first = asyncio.create_task(
                first_client.post(COMPLETIONS, json={"prompt": "hi", "stream": stream})
            )
            await _wait_for(lambda: hanging.holding == 1)
            error = assert_openai_error(await http.post(CHAT, json={"messages": HI, "stream": stream}), 429)
            assert error["type"] == "rate_limit_error" and "limit 1" in error["message"]
            with pytest.raises(openai.RateLimitError):
                await door.openai().completions.create(model="dense", prompt="hi")
            first.cancel()  # the client goes away: its request is cancelled, the engine's aborted
            await asyncio.gather(first, return_exceptions=True)
        await _wait_for(lambda: hanging.holding == 0 and hanging.cancelled == 1)
        door.gateway.attach("dense", FakeEngine("dense"))
        async with door.client() as http:
            assert (await http.post(COMPLETIONS, json={"prompt": "hi"})).status_code == 200


async def test_an_engine_failure_mid_stream_is_an_sse_error_event_then_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_door(fake_config(), {"dense": FailingEngine("dense", "first second")}) as door:
        async with door.client() as http:
            resp = await http.post(CHAT, json={"messages": HI, "stream": True})
            assert resp.status_code == 200
            events = sse_events(resp.text)
            assert events[1]["choices"][0]["delta"] == {"content": "first"}
            assert events[-1] == "[DONE]" and set(events[-2]) == {"error"}
            error = events[-2]["error"]
            assert error["type"] == "server_error" and "internal error" in error["message"]
            assert "/secret/path" not in resp.text and "Traceback" not in resp.text
            unary = assert_openai_error(await http.post(COMPLETIONS, json={"prompt": "hi"}), 500)
            assert "/secret/path" not in unary["message"]
        with pytest.raises(openai.APIError, match="internal error"):
            async for _ in await door.openai().completions.create(model="dense", prompt="hi", stream=True):
                pass
    assert "injected engine failure" in caplog.text  # logged on the server side


class TaskRecordingEngine(FakeEngine):
    """Notes the task that takes each chunk; after its first chunk, can hang until closed."""

    def __init__(self, name: str, text: str, hang: bool = False) -> None:
        super().__init__(name, text)
        self.hang = hang
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.closed = 0

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        try:
            async for chunk in super().generate(prompt, sampling, request_id, logprobs, prompt_token_ids):
                self.tasks.append(asyncio.current_task())
                yield replace(chunk, finished=False) if self.hang else chunk
                if self.hang:
                    await asyncio.Event().wait()
        finally:
            self.closed += 1


async def test_a_stream_is_taken_from_the_engine_and_written_by_one_task() -> None:
    """No task hop between the engine's events and the socket: the first event, and every one
    after it, is taken by the request's own task (a hop waits behind every other stream's work)."""
    engine = TaskRecordingEngine("dense", "one two three four")
    async with open_door(fake_config(), {"dense": engine}) as door, door.client() as http:
        for path, body in ((COMPLETIONS, {"prompt": "hi"}), (CHAT, {"messages": HI})):
            engine.tasks.clear()
            resp = await http.post(path, json={**body, "stream": True})
            assert resp.status_code == 200 and sse_events(resp.text)[-1] == "[DONE]"
            assert len(engine.tasks) == 4 and len(set(engine.tasks)) == 1, engine.tasks


async def test_a_client_gone_mid_stream_closes_the_engine_stream() -> None:
    engine = TaskRecordingEngine("dense", "first second", hang=True)
    async with open_door(fake_config(max_concurrent_requests=1), {"dense": engine}) as door:
        async with (
            door.client() as http,
            http.stream("POST", COMPLETIONS, json={"prompt": "hi", "stream": True}) as resp,
        ):
            lines = aiter(resp.aiter_lines())
            first = json.loads((await anext(lines)).removeprefix("data: "))
            assert first["choices"][0]["text"] == "first" and engine.closed == 0
        await _wait_for(lambda: engine.closed == 1)
        engine.hang = False
        async with door.client() as http:  # the request was released (limit 1): the door answers
            assert (await http.post(COMPLETIONS, json={"prompt": "hi"})).status_code == 200


async def test_unknown_paths_and_methods_are_openai_shaped(door: Door) -> None:
    async with door.client() as http:
        assert_openai_error(await http.get("/v1/nothing"), 404)
        assert_openai_error(await http.get(COMPLETIONS), 405)


# ---------------------------------------------------------------------------------- the server
async def test_server_binds_port_zero_stops_cleanly_and_leaves_signals_alone() -> None:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    async with open_door(fake_config(), {"dense": FakeEngine("dense")}) as door:
        assert door.server.port > 0 and door.server.url == door.url
        with pytest.raises(OSError):  # a taken port fails here, not with uvicorn's sys.exit
            await start_http(door.gateway, "127.0.0.1", door.server.port)
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        port = door.server.port
        await door.server.stop()
        await door.server.stop()  # idempotent
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert {s: signal.getsignal(s) for s in handlers} == handlers
