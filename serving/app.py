"""The composition root of `driftgate serve`: metrics, gRPC server, engines, lifecycle.

Start-up order: the gRPC server listens at once with health NOT_SERVING; engines start one after
another (vLLM blocks while it builds one); health turns SERVING once every variant is attached.
On SIGTERM: health NOT_SERVING, new requests refused, in-flight requests drained (bounded),
mirrored copies cancelled, engines shut down.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from serving.config import Config, Role, VariantConfig
from serving.engines.base import Engine
from serving.errors import ConfigError
from serving.gateway import Gateway
from serving.grpc.server import GrpcServer
from serving.metrics import PrometheusSink, serve_metrics

log = logging.getLogger(__name__)

EngineFactory = Callable[[VariantConfig], Awaitable[Engine]]


async def vllm_factory(variant: VariantConfig) -> Engine:
    from serving.engines.vllm_engine import VllmEngine

    if not (Path(variant.model_path) / "config.json").is_file():
        raise ConfigError(
            f"variant {variant.name}: no checkpoint at {variant.model_path} "
            "(run `driftgate model pull`, or `driftgate compress --all` for the compressed variants)"
        )

    return await VllmEngine.start(variant)


@dataclass
class App:
    """A running gateway."""

    config: Config
    gateway: Gateway
    grpc: GrpcServer
    registry: CollectorRegistry
    metrics_port: int | None
    metrics_server: Any
    background: list[asyncio.Task[None]]
    shutdown_engines: bool = True

    @property
    def address(self) -> str:
        return self.grpc.address

    async def stop(self) -> None:
        await self.grpc.set_serving(False)
        drained = await self.gateway.drain(self.config.server.drain_timeout_s)
        if not drained:
            log.warning("drain timed out; cancelling the remaining requests")
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.grpc.stop(grace=1.0)
        await self.gateway.close(shutdown_engines=self.shutdown_engines)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()


async def start_app(
    config: Config,
    factory: EngineFactory = vllm_factory,
    engines: dict[str, Engine] | None = None,
) -> App:
    """Starts metrics and gRPC, then the engines (`engines` lets tests reuse running ones)."""
    registry = CollectorRegistry()
    sink = PrometheusSink(registry, config.variants)
    gateway = Gateway(config, sink)
    server = GrpcServer(gateway, config.server.host, config.server.grpc_port)
    await server.start()
    metrics_port, metrics_server = None, None
    if config.server.metrics_port >= 0:
        metrics_port, metrics_server = serve_metrics(registry, config.server.host, config.server.metrics_port)
    app = App(
        config, gateway, server, registry, metrics_port, metrics_server, [], shutdown_engines=not engines
    )
    try:
        order = sorted(config.variants, key=lambda v: v.role is not Role.PRIMARY)
        for variant in order:
            engine = (engines or {}).get(variant.name) or await factory(variant)
            gateway.attach(variant.name, engine)
            log.info("variant %s (%s) ready", variant.name, variant.role.value)
        await server.set_serving(True)
        if config.probes.enabled:
            from serving.probe_traffic import run_probe_traffic

            app.background.append(asyncio.create_task(run_probe_traffic(gateway, config.probes, sink)))
    except BaseException:
        await app.stop()
        raise
    return app


async def _serve(config: Config) -> None:
    app = await start_app(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"driftgate: serving gRPC on {app.address}, metrics on :{app.metrics_port}", flush=True)
    await stop.wait()
    print("driftgate: draining", flush=True)
    await app.stop()


def serve_forever(config: Config) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(config))
    return 0
