"""The HTTP door in front of the real vLLM engine: the official `openai` client gets the same greedy
answers as gRPC, HTTP requests are mirrored and compared exactly like gRPC ones, and a client that
goes away aborts the engine's request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from serving.app import App, start_app
from serving.config import Role
from serving.drift_book import DriftSummary
from serving.engines.base import Engine
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import FRANCE, dense_variant, make_config
from tests.http.conftest import assert_openai_error, openai_client

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]

COUNT = "Count from one to five hundred: one, two, three,"
SYSTEM, QUESTION = "You are a geography assistant. Answer briefly.", "What is the capital of Japan?"
CHAT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
]
MAX_TOKENS = 12


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(dense_engine: Engine) -> AsyncIterator[App]:
    """The dense primary alone (no shadow holds the engine after a request)."""
    running = await start_app(make_config(), engines={"dense": dense_engine})
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mirrored(dense_engine: Engine) -> AsyncIterator[App]:
    """The dense primary plus "twin", a shadow on the same engine object (so it must match)."""
    config = make_config(dense_variant(), dense_variant("twin", role=Role.SHADOW))
    running = await start_app(config, engines={"dense": dense_engine, "twin": dense_engine})
    yield running
    await running.stop()


def client(app: App) -> openai.AsyncOpenAI:
    assert app.http_port
    return openai_client(app.http_port)


def grpc_messages() -> list[pb.ChatMessage]:
    return [pb.ChatMessage(role="system", content=SYSTEM), pb.ChatMessage(role="user", content=QUESTION)]


async def test_completions_match_grpc_unary_and_streaming(app: App, stub: pb_grpc.GatewayStub) -> None:
    direct = await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=MAX_TOKENS, temperature=0.0))
    assert "Paris" in direct.text
    http = client(app)
    whole = await http.completions.create(
        model="driftgate", prompt=FRANCE, max_tokens=MAX_TOKENS, temperature=0
    )
    assert whole.choices[0].text == direct.text and whole.model == direct.variant == "dense"
    assert whole.choices[0].finish_reason == direct.finish_reason
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (
        direct.prompt_tokens,
        direct.completion_tokens,
    )
    stream = await http.completions.create(
        model="dense", prompt=FRANCE, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    chunks = [c async for c in stream]
    assert len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks) == direct.text
    assert chunks[-1].choices[0].finish_reason == direct.finish_reason


async def test_chat_matches_grpc_unary_and_streaming(app: App, stub: pb_grpc.GatewayStub) -> None:
    req = pb.GenerateRequest(messages=grpc_messages(), max_tokens=MAX_TOKENS, temperature=0.0)
    direct = await stub.Generate(req)
    streamed = "".join([c.text async for c in stub.GenerateStream(req)])
    assert "Tokyo" in direct.text and streamed == direct.text
    http = client(app)
    whole = await http.chat.completions.create(
        model="driftgate", messages=CHAT, max_tokens=MAX_TOKENS, temperature=0
    )
    assert whole.choices[0].message.content == direct.text and whole.model == "dense"
    assert whole.usage is not None and whole.usage.prompt_tokens == direct.prompt_tokens
    stream = await http.chat.completions.create(
        model="dense",
        messages=CHAT,
        max_completion_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == direct.completion_tokens


async def test_real_engine_errors_are_openai_errors(app: App) -> None:
    http = client(app)
    with pytest.raises(openai.BadRequestError, match="exceeds the model's context of 512"):
        await http.completions.create(model="dense", prompt="word " * 600, max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        await http.chat.completions.create(model="gpt-4o", messages=CHAT)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as raw:
        error = assert_openai_error(await raw.post("/v1/completions", content=b'{"prompt": '), 400)
        assert error["code"] == "invalid_json"


async def _wait_idle(engine: Engine, timeout: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while engine.num_unfinished() and loop.time() < end:
        await asyncio.sleep(0.05)
    return engine.num_unfinished()


async def test_disconnect_mid_stream_aborts_the_engine_request(app: App, dense_engine: Engine) -> None:
    http = client(app)
    stream = await http.completions.create(model="dense", prompt=COUNT, max_tokens=400, stream=True)
    first = await anext(aiter(stream))
    assert first.choices[0].text and dense_engine.num_unfinished() == 1
    await stream.close()  # the openai client drops the connection
    assert await _wait_idle(dense_engine) == 0

    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=60) as raw,
        raw.stream(
            "POST", "/v1/chat/completions", json={"messages": CHAT, "max_tokens": 400, "stream": True}
        ) as resp,
    ):
        lines = aiter(resp.aiter_lines())
        assert (await anext(lines)).startswith("data: ")
    assert await _wait_idle(dense_engine) == 0


async def test_disconnect_before_a_whole_answer_aborts_the_engine_request(
    app: App, dense_engine: Engine
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=60) as raw:
        call = asyncio.create_task(raw.post("/v1/completions", json={"prompt": COUNT, "max_tokens": 400}))
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while dense_engine.num_unfinished() == 0 and loop.time() < end:
            await asyncio.sleep(0.02)
        assert dense_engine.num_unfinished() == 1
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    assert await _wait_idle(dense_engine) == 0


def _figures(s: DriftSummary) -> tuple[Any, ...]:
    return (s.compared, s.exact_matches, s.mean_token_agreement, s.mean_first_divergence, s.error, s.dropped)


async def _over_http(app: App) -> None:
    http = client(app)
    await http.completions.create(model="driftgate", prompt=FRANCE, max_tokens=MAX_TOKENS, temperature=0)
    _ = [
        c
        async for c in await http.completions.create(
            prompt=FRANCE, model="dense", max_tokens=MAX_TOKENS, stream=True
        )
    ]
    await http.chat.completions.create(model="driftgate", messages=CHAT, max_tokens=MAX_TOKENS)
    _ = [
        c
        async for c in await http.chat.completions.create(
            messages=CHAT, model="dense", max_tokens=MAX_TOKENS, stream=True
        )
    ]
    await app.gateway.mirror.drain()


async def _over_grpc(app: App) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=MAX_TOKENS))
        _ = [c async for c in stub.GenerateStream(pb.GenerateRequest(prompt=FRANCE, max_tokens=MAX_TOKENS))]
        await stub.Generate(pb.GenerateRequest(messages=grpc_messages(), max_tokens=MAX_TOKENS))
        chat = pb.GenerateRequest(messages=grpc_messages(), max_tokens=MAX_TOKENS)
        _ = [c async for c in stub.GenerateStream(chat)]
    await app.gateway.mirror.drain()


async def test_http_requests_are_mirrored_and_compared_like_grpc(mirrored: App) -> None:
    """The same four requests (completion and chat, whole and streamed) over each door leave the
    same answers and drift records; the twin shadow matches the primary exactly."""
    answers: list[tuple[str, str, str, str | None]] = []
    mirrored.gateway.on_answer = lambda *record: answers.append(record)
    try:
        await mirrored.gateway.mirror.drain()
        compared0 = (
            mirrored.registry.get_sample_value(
                "driftgate_mirror_total", {"variant": "twin", "outcome": "compared"}
            )
            or 0.0
        )
        mirrored.gateway.drift_summary(reset=True)
        await _over_http(mirrored)
        http_twin = mirrored.gateway.drift_summary(reset=True)[0]["twin"]
        http_answers = list(answers)
        compared1 = mirrored.registry.get_sample_value(
            "driftgate_mirror_total", {"variant": "twin", "outcome": "compared"}
        )
        assert compared1 == compared0 + 4
        answers.clear()
        await _over_grpc(mirrored)
        grpc_twin = mirrored.gateway.drift_summary(reset=True)[0]["twin"]
    finally:
        mirrored.gateway.on_answer = None
    assert _figures(http_twin) == _figures(grpc_twin) == (4, 4, 1.0, _figures(grpc_twin)[3], 0, 0)
    assert http_twin.mean_teacher_forced_agreement == grpc_twin.mean_teacher_forced_agreement == 1.0
    assert http_twin.mean_kl is not None and grpc_twin.mean_kl is not None
    assert http_twin.mean_kl == pytest.approx(grpc_twin.mean_kl, abs=1e-6) and http_twin.mean_kl < 1e-3
    assert sorted(http_answers, key=repr) == sorted(answers, key=repr) and len(answers) == 8  # 4 + 4 twin
    twin = [a for a in http_answers if a[0] == "twin"]
    assert len(twin) == 4 and all(text == primary for _, _, text, primary in twin)
    assert any("Paris" in a[2] for a in twin) and any("Tokyo" in a[2] for a in twin)
