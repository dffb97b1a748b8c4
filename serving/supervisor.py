"""Readiness of every variant, watched: engines join the gateway when healthy and leave when not.

The supervisor checks each engine every `interval_s` (`check_health`, bounded by `timeout_s`;
a remote engine's first successful check is its `connect`, which reads the server's context
length). A healthy engine is attached to the gateway (its variant takes traffic, mirrors reach
it); one whose check fails is detached (a shadow's copies count as dropped, a primary's callers
get UNAVAILABLE) and re-attached by itself once its server answers again. After every round the
gRPC health status is set from the gateway's readiness: SERVING only while the primary is ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from serving.engines.base import Engine
from serving.gateway import Gateway
from serving.stats import Sink

log = logging.getLogger(__name__)

ServingHook = Callable[[bool], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        gateway: Gateway,
        engines: Mapping[str, Engine],
        sink: Sink,
        set_serving: ServingHook,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._gateway = gateway
        self._engines = dict(engines)
        self._sink = sink
        self._set_serving = set_serving
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._connected: set[str] = set()
        self._serving: bool | None = None

    async def _healthy(self, name: str, engine: Engine) -> bool:
        connect = getattr(engine, "connect", None)
        try:
            async with asyncio.timeout(self._timeout_s):
                if connect is not None and name not in self._connected:
                    await connect()
                    self._connected.add(name)
                else:
                    await engine.check_health()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._gateway.is_attached(name) or name not in self._connected:
                log.warning("variant %s not ready: %s", name, getattr(exc, "message", None) or exc)
            return False
        return True

    async def check_once(self) -> None:
        """One round: every engine checked at once, attached or detached, health status updated."""
        names = list(self._engines)
        results = await asyncio.gather(*(self._healthy(n, self._engines[n]) for n in names))
        for name, healthy in zip(names, results, strict=True):
            if healthy and not self._gateway.is_attached(name):
                self._gateway.attach(name, self._engines[name])
                self._sink.ready(name, True)
                log.info("variant %s ready", name)
            elif not healthy and self._gateway.is_attached(name):
                self._gateway.detach(name)
                self._sink.ready(name, False)
        serving = self._gateway.is_ready()
        if serving != self._serving:
            self._serving = serving
            await self._set_serving(serving)

    async def run(self) -> None:
        """Checks until cancelled."""
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("variant health round failed")
            await asyncio.sleep(self._interval_s)
