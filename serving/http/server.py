"""The HTTP door's server: uvicorn on the gateway's own event loop (where grpc.aio also runs).

`start_http` binds the socket itself (port 0 = any free port; `HttpServer.port` is the real one),
so a port already taken raises `OSError` here instead of uvicorn's `sys.exit`; uvicorn serves it
as a task of the running loop, without touching the process's signal handlers (the gateway's
command owns SIGTERM/SIGINT). `stop` asks uvicorn to exit, gives open answers `grace` seconds,
then cancels them (each cancelled answer aborts its engine request).

Security is the gateway's configuration, as for gRPC: the API keys of `auth.keys_file` (or the
`Authenticator` the caller passes, to share one) and TLS from `tls` (HTTPS with `cert_file`;
client certificates required when `client_ca_file` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn

from serving.auth import Authenticator, load_keys
from serving.config import Config, TlsConfig
from serving.errors import ConfigError
from serving.gateway import Gateway
from serving.http.routes import create_app

log = logging.getLogger(__name__)

STOP_GRACE_S = 1
STARTUP_TIMEOUT_S = 10.0


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the gateway's process, not to this server


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _tls_options(tls: TlsConfig) -> dict[str, Any]:
    if not tls.cert_file:
        return {}
    options: dict[str, Any] = {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    if tls.client_ca_file:
        options |= {"ssl_ca_certs": tls.client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def _uvicorn_config(gateway: Gateway, auth: Authenticator) -> uvicorn.Config:
    """uvicorn's settings, loaded now so that bad TLS files fail here, as a ConfigError."""
    config = uvicorn.Config(
        create_app(gateway, auth),
        log_level="warning",
        log_config=None,
        lifespan="off",
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=STOP_GRACE_S,
        **_tls_options(gateway.config.tls),
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load the HTTP door's certificate or key: {exc}") from None
    return config


def _authenticator(config: Config) -> Authenticator:
    return Authenticator(load_keys(config.auth.keys_file) if config.auth.keys_file else ())


class HttpServer:
    """A running HTTP door; `port` is the port it listens on."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket) -> None:
        self._server = server
        self._task = task
        self.port: int = sock.getsockname()[1]
        self.host: str = sock.getsockname()[0]
        self.scheme = "https" if server.config.is_ssl else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def stop(self, grace: int = STOP_GRACE_S) -> None:
        if self._task.done():
            return
        self._server.config.timeout_graceful_shutdown = grace
        self._server.should_exit = True
        try:
            await self._task
        except Exception:
            log.exception("the HTTP server failed while stopping")


async def start_http(gateway: Gateway, host: str, port: int, auth: Authenticator | None = None) -> HttpServer:
    """Serves the OpenAI-compatible door on `gateway` at host:port until `stop`; `auth` defaults to
    the keys of the gateway's `auth.keys_file`."""
    config = _uvicorn_config(gateway, auth or _authenticator(gateway.config))
    sock = _bind(host, port)
    server = _Uvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"driftgate-http:{port}")
    listening = asyncio.ensure_future(server.listening.wait())
    await asyncio.wait((listening, task), timeout=STARTUP_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    listening.cancel()
    if not server.started:
        server.should_exit = True
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        sock.close()
        cause = results[0] if isinstance(results[0], BaseException) else None
        raise RuntimeError(f"the HTTP server on {host}:{port} did not start") from cause
    return HttpServer(server, task, sock)
