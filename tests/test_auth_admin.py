"""API keys, scopes, TLS/mTLS, and the admin traffic steps, through real grpc.aio servers
(fake engines: who gets in and what changes is the subject, not generation)."""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.app import App, start_app
from serving.auth import Authenticator, PermissionDenied, Scope, Unauthenticated, hash_key, load_keys
from serving.commands.serve import reload_traffic
from serving.config import AuthConfig, Config, Role, ServerConfig, TlsConfig, VariantConfig
from serving.errors import ConfigError
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.certs import make_pki
from tests.fakes import FakeEngine

ADMIN_KEY, USER_KEY = "admin-secret-1", "user-secret-2"


def write_keys(directory: Path) -> Path:
    path = directory / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - {{name: ci, scope: admin, sha256: {hash_key(ADMIN_KEY)}}}\n"
        f"  - {{name: web, scope: user, sha256: {hash_key(USER_KEY)}}}\n"
    )
    return path


def test_authenticator_checks_hashes_and_scopes(tmp_path: Path) -> None:
    auth = Authenticator(load_keys(write_keys(tmp_path)))
    admin, user = auth.authenticate(f"Bearer {ADMIN_KEY}"), auth.authenticate(f"bearer {USER_KEY}")
    assert (admin and admin.name, user and user.scope) == ("ci", Scope.USER)
    for bad in (None, "", ADMIN_KEY, "Bearer nope", f"Basic {ADMIN_KEY}"):
        with pytest.raises(Unauthenticated):
            auth.authenticate(bad)
    auth.authorize(admin, Scope.ADMIN)
    with pytest.raises(PermissionDenied, match="'web' has scope user"):
        auth.authorize(user, Scope.ADMIN)
    assert Authenticator().authenticate(None) is None  # no keys: authentication off


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys: []", "non-empty `keys:` list"),
        ("keys: [{name: a, scope: root, sha256: " + "0" * 64 + "}]", "scope must be user or admin"),
        ("keys: [{name: a, scope: user, sha256: plaintext-key}]", "64 hex digits"),
        ("keys: [{name: a, scope: user}]", "exactly name, scope and sha256"),
    ],
)
def test_bad_keys_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_keys(path)


def _config(tmp_path: Path, **server: object) -> Config:
    return Config(
        server=ServerConfig(grpc_port=0, metrics_port=0, http_port=-1, drain_timeout_s=2.0, **server),  # type: ignore[arg-type]
        auth=AuthConfig(keys_file=str(write_keys(tmp_path))),
        variants=[
            VariantConfig(name="dense"),
            VariantConfig(name="cand", role=Role.CANDIDATE, weight=0.0),
            VariantConfig(name="shadow", role=Role.SHADOW, sample_rate=1.0, max_in_flight=1000),
        ],
    )


@pytest_asyncio.fixture(loop_scope="session")
async def app(tmp_path: Path) -> AsyncIterator[App]:
    engines = {n: FakeEngine(n, f"answer from {n}") for n in ("dense", "cand", "shadow")}
    running = await start_app(_config(tmp_path), engines=engines)  # type: ignore[arg-type]
    yield running
    await running.stop()


