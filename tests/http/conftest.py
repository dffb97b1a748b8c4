"""Helpers for the HTTP door's tests: a real uvicorn server on port 0 over a `Gateway` whose
engines are fakes (fast tests) and engines that record or fail on purpose."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from serving.config import AuthConfig, Config, LimitsConfig, ServerConfig, TlsConfig, VariantConfig
from serving.engines.base import Chunk, Engine, SamplingSpec
from serving.gateway import Gateway
from serving.http.server import HttpServer, start_http
from serving.stats import ListSink
from tests.fakes import FakeEngine


@dataclass
class Door:
    """A gateway and its HTTP door."""

    gateway: Gateway
    server: HttpServer
    sink: ListSink

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30.0)

    def openai(self) -> openai.AsyncOpenAI:
        return openai_client(self.server.port)


def openai_client(port: int, api_key: str = "unused") -> openai.AsyncOpenAI:
    """The official client pointed at a door (no retries: every status is the server's own)."""
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key, max_retries=0, timeout=60.0
    )


def fake_config(
    *variants: VariantConfig,
    limits: LimitsConfig | None = None,
    auth: AuthConfig | None = None,
    tls: TlsConfig | None = None,
    **server: Any,
) -> Config:
    return Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=0, **server),
        limits=limits or LimitsConfig(),
        auth=auth or AuthConfig(),
        tls=tls or TlsConfig(),
        variants=list(variants) or [VariantConfig(name="dense")],
    )


@asynccontextmanager
async def open_door(config: Config, engines: Mapping[str, Engine]) -> AsyncIterator[Door]:
    """Serves `config` with `engines` attached (none: a gateway that is not ready)."""
    sink = ListSink()
    gateway = Gateway(config, sink)
    for name, engine in engines.items():
        gateway.attach(name, engine)
    server = await start_http(gateway, "127.0.0.1", 0)
    try:
        yield Door(gateway, server, sink)
    finally:
        await server.stop()
        await gateway.close()


class RecordingEngine(FakeEngine):
    """A fake that keeps each request's prompt and sampling."""

    def __init__(self, name: str, text: str = "ok fine") -> None:
        super().__init__(name, text)
        self.seen: list[tuple[str, SamplingSpec]] = []

    def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        self.seen.append((prompt, sampling))
        return super().generate(prompt, sampling, request_id, logprobs, prompt_token_ids)


class FailingEngine(FakeEngine):
    """Streams its first word, then fails (an unexpected engine error, not a GatewayError)."""

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        yield Chunk(text=self.text.split(" ")[0], token_ids=(0,), prompt_tokens=1, completion_tokens=1)
        await asyncio.sleep(0)
        raise RuntimeError("injected engine failure at /secret/path")


def sse_events(body: str) -> list[Any]:
    """The `data:` payloads of an SSE body: JSON objects, and "[DONE]" as a string."""
    events: list[Any] = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """`response` has `status` and OpenAI's error shape; returns the inner error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert "Traceback" not in error["message"]
    return error
