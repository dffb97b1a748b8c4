"""The composition root of a running gateway: metrics, gRPC server, engines, lifecycle.

Start-up order: the gRPC server listens at once with health NOT_SERVING; in-process engines are
built off the event loop (so health checks answer meanwhile), a few at once (one per core by
default), the primary first; remote variants are not waited for. From then on the `Supervisor` attaches each variant while its
engine is healthy and sets health SERVING exactly while the primary is attached. `App.stop`: health NOT_SERVING, new requests
refused, in-flight requests drained (bounded), mirrored copies cancelled, the engines this app
built shut down (engines passed in by the caller are the caller's).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from serving.auth import Authenticator, load_keys
from serving.config import Config, VariantConfig
from serving.engines.base import Engine
from serving.engines.factory import EngineFactory, check_checkpoints, vllm_factory
from serving.gateway import Gateway
from serving.gcwatch import GcWatch, freeze_heap
from serving.grpc.server import GrpcServer
from serving.http.server import HttpServer, start_http
from serving.metrics import PrometheusSink, serve_metrics
from serving.probes.live import run_probe_traffic
from serving.supervisor import Supervisor

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class App:
    """A running gateway."""

    config: Config
    gateway: Gateway
    grpc: GrpcServer
    registry: CollectorRegistry
    metrics_port: int | None = None
    metrics_server: Any = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    owned: list[Engine] = field(default_factory=list)
    """Engines built by `start_app` (shut down by `stop`); borrowed ones are left running."""
    supervisor: Supervisor | None = None
    auth: Authenticator = field(default_factory=Authenticator)
    """The API keys (shared by the gRPC and HTTP doors)."""
    http: HttpServer | None = None
    """The OpenAI-compatible HTTP door (`server.http_port`), on the same `Gateway`."""
    sink: PrometheusSink | None = None
    """The gateway's Prometheus series (its `Gateway` sees them through a fan-out `Sink`)."""
    gc_watch: GcWatch | None = None
    """Times this process's garbage collections into `driftgate_gc_pause_seconds` while the app runs."""

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    @property
    def address(self) -> str:
        return self.grpc.address

    def freeze_heap(self) -> int:
        """With `server.gc_freeze`, freezes the start-up heap (`serving.gcwatch`), as `vllm serve`
        does once it is up; returns the objects frozen (0 when off)."""
        if not self.config.server.gc_freeze:
            return 0
        frozen = self.gc_watch.freeze() if self.gc_watch else freeze_heap()
        if self.sink is not None:
            self.sink.gc_frozen(frozen)
        log.info("froze %d start-up objects: garbage collections skip them from now on", frozen)
        return frozen

    async def stop(self) -> None:
        if self.gc_watch is not None:
            self.gc_watch.stop()
        await self.grpc.set_serving(False)
        drained = await self.gateway.drain(self.config.server.drain_timeout_s)
        if not drained:
            log.warning("drain timed out; cancelling the remaining requests")
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.supervisor is not None:
            await self.supervisor.close()
        if self.http is not None:
            await self.http.stop()
            self.http = None
        await self.grpc.stop(grace=1.0)
        await self.gateway.close()
        await asyncio.gather(*(e.shutdown() for e in self.owned), return_exceptions=True)
        self.owned.clear()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server = None


def start_concurrency(config: Config) -> int:
    """How many in-process engines are built at once (`server.engine_start_concurrency`, 0 = one
    per CPU core this process may use): most of a build is imports, compilation and warm-up, each
    on one core, so more at once than cores only makes every one slower."""
    n = config.server.engine_start_concurrency
    return n if n > 0 else max(1, len(os.sched_getaffinity(0)))


