"""Readiness of every variant, watched: engines join the gateway when healthy and leave when not.

The supervisor checks each engine every `interval_s` (`check_health`, bounded by `timeout_s`;
a remote engine's first successful check is its `connect`, which reads the server's context
length). A healthy engine is attached to the gateway (its variant takes traffic, mirrors reach
it); one whose check fails is detached (a shadow's copies count as dropped, a primary's callers
get UNAVAILABLE) and re-attached by itself once its server answers again. After every round the
gRPC health status is set from the gateway's readiness: SERVING only while the primary is ready.

An in-process engine that fails (its engine-core process died) is restarted: the dead one shut
down, a new one built by `restart`, after a backoff that doubles from `backoff_s` on every failed
attempt, at most `max_restarts` times in a row (then it stays down, logged). Remote engines are
not restarted here: their server's orchestrator (Kubernetes) does that; they come back by
themselves once the server answers. Restarts are counted (`Sink.engine_restart`). Every round
also samples each engine's `num_unfinished` into the sink (`Sink.unfinished`).
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
Restart = Callable[[str], Awaitable[Engine]]
"""Builds a fresh engine for the named variant."""


class Supervisor:
    def __init__(
        self,
        gateway: Gateway,
        engines: Mapping[str, Engine],
        sink: Sink,
        set_serving: ServingHook,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
        restart: Restart | None = None,
        restartable: frozenset[str] = frozenset(),
        max_restarts: int = 5,
        backoff_s: float = 5.0,
    ) -> None:
        self._gateway = gateway
        self._engines = dict(engines)
        self._sink = sink
        self._set_serving = set_serving
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._connected: set[str] = set()
        self._reported: dict[str, bool] = {}
        self._serving: bool | None = None
        self._restart = restart
        self._restartable = restartable
        self._max_restarts = max_restarts
        self._backoff_s = backoff_s
        self._failures: dict[str, int] = {}
        self._restarting: dict[str, asyncio.Task[None]] = {}

    @property
    def engines(self) -> dict[str, Engine]:
        """The current engine of every variant (restarts replace them)."""
        return dict(self._engines)

    async def _rebuild(self, name: str) -> None:
        assert self._restart is not None
        while self._failures.get(name, 0) < self._max_restarts:
            attempt = self._failures.get(name, 0)
            await asyncio.sleep(self._backoff_s * 2**attempt)
            old = self._engines[name]
            await asyncio.gather(old.shutdown(), return_exceptions=True)
            try:
                self._engines[name] = await self._restart(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures[name] = attempt + 1
                self._sink.engine_restart(name, "failed")
                log.error("restart %d of variant %s failed: %s", attempt + 1, name, exc)
                continue
            self._failures[name] = 0
            self._sink.engine_restart(name, "restarted")
            log.warning("variant %s restarted after its engine failed", name)
            return
        log.error("variant %s stays down after %d failed restarts", name, self._max_restarts)

    def _maybe_restart(self, name: str) -> None:
        if self._restart is None or name not in self._restartable or name in self._restarting:
            return
        task = asyncio.create_task(self._rebuild(name))
        self._restarting[name] = task
        task.add_done_callback(lambda _: self._restarting.pop(name, None))

    async def close(self) -> None:
        """Stops restarts in progress (the engines themselves are their owner's to shut down)."""
        for task in list(self._restarting.values()):
            task.cancel()
        await asyncio.gather(*self._restarting.values(), return_exceptions=True)

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

    def _report_ready(self, name: str) -> None:
        """Reports the variant's readiness when it changed, whoever attached it (`start_app` attaches
        in-process engines as it builds them; they are reported ready on the first round)."""
        ready = self._gateway.is_attached(name)
        if self._reported.get(name, False) != ready:
            self._reported[name] = ready
            self._sink.ready(name, ready)

    def _report_unfinished(self, names: list[str]) -> None:
        """Samples every engine's `num_unfinished` into the sink (an engine that cannot say is skipped)."""
        for name in names:
            try:
                count = self._engines[name].num_unfinished()
            except Exception:
                continue
            self._sink.unfinished(name, count)

    async def check_once(self) -> None:
        """One round: every engine checked at once, attached or detached, health status updated."""
        names = [n for n in self._engines if n not in self._restarting]
        results = await asyncio.gather(*(self._healthy(n, self._engines[n]) for n in names))
        for name, healthy in zip(names, results, strict=True):
            if not healthy:
                self._maybe_restart(name)
            if healthy and not self._gateway.is_attached(name):
                self._gateway.attach(name, self._engines[name])
                log.info("variant %s ready", name)
            elif not healthy and self._gateway.is_attached(name):
                self._gateway.detach(name)
            self._report_ready(name)
        self._report_unfinished(names)
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
