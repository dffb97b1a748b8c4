"""Cancelling the work of a request whose client went away, without moving that work off its task.

The door's answer runs in the task uvicorn gave the request. A side task waits for the client's
`http.disconnect` and cancels that task; the answer itself is never handed to another task. An
extra task (starlette's task group around a streamed body, or `ensure_future` around the work)
costs a trip through the event loop's ready queue each time it starts or hands back a result:
under load, with every stream's tokens arriving in the same engine step, each trip waited behind
the whole step's work, and the first event reached the client milliseconds later.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from starlette.types import Receive

from serving.http.errors import HttpError

log = logging.getLogger(__name__)


class ClientGone(HttpError):
    """The client disconnected before its answer was ready (499: nobody reads the answer)."""

    def __init__(self) -> None:
        super().__init__(499, "the client closed the request", code="cancelled", type_="cancelled_error")


class DisconnectWatch:
    """`async with DisconnectWatch(receive):` runs its body in the current task and cancels it if
    the client disconnects first; the block then raises `ClientGone` (the cancellation it caused
    is taken back, so the task goes on). A cancellation from elsewhere (server shutdown) passes
    through unchanged, also when the client leaves in the same moment, and once one is under way
    the watch cancels nothing more (its clean-up, e.g. the engine's abort, runs to the end).
    `close()` ends the watch early: after it a disconnect cancels nothing (call it before the
    answer's last write, once uvicorn reports every later `receive` as a disconnect)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._base = 0
        self.gone = False

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        self._base = self._task.cancelling() if self._task is not None else 0
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        task = self._task
        if task is not None and task.cancelling() == self._base:  # not already being cancelled
            self.gone = True
            task.cancel()

    def close(self) -> None:
        """Stops watching: a disconnect from now on cancels nothing."""
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        if watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
            log.error("the disconnect watch failed", exc_info=watcher.exception())
        watcher.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if not self.gone or self._task is None:
            return
        left = self._task.uncancel()
        if left <= self._base and (kind is None or issubclass(kind, asyncio.CancelledError)):
            raise ClientGone() from None
