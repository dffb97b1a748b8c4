"""`driftgate serve`: run the gateway until SIGTERM/SIGINT, then drain and exit 0.

SIGHUP re-reads the config file and applies its traffic settings (roles, weights, sample rates,
mirroring bounds, gates) to the running variants, as the admin `SetTraffic`/`Promote` calls do;
a file that is invalid or changes the set of variants or their engines changes nothing (logged
and counted in `driftgate_traffic_changes_total{source="reload",outcome="refused"}`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from serving.app import App, start_app
from serving.config import Config, load_config
from serving.errors import ConfigError, GatewayError
from serving.traffic import reloaded

log = logging.getLogger(__name__)


def reload_traffic(app: App, path: Path) -> bool:
    """Applies the traffic settings of the config at `path`; False (and nothing changed) if refused."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload of %s refused: %s", path, exc)
        app.gateway.sink.traffic("reload", "refused")
        return False
    try:
        app.gateway.change_traffic(lambda config: reloaded(config, new), "reload", caller=f"SIGHUP {path}")
    except GatewayError:
        return False
    return True


async def _serve(config: Config, path: Path | None) -> None:
    app = await start_app(config, freeze=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if path is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_traffic, app, path)
    print(
        f"driftgate: serving gRPC on {app.address}, HTTP on :{app.http_port}, metrics on :{app.metrics_port}",
        flush=True,
    )
    await stop.wait()
    print("driftgate: draining", flush=True)
    await app.stop()


def serve_forever(config: Config, path: str | Path | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=_loop_factory(config.server.event_loop)) as runner:
        runner.run(_serve(config, Path(path) if path else None))
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `serve` runs on: asyncio's default, or uvloop's (a vLLM dependency)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None  # asyncio's (config validation refuses other names)
