"""The HTTP door's authentication and limits are gRPC's: the same API keys and scopes, per-key
concurrency counted across both doors, and TLS / mutual TLS from the same configuration
(scripted engines; a real uvicorn server, and a real grpc.aio server where both doors are used)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from serving.app import start_app
from serving.auth import hash_key
from serving.config import AuthConfig, LimitsConfig, TlsConfig
from serving.errors import ConfigError
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.http.server import start_http
from serving.stats import ListSink
from tests.certs import make_pki
from tests.fakes import FakeEngine, HangingEngine
from tests.http.conftest import assert_openai_error, fake_config, open_door, openai_client

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADMIN_KEY, USER_KEY = "admin-secret-1", "user-secret-2"
COMPLETION: dict[str, object] = {"prompt": "hi", "max_tokens": 2}
CHAT: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}]}


def keys_file(directory: Path) -> str:
    path = directory / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - {{name: ci, scope: admin, sha256: {hash_key(ADMIN_KEY)}}}\n"
        f"  - {{name: web, scope: user, sha256: {hash_key(USER_KEY)}}}\n"
    )
    return str(path)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def test_api_keys_guard_every_route_and_are_checked_before_the_body(tmp_path: Path) -> None:
    config = fake_config(auth=AuthConfig(keys_file=keys_file(tmp_path)))
    engine = FakeEngine("dense")
    async with open_door(config, {"dense": engine}) as door, door.client() as http:
        routes: list[tuple[str, str, dict[str, object] | None]] = [
            ("GET", "/v1/models", None),
            ("GET", "/v1/models/dense", None),
        ]
        routes += [("POST", "/v1/completions", COMPLETION), ("POST", "/v1/chat/completions", CHAT)]
        for method, path, body in routes:
            for headers in ({}, bearer("wrong"), {"authorization": USER_KEY}):
                resp = await http.request(method, path, json=body, headers=headers)
                error = assert_openai_error(resp, 401)
                assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
                assert resp.headers["www-authenticate"] == "Bearer"
            assert (await http.request(method, path, json=body, headers=bearer(USER_KEY))).status_code == 200
        unread = await http.post("/v1/completions", content=b"{broken", headers=bearer("wrong"))
        assert "invalid API key" in assert_openai_error(unread, 401)["message"]  # 401 before any parsing
        assert (await http.get("/health")).status_code == 200  # open, as gRPC health (auth.open_health)
        assert len(engine.prompts) == 2  # refused calls never reached the engine

        assert door.server.port
        with pytest.raises(openai.AuthenticationError):
            await openai_client(door.server.port, "not-a-key").models.list()
        client = openai_client(door.server.port, ADMIN_KEY)
        stream = await client.chat.completions.create(
            model="dense", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "ok fine"


async def test_health_needs_a_key_when_it_is_not_open(tmp_path: Path) -> None:
    config = fake_config(auth=AuthConfig(keys_file=keys_file(tmp_path), open_health=False))
    async with open_door(config, {"dense": FakeEngine("dense")}) as door, door.client() as http:
        assert_openai_error(await http.get("/health"), 401)
        assert (await http.get("/health", headers=bearer(USER_KEY))).json() == {"status": "ok"}


async def test_per_key_concurrency_counts_grpc_and_http_calls_together(tmp_path: Path) -> None:
    config = fake_config(
        auth=AuthConfig(keys_file=keys_file(tmp_path)), limits=LimitsConfig(max_concurrent_per_key=1)
    )
    hanging = HangingEngine(FakeEngine("dense"))
    app = await start_app(config, engines={"dense": hanging})
    try:
        assert app.http_port
        async with (
            grpc.aio.insecure_channel(app.address) as channel,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http,
        ):
            stub = pb_grpc.GatewayStub(channel)
            held = asyncio.ensure_future(
                stub.Generate(
                    pb.GenerateRequest(prompt="hi"), metadata=(("authorization", f"Bearer {USER_KEY}"),)
                )
            )
            await _wait_for(lambda: hanging.holding == 1)
            refused = await http.post("/v1/completions", json=COMPLETION, headers=bearer(USER_KEY))
            error = assert_openai_error(refused, 429)
            assert "for key 'web' (limit 1)" in error["message"]
            other = asyncio.ensure_future(
                http.post("/v1/chat/completions", json=CHAT, headers=bearer(ADMIN_KEY))
            )
            await _wait_for(lambda: hanging.holding == 2)  # another key has its own allowance
            for call in (held, other):
                call.cancel()
            await asyncio.gather(held, other, return_exceptions=True)
            await _wait_for(lambda: hanging.holding == 0)
    finally:
        await app.stop()


def _context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = TlsConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key))
    async with open_door(fake_config(tls=tls), {"dense": FakeEngine("dense")}) as door:
        url = f"https://127.0.0.1:{door.server.port}"
        assert door.server.url == url
        async with openai.DefaultAsyncHttpxClient(verify=_context(pki.ca)) as https:
            client = openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key="unused", http_client=https, max_retries=0
            )
            reply = await client.completions.create(model="dense", prompt="hi")
            assert reply.choices[0].text == "ok fine"
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{door.server.port}/v1/models")

    mutual = TlsConfig(cert_file=tls.cert_file, key_file=tls.key_file, client_ca_file=str(pki.ca))
    async with open_door(fake_config(tls=mutual), {"dense": FakeEngine("dense")}) as door:
        url = f"https://127.0.0.1:{door.server.port}/v1/models"
        async with httpx.AsyncClient(verify=_context(pki.ca, pki.client_cert, pki.client_key)) as https:
            assert (await https.get(url)).status_code == 200
        async with httpx.AsyncClient(verify=_context(pki.ca)) as anonymous:
            with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
                await anonymous.get(url)


async def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    from serving.gateway import Gateway

    tls = TlsConfig(cert_file=str(tmp_path / "missing.pem"), key_file=str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="tls"):
        await start_http(Gateway(fake_config(tls=tls), ListSink()), "127.0.0.1", 0)
