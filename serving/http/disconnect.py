"""Cancelling the work of a request whose client went away, without moving that work off its task.

The door's answer runs in the task uvicorn gave the request. A side task waits for the client's
`http.disconnect` and cancels that task; the answer itself is never handed to another task. An
extra task (starlette's task group around a streamed body, or `ensure_future` around the work)
costs a trip through the event loop's ready queue each time it starts or hands back a result:
under load, with every stream's tokens arriving in the same engine step, each trip waits behind
the whole step's work, and the first event reached the client milliseconds later.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive

from serving.http.errors import HttpError


class ClientGone(HttpError):
    """The client disconnected before its answer was ready (499: nobody reads the answer)."""

    def __init__(self) -> None:
        super().__init__(499, "the client closed the request", code="cancelled", type_="cancelled_error")


class DisconnectWatch:
    """`async with DisconnectWatch(receive):` runs its body in the current task and cancels it if
    the client disconnects first; the block then raises `ClientGone` (the cancellation it caused
    is taken back, so the task goes on). A cancellation from elsewhere passes through unchanged."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._open = False
        self.gone = False

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        self._open = True
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._open and self._task is not None:
            self.gone = True
            self._task.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        if self._watcher is not None:
            self._watcher.cancel()
        if self.gone and self._task is not None:
            self._task.uncancel()
            raise ClientGone() from None
