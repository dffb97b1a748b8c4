"""Fixtures for the remote-engine tests: one real vLLM OpenAI-compatible server per module.

The server binds core 1; the in-process engine compared with it is the session's `dense_engine`
(tests/conftest.py), so at most two vLLM instances run at once. The server's process starts
before the in-process engine is built, so the two boot concurrently.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from serving.config import EngineConfig, VariantConfig
from serving.engines.base import Engine
from serving.engines.remote import RemoteEngine
from serving.engines.vllm_server import (
    ServerProcess,
    free_port,
    running_server,
    variant_command,
    variant_env,
    wait_healthy,
)
from tests.conftest import model_dir

SERVER_CORES = "1"
STARTUP_TIMEOUT_S = 600.0
MAX_MODEL_LEN = 512  # as the session's in-process engine


@pytest.fixture
def restored_environ() -> Iterator[None]:
    """This process's environment as it was, after a test that lets vLLM change it (building a
    config sets LD_PRELOAD, TORCHINDUCTOR_*, ... for the processes it would spawn)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def server_variant(name: str = "dense") -> VariantConfig:
    engine = EngineConfig(
        max_model_len=MAX_MODEL_LEN, kv_cache_gib=1.0, cpu_cores=SERVER_CORES, max_num_seqs=32
    )
    return VariantConfig(name=name, model=str(model_dir()), engine=engine)


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm-server") / "server.log"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dense_server(server_log: Path) -> AsyncIterator[ServerProcess]:
    """The dense model behind vLLM's server (started, not yet healthy: see `remote`), compiled into
    driftgate's compile cache as `driftgate variant serve` does (the last test restarts it so)."""
    port = free_port()
    command = variant_command(server_variant(), port)
    async with running_server(command, variant_env(server_variant()), server_log, port, wait=False) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def local(dense_server: ServerProcess, dense_engine: Engine) -> Engine:
    """The in-process engine on the same checkpoint (built while the server boots)."""
    return dense_engine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def remote(dense_server: ServerProcess, local: Engine) -> AsyncIterator[RemoteEngine]:
    """A connected RemoteEngine on `dense_server`, with the checkpoint's tokenizer."""
    await wait_healthy(dense_server, STARTUP_TIMEOUT_S)
    engine = RemoteEngine("dense", dense_server.url, "dense", tokenizer_path=str(model_dir()))
    await engine.connect()
    yield engine
    await engine.shutdown()


STUB_SERVER = """
import http.server, signal, subprocess, sys
port, status = int(sys.argv[1]), int(sys.argv[2])
# a child that ignores SIGTERM, as a stuck engine process would
subprocess.Popen([sys.executable, "-c",
                  "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(status)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def stub_command(port: int, health: int = 200) -> list[str]:
    """A stand-in for the server process: answers every GET with `health`."""
    return [sys.executable, "-c", STUB_SERVER, str(port), str(health)]


@dataclass
class FakeServer:
    """A scripted stand-in for vLLM's HTTP API (answers vLLM's shapes, for the error paths)."""

    url: str = ""
    health: int = 200
    completion: str = "ok"  # ok | error-event | http-500 | cut

    async def on_health(self, request: web.Request) -> web.Response:
        return web.Response(status=self.health)

    async def on_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "max_model_len": 64}]})

    async def on_completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            actual = {"logprob": -9999.0, "rank": 40, "decoded_token": "x"}
            pos = {"6": actual, "9": {"logprob": -0.25, "rank": 1}, "3": {"logprob": -2.0, "rank": 3}}
            choice = {"text": "", "prompt_logprobs": [None, {"5": {"logprob": -1.0, "rank": 1}}, pos]}
            return web.json_response({"choices": [choice]})
        if self.completion == "http-500":
            error = {"message": "kaput", "type": "InternalServerError", "code": 500}
            return web.json_response({"error": error}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        lp = {"top_logprobs": [{"token_id:5": -0.5, "token_id:7": -1.0}]}
        first = {
            "text": "a",
            "token_ids": [5],
            "prompt_token_ids": [1, 2],
            "logprobs": lp,
            "finish_reason": None,
        }
        await resp.write(b"data: " + json.dumps({"choices": [first]}).encode() + b"\n\n")
        if self.completion == "cut":
            assert request.transport is not None
            request.transport.close()
            return resp
        event: dict[str, Any]
        if self.completion == "error-event":
            event = {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}
        else:
            lp = {"top_logprobs": [{"token_id:6": -9999.0}]}
            event = {"choices": [{"text": "b", "token_ids": [6], "logprobs": lp, "finish_reason": "stop"}]}
        await resp.write(b": keep-alive\n\ndata: " + json.dumps(event).encode() + b"\n\ndata: [DONE]\n\n")
        return resp


@pytest_asyncio.fixture(loop_scope="session")
async def fake_server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    app = web.Application()
    app.router.add_get("/health", fake.on_health)
    app.router.add_get("/v1/models", fake.on_models)
    app.router.add_post("/v1/completions", fake.on_completion)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()
