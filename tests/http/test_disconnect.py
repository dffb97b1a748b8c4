"""`DisconnectWatch` and `SSEResponse` against scripted ASGI `receive`/`send` (pure asyncio; the
door's end-to-end disconnect tests are in test_http_door.py and test_http_engine.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from starlette.background import BackgroundTask

from serving.gateway import Reply, StreamEvent
from serving.http.answers import Shape, SSEResponse, sse_stream
from serving.http.disconnect import ClientGone, DisconnectWatch

pytestmark = pytest.mark.asyncio(loop_scope="session")


def client() -> tuple[asyncio.Event, Any]:
    """An ASGI `receive` that answers `http.disconnect` once the event is set."""
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    return left, receive


async def test_a_disconnect_cancels_the_block_and_the_task_goes_on() -> None:
    left, receive = client()
    cleaned: list[str] = []

    async def handler() -> str:
        with pytest.raises(ClientGone):
            async with DisconnectWatch(receive) as watch:
                try:
                    await asyncio.sleep(30)
                finally:
                    await asyncio.sleep(0.01)  # clean-up that awaits (the engine's abort) runs to its end
                    cleaned.append("done")
        assert watch.gone
        await asyncio.sleep(0)  # no cancellation is left over for the task's next await
        return "went on"

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    left.set()
    assert await task == "went on" and cleaned == ["done"] and task.cancelling() == 0


@pytest.mark.parametrize("first", ["client", "server"])
async def test_a_cancellation_from_elsewhere_passes_through(first: str) -> None:
    left, receive = client()
    cleaned: list[str] = []

    async def handler() -> None:
        async with DisconnectWatch(receive):
            try:
                await asyncio.sleep(30)
            finally:
                await asyncio.sleep(0.02)
                cleaned.append("done")

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    if first == "client":  # both in the same loop turn
        left.set()
        task.cancel()
    else:  # the server's cancellation first, the client leaves during the clean-up
        task.cancel()
        await asyncio.sleep(0.005)
        left.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["done"]


async def test_no_disconnect_no_cancellation_and_a_failed_watch_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    left, receive = client()
    async with DisconnectWatch(receive) as watch:
        await asyncio.sleep(0.01)
    left.set()
    await asyncio.sleep(0.01)
    assert not watch.gone

    async def broken() -> dict[str, Any]:
        raise RuntimeError("receive broke")

    with caplog.at_level(logging.ERROR):
        async with DisconnectWatch(broken):
            await asyncio.sleep(0.01)
    assert "the disconnect watch failed" in caplog.text


async def test_sse_response_closes_its_watch_before_the_last_write_and_runs_background() -> None:
    """uvicorn answers every `receive` after the last write with a disconnect: a send wrapper that
    awaits after it must not turn a finished stream into a cancelled one."""
    closed: list[str] = []
    done = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            yield b"data: 1\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            closed.append("body")

    async def receive() -> dict[str, Any]:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()
            await asyncio.sleep(0.01)  # a middleware that awaits after the final write

    response = SSEResponse(body(), {})
    response.background = BackgroundTask(closed.append, "background")
    await response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
    assert closed == ["body", "background"]
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: [DONE]\n\n", b""]


@pytest.mark.parametrize("error", [ValueError, TimeoutError])  # an OSError too: not a gone client's
async def test_nothing_is_sent_before_the_bodys_first_chunk_and_an_error_before_it_is_raised(
    error: type[Exception],
) -> None:
    """The status goes out with the first chunk: an error before it stays a status for the app's
    handlers (nothing sent), and a body still waiting for it has sent nothing either."""
    _, receive = client()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def failing() -> AsyncGenerator[bytes, None]:
        raise error("before any text")
        yield b""  # pragma: no cover

    with pytest.raises(error, match="before any text"):
        await SSEResponse(failing(), {})({"type": "http"}, receive, send)
    assert sent == []

    opened = asyncio.Event()
    release = asyncio.Event()

    async def gated() -> AsyncGenerator[bytes, None]:
        opened.set()
        await release.wait()
        yield b"data: 1\n\n"

    answer = asyncio.create_task(SSEResponse(gated(), {"x-a": "b"})({"type": "http"}, receive, send))
    await opened.wait()
    await asyncio.sleep(0.01)
    assert sent == []
    release.set()
    await answer
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2
    assert (b"x-a", b"b") in sent[0]["headers"] and sent[1]["body"] == b"data: 1\n\n"


async def test_a_failure_closing_the_gateway_stream_still_ends_the_body_with_an_error_and_done() -> None:
    async def events() -> AsyncGenerator[StreamEvent, None]:
        try:
            yield StreamEvent("one")
            yield StreamEvent("", Reply("one", "dense", "stop", 1, 1, "r"))
        finally:
            raise RuntimeError("the gateway's clean-up failed")

    body = [chunk async for chunk in sse_stream(Shape(chat=False, model="dense"), events())]
    assert body[0].startswith(b'data: {"id":"cmpl-') and b'"text":"one"' in body[0]
    assert b'"finish_reason":"stop"' in body[1]
    assert b'"error"' in body[2] and body[-1] == b"data: [DONE]\n\n"
