"""`driftgate serve`: run the gateway until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal

from serving.app import start_app
from serving.config import Config


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
