"""Gateway replies in OpenAI's shapes: whole answers, and server-sent-event streams of chunks.

A stream is `data: {chunk}\\n\\n` events ending with `data: [DONE]\\n\\n`; an error after the
first event becomes one `data: {"error": ...}` event (OpenAI's clients raise it), then [DONE].
Until the gateway's final event the answering variant is not known to this layer, so chunks
before it name the requested model (the pinned variant, or "driftgate" when the gateway routes);
the final chunk and the usage chunk name the variant that answered.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from serving.errors import EngineFailure
from serving.gateway import Reply, StreamEvent
from serving.http.disconnect import ClientGone, DisconnectWatch
from serving.http.errors import error_payload, openai_error, render
from serving.http.openai_models import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChunkChoice,
    CompletionChoice,
    CompletionResponse,
    Usage,
)

DONE = b"data: [DONE]\n\n"
_END = StreamEvent("")  # sentinel: the gateway stream ran out


def _finish(reason: str) -> str:
    return reason or "stop"


def usage(reply: Reply) -> Usage:
    return Usage(
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        total_tokens=reply.prompt_tokens + reply.completion_tokens,
    )


@dataclass(frozen=True)
class Shape:
    """How one request's answer is shaped: its kind, id, creation time and shown model."""

    chat: bool
    model: str
    include_usage: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def answer_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.id

    # ------------------------------------------------------------------ whole answers
    def whole(self, reply: Reply) -> dict[str, Any]:
        reason = _finish(reply.finish_reason)
        if self.chat:
            return ChatCompletionResponse(
                id=self.answer_id,
                created=self.created,
                model=reply.variant,
                choices=[ChatChoice(message=AssistantMessage(content=reply.text), finish_reason=reason)],
                usage=usage(reply),
            ).model_dump()
        return CompletionResponse(
            id=self.answer_id,
            created=self.created,
            model=reply.variant,
            choices=[CompletionChoice(text=reply.text, finish_reason=reason)],
            usage=usage(reply),
        ).model_dump()

    # ------------------------------------------------------------------ stream chunks
    @cached_property
    def _delta_parts(self) -> tuple[bytes, bytes] | None:
        """The SSE event of a text delta split around its text: (before, after), or None when
        the split is not clean or the shown model's name is no UTF-8 (then `render` escapes the
        whole event as ASCII) and every delta takes the model's path."""
        try:
            self.model.encode("utf-8")
        except UnicodeEncodeError:
            return None
        slot = f"slot-{uuid.uuid4().hex}"
        quoted = render(slot)
        before, found, after = sse(self.chunk(slot)).partition(quoted)
        return (before, after) if found and quoted not in after else None

    def prepare_stream(self) -> None:
        """Makes the delta template now: before the engine's first output rather than after it."""
        _ = self._delta_parts

    def delta_event(self, text: str) -> bytes:
        """`sse(self.chunk(text))`, byte for byte, from a template made once per stream: every
        token sends one, and a pydantic model per token cost 15-20 µs of the event loop."""
        parts = self._delta_parts
        if parts is not None:
            try:
                return parts[0] + json.dumps(text, ensure_ascii=False).encode("utf-8") + parts[1]
            except UnicodeEncodeError:  # a lone surrogate: the whole event is ASCII-escaped
                pass
        return sse(self.chunk(text))

    def chunk(self, text: str | None, reason: str | None = None, model: str | None = None) -> dict[str, Any]:
        """A text delta (`text` None on chat: the opening role delta; "" with a reason: the end)."""
        if self.chat:
            delta = {"role": "assistant"} if text is None else ({"content": text} if text else {})
            return ChatCompletionChunk(
                id=self.answer_id,
                created=self.created,
                model=model or self.model,
                choices=[ChunkChoice(delta=delta, finish_reason=reason)],
            ).model_dump()
        return CompletionResponse(
            id=self.answer_id,
            created=self.created,
            model=model or self.model,
            choices=[CompletionChoice(text=text or "", finish_reason=reason)],
        ).model_dump()

    def usage_chunk(self, reply: Reply) -> dict[str, Any]:
        """The last chunk when `stream_options.include_usage` is set: no choices, the token counts."""
        if self.chat:
            return ChatCompletionChunk(
                id=self.answer_id, created=self.created, model=reply.variant, choices=[], usage=usage(reply)
            ).model_dump()
        return CompletionResponse(
            id=self.answer_id, created=self.created, model=reply.variant, choices=[], usage=usage(reply)
        ).model_dump()


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + render(payload) + b"\n\n"


async def sse_stream(shape: Shape, events: AsyncGenerator[StreamEvent, None]) -> AsyncGenerator[bytes, None]:
    """The SSE body of a gateway stream; closing it closes the gateway stream (which aborts the
    engine request). An error before the first event is raised, for the door to answer with a
    status (nothing is sent before the body's first chunk: `SSEResponse`); after it, an error
    (closing the gateway stream included) is one SSE event, and `[DONE]` still ends the body."""
    try:
        first = await anext(events, _END)
        if first is _END:
            raise EngineFailure("the gateway stream ended without an event")
    except BaseException:
        await events.aclose()
        raise
    try:
        async with aclosing(events):
            if shape.chat:
                yield sse(shape.chunk(None))
            event = first
            while event.final is None:
                if event.text:
                    yield shape.delta_event(event.text)
                event = await anext(events, _END)
                if event is _END:
                    raise EngineFailure("the gateway stream ended without a final event")
            reply = event.final
            if event.text:
                yield sse(shape.chunk(event.text, model=reply.variant))
            yield sse(shape.chunk("", _finish(reply.finish_reason), model=reply.variant))
            if shape.include_usage:
                yield sse(shape.usage_chunk(reply))
    except Exception as exc:
        yield sse(error_payload(openai_error(exc)[1]))
    yield DONE


class SSEResponse(StreamingResponse):
    """A `text/event-stream` answer that always closes its body (and so the gateway stream),
    also when the client disconnects or the server stops mid-stream.

    - The status and headers go out with the body's first chunk, not before: an error raised
      before it is still answered with a status (by the app's error handlers).
    - The body is written from the request's own task (`DisconnectWatch`), not from a task
      group: no event-loop trip between an event and its write. The watch covers the wait for
      the first chunk too, so a request is built, and its watch started, before the engine's
      first output: only the writes are left after it.
    """

    media_type = "text/event-stream"

    def __init__(self, body: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        super().__init__(body, headers={"cache-control": "no-cache", **headers})
        self._body = body

    async def stream_response(self, send: Send) -> None:
        first = await anext(self._body)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in self._body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = DisconnectWatch(receive)
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                watch.close()  # uvicorn answers every receive after the last write with a disconnect
            await send(message)

        try:
            async with watch:
                await self.stream_response(sending)
        except ClientGone:
            if not started:
                raise  # a 499, as for any request whose client left before its answer
        except OSError:  # a send to a gone client (ASGI spec 2.4 servers)
            if not started:
                raise  # the gateway's own, before any text: a 500 from the app's handlers
            # the body is closed below, which aborts the engine's generation
        finally:
            await self._body.aclose()
        if self.background is not None:
            await self.background()