async def _build_engines(
    app: App, factory: EngineFactory, borrowed: dict[str, Engine], progress: Progress | None
) -> dict[str, Engine]:
    """Every variant's engine: borrowed ones as they are, the others built, at most
    `start_concurrency` at once, in order (the primary first). In-process engines are attached as
    soon as they are built (building one proves it healthy); remote ones are attached by the
    supervisor once their server answers. If a build fails, builds not yet begun are skipped, the
    ones under way are awaited (a build cannot be interrupted) and the first error is raised."""
    slots = asyncio.Semaphore(start_concurrency(app.config))
    engines: dict[str, Engine] = {}
    failed: list[BaseException] = []

    async def build(variant: VariantConfig) -> None:
        engine = borrowed.get(variant.name)
        if engine is None:
            async with slots:
                if failed:
                    return
                try:
                    engine = await factory(variant)
                except BaseException as exc:
                    failed.append(exc)
                    raise
            app.owned.append(engine)
        engines[variant.name] = engine
        if not variant.remote:
            app.gateway.attach(variant.name, engine)
            log.info("variant %s (%s) ready", variant.name, variant.role.value)
        if progress is not None:
            progress(variant.name)

    results = await asyncio.gather(*(build(v) for v in app.config.primary_first()), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return {v.name: engines[v.name] for v in app.config.primary_first()}


async def _refresh_verdicts(gateway: Gateway, sink: PrometheusSink, every_s: float) -> None:
    """Keeps the `driftgate_gate_*` gauges current (canary controllers read them from Prometheus)."""
    while True:
        try:
            sink.verdicts(await gateway.verdicts())
        except Exception:
            log.exception("refreshing the promotion verdicts failed")
        await asyncio.sleep(every_s)


def _supervisor(
    app: App, factory: EngineFactory, engines: dict[str, Engine], borrowed: dict[str, Engine]
) -> Supervisor:
    """Watches every engine; restarts the in-process ones this app built (see `Supervisor`)."""
    config, s = app.config, app.config.server

    async def restart(name: str) -> Engine:
        engine = await factory(config.variant(name))  # type: ignore[arg-type]
        app.owned.append(engine)
        return engine

    restartable = frozenset(v.name for v in config.variants if v.name not in borrowed and not v.remote)
    return Supervisor(
        app.gateway,
        engines,
        app.gateway.sink,
        app.grpc.set_serving,
        s.health_interval_s,
        s.health_timeout_s,
        restart=restart,
        restartable=restartable,
        max_restarts=s.max_engine_restarts,
    )


async def start_app(
    config: Config,
    factory: EngineFactory = vllm_factory,
    engines: dict[str, Engine] | None = None,
    progress: Progress | None = None,
    freeze: bool = False,
) -> App:
    """Starts metrics and gRPC, then the engines (`engines` lets tests reuse running ones);
    `progress` is called with each variant's name once it is attached. `freeze`: the process is
    the gateway's own (`serve`, `demo`), so `server.gc_freeze` applies, once the engines are built
    and before health turns SERVING (its collections stop the event loop for about half a second)."""
    borrowed = dict(engines or {})
    if factory is vllm_factory:  # every missing checkpoint is a config error before any engine starts
        check_checkpoints(v for v in config.variants if v.name not in borrowed)
    registry = CollectorRegistry()
    sink = PrometheusSink(registry, config.variants)
    gateway = Gateway(config, sink)
    auth = Authenticator(load_keys(config.auth.keys_file) if config.auth.keys_file else ())
    s = config.server
    server = GrpcServer(
        gateway, s.host, s.grpc_port, auth, config.auth, config.tls, config.limits.max_request_bytes
    )
    watch = GcWatch(sink.gc_pause)
    app = App(config, gateway, server, registry, auth=auth, sink=sink, gc_watch=watch)
    watch.start()
    try:
        await app.grpc.start()
        if config.server.metrics_port >= 0:
            app.metrics_port, app.metrics_server = serve_metrics(
                registry, config.server.host, config.server.metrics_port, config.tls
            )
        if config.server.http_port >= 0:
            app.http = await start_http(gateway, config.server.host, config.server.http_port, auth=auth)
        engines = await _build_engines(app, factory, borrowed, progress)
        app.supervisor = _supervisor(app, factory, engines, borrowed)
        if freeze:
            app.freeze_heap()
        await app.supervisor.check_once()  # health SERVING now if the primary is up
        app.background.append(asyncio.create_task(app.supervisor.run()))
        if config.probes.enabled:
            app.background.append(
                asyncio.create_task(run_probe_traffic(gateway, config.probes, gateway.sink))
            )
        if config.server.verdict_refresh_s > 0 and len(config.variants) > 1:
            app.background.append(
                asyncio.create_task(_refresh_verdicts(gateway, sink, config.server.verdict_refresh_s))
            )
    except BaseException:
        await app.stop()
        raise
    return app