def _as(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.asyncio(loop_scope="session")
async def test_keys_and_scopes_over_grpc(app: App) -> None:
    dense = app.gateway.engines["dense"]
    assert isinstance(dense, FakeEngine)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        req = pb.GenerateRequest(prompt="hi")
        assert await _code(stub.Generate(req)) == grpc.StatusCode.UNAUTHENTICATED
        assert await _code(stub.Generate(req, metadata=_as("wrong"))) == grpc.StatusCode.UNAUTHENTICATED
        stream = stub.GenerateStream(req, metadata=_as("wrong"))
        assert await _code(stream.read()) == grpc.StatusCode.UNAUTHENTICATED
        assert dense.prompts == []  # refused calls reach no engine
        assert (await stub.Generate(req, metadata=_as(USER_KEY))).text == "answer from dense"
        promote = stub.Promote(pb.PromoteRequest(variant="cand"), metadata=_as(USER_KEY))
        assert await _code(promote) == grpc.StatusCode.PERMISSION_DENIED
        assert app.gateway.config.primary.name == "dense"
        health = health_pb2_grpc.HealthStub(channel)  # open by default: kubelet probes carry no key
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.asyncio(loop_scope="session")
async def test_admin_steps_change_traffic_and_bad_ones_change_nothing(app: App) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        admin = _as(ADMIN_KEY)
        bad = [
            pb.SetTrafficRequest(variant="nope", weight=0.5),
            pb.SetTrafficRequest(variant="cand", weight=-1.0),
            pb.SetTrafficRequest(variant="cand"),
            pb.SetTrafficRequest(variant="cand", role=pb.ROLE_PRIMARY),
            pb.SetTrafficRequest(variant="shadow", sample_rate=1.5),
            pb.SetTrafficRequest(variant="shadow", score_rate=-0.1),
            pb.SetTrafficRequest(variant="shadow", score_rate=0.0),  # its KL gate needs scores
        ]
        before = [
            (v.name, v.role, v.weight, v.sample_rate, v.score_rate) for v in app.gateway.config.variants
        ]
        codes = [await _code(stub.SetTraffic(r, metadata=admin)) for r in bad]
        assert codes == [grpc.StatusCode.NOT_FOUND] + [grpc.StatusCode.INVALID_ARGUMENT] * 6
        after = [(v.name, v.role, v.weight, v.sample_rate, v.score_rate) for v in app.gateway.config.variants]
        assert after == before
        listed = await stub.SetTraffic(pb.SetTrafficRequest(variant="cand", weight=1.0), metadata=admin)
        assert {v.name: v.weight for v in listed.variants}["cand"] == 1.0
        listed = await stub.SetTraffic(
            pb.SetTrafficRequest(variant="shadow", score_rate=0.25), metadata=admin
        )
        shadow = {v.name: v for v in listed.variants}["shadow"]
        assert (shadow.score_rate, shadow.sample_rate) == (0.25, 1.0)  # only the field given changed
        await stub.SetTraffic(pb.SetTrafficRequest(variant="dense", score_rate=0.5), metadata=admin)
        listed = await stub.Promote(pb.PromoteRequest(variant="cand"), metadata=admin)
        roles = {v.name: v.role for v in listed.variants}
        assert roles == {"dense": pb.ROLE_SHADOW, "cand": pb.ROLE_PRIMARY, "shadow": pb.ROLE_SHADOW}
        old = {v.name: v for v in listed.variants}["dense"]
        assert (old.sample_rate, old.score_rate) == (1.0, 1.0)  # the old primary is compared in full
        reply = await stub.Generate(pb.GenerateRequest(prompt="hi", variant=""), metadata=admin)
        assert reply.variant == "cand"
    changes = app.registry.get_sample_value
    assert changes("driftgate_traffic_changes_total", {"source": "admin", "outcome": "refused"}) == 7
    assert changes("driftgate_traffic_changes_total", {"source": "admin", "outcome": "applied"}) == 4


@pytest.mark.asyncio(loop_scope="session")
async def test_promotion_under_load_loses_no_request(tmp_path: Path) -> None:
    engines = {
        n: FakeEngine(n, "one two three four five six seven eight") for n in ("dense", "cand", "shadow")
    }
    app = await start_app(_config(tmp_path), engines=engines)  # type: ignore[arg-type]
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            answered: list[str] = []

            async def user() -> None:
                for _ in range(40):
                    reply = await stub.Generate(pb.GenerateRequest(prompt="q"), metadata=_as(USER_KEY))
                    answered.append(reply.variant)

            users = [asyncio.create_task(user()) for _ in range(8)]
            await asyncio.sleep(0.05)
            await stub.Promote(pb.PromoteRequest(variant="cand"), metadata=_as(ADMIN_KEY))
            await asyncio.gather(*users)  # any error would raise here
        assert len(answered) == 320 and set(answered) <= {"dense", "cand"} and answered[-1] == "cand"
        await app.gateway.mirror.drain()
    finally:
        await app.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_sighup_reload_applies_traffic_settings_or_nothing(app: App, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    keys = tmp_path / "keys.yaml"
    body = "auth: {{keys_file: {keys}}}\nvariants:\n  - {{name: dense}}\n  - {{name: cand, role: candidate, weight: {w}}}\n  - {{name: shadow, role: shadow, sample_rate: {r}, score_rate: {s}}}\n"
    path.write_text(body.format(keys=keys, w=0.25, r=0.5, s=0.1))
    assert reload_traffic(app, path)
    cand, shadow = app.gateway.config.variant("cand"), app.gateway.config.variant("shadow")
    assert cand is not None and shadow is not None
    assert (cand.weight, shadow.sample_rate, shadow.score_rate) == (0.25, 0.5, 0.1)
    path.write_text("variants:\n  - {name: dense}\n")  # removes variants: refused
    assert not reload_traffic(app, path)
    path.write_text("variants: [{name: dense, unknown_key: 1}]\n")
    assert not reload_traffic(app, path)
    assert app.gateway.config.variant("cand") is not None
    refused = app.registry.get_sample_value(
        "driftgate_traffic_changes_total", {"source": "reload", "outcome": "refused"}
    )
    assert refused == 2


@pytest.mark.asyncio(loop_scope="session")
async def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = TlsConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file=str(pki.ca))
    config = _config(tmp_path)
    config.tls = tls
    app = await start_app(config, engines={n: FakeEngine(n) for n in ("dense", "cand", "shadow")})  # type: ignore[misc]
    try:
        address = f"localhost:{app.grpc.port}"
        root = pki.ca.read_bytes()
        req = pb.GenerateRequest(prompt="hi")
        no_cert = grpc.ssl_channel_credentials(root_certificates=root)
        with_cert = grpc.ssl_channel_credentials(
            root, pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        for creds, ok in ((no_cert, False), (with_cert, True)):
            async with grpc.aio.secure_channel(address, creds) as channel:
                code = await _code(
                    pb_grpc.GatewayStub(channel).Generate(req, metadata=_as(USER_KEY), timeout=5)
                )
                assert (code == grpc.StatusCode.OK) is ok, code
        async with grpc.aio.insecure_channel(address) as channel:  # plaintext to a TLS port
            assert (
                await _code(pb_grpc.GatewayStub(channel).Generate(req, timeout=5))
                == grpc.StatusCode.UNAVAILABLE
            )
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        url = f"https://localhost:{app.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, context=context, timeout=5).read())
        assert b"driftgate_requests_total" in body
        anonymous = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises(OSError):  # the metrics port requires a client certificate too
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, context=anonymous, timeout=5).read())
    finally:
        await app.stop()
