"""What the gateway adds to a request's latency: its own span minus the engine's (pure timing).

The door notes when it received the request (`GenerateCall.received_at`); the gateway notes when
it called the engine and when the engine's first and last outputs reached it. The span ends when
the door hands the first and the last event to its transport. The difference of the two spans, to
the first and to the last event, is the latency the gateway added: routing, validation,
tokenization, mirroring's bookkeeping and the door's own handling of the events.

Who marks the hand-off depends on the door's transport:
- By default the gateway marks it when the door resumes its stream. The HTTP door resumes once
  its `send` has put the bytes in the socket's transport, so this is the hand-off.
- The gRPC door marks it itself (`handed_off`), just before it gives a message to grpc.aio. A
  grpc.aio streaming handler resumes only when the write's completion has come back from grpc's
  C core through its poller thread and the event loop. The bytes leave before that, and a client
  sees them as soon as it would over HTTP: same-core measurements put the two doors level at the
  client while the completion trip alone was 1.1 ms p50 at 16 streams. That trip delays no byte
  on its way to the client, so it is not counted.

It is a lower bound. The engine's output times are when its outputs reached the gateway, not when
the engine made them: output that waits in the engine's queue while the gateway's event loop is
busy (with other requests, or a door still writing earlier events) counts as the engine's. For
the in-process engine that queue is vLLM's own output handler in the same loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Span:
    """Monotonic timestamps (`time.perf_counter`) of one request through the gateway."""

    received: float
    engine_called: float | None = None
    engine_first: float | None = None
    engine_last: float | None = None
    delivered_first: float | None = None
    delivered_last: float | None = None
    """When the door handed off the final event, if it marks its own (else the total runs to `done`)."""
    door_marks: bool = False
    """The door marks its hand-offs itself; the gateway's marks are then ignored."""

    def called(self) -> None:
        self.engine_called = time.perf_counter()

    def output(self, finished: bool) -> None:
        """An engine output reached the gateway."""
        now = time.perf_counter()
        if self.engine_first is None:
            self.engine_first = now
        if finished:
            self.engine_last = now

    def delivered(self) -> None:
        """The door resumed the gateway's stream: it has taken an event and written it."""
        if not self.door_marks and self.delivered_first is None:
            self.delivered_first = time.perf_counter()

    def handed_off(self, last: bool = False) -> None:
        """The door hands an event (`last`: the final one) to its transport now (a door that
        knows better than the resume)."""
        self.door_marks = True
        now = time.perf_counter()
        if self.delivered_first is None:
            self.delivered_first = now
        self.delivered_last = now if last else None

    def added(self, done: float) -> tuple[float, float] | None:
        """(added to the first event, added to the last) with the door done at `done` (the last
        event's hand-off when the door marks its own); None when the engine never finished. Both
        are >= 0 by construction (received <= called, and an event is handed off after the engine
        output it carries)."""
        if self.engine_called is None or self.engine_first is None or self.engine_last is None:
            return None
        first_at = self.delivered_first if self.delivered_first is not None else done
        last_at = self.delivered_last if self.delivered_last is not None else done
        first = (first_at - self.received) - (self.engine_first - self.engine_called)
        total = (last_at - self.received) - (self.engine_last - self.engine_called)
        return first, total
