"""What the gateway adds to a request's latency: its own span minus the engine's (pure timing).

The door notes when it received the request (`GenerateCall.received_at`); the gateway notes when
it called the engine, when the engine's first and last outputs reached it, and when the door had
taken the first and the last event (the gateway's stream resumes only then). The difference of
the two spans, to the first and to the last event, is the latency the gateway added: routing,
validation, tokenization, mirroring's bookkeeping and the door's own handling of the events.

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
        """The door took an event (the first one counts)."""
        if self.delivered_first is None:
            self.delivered_first = time.perf_counter()

    def added(self, done: float) -> tuple[float, float] | None:
        """(added to the first event, added to the last) with the door done at `done`; None when
        the engine never finished. Both are >= 0 by construction (received <= called, and an
        event is delivered after the engine output it carries)."""
        if self.engine_called is None or self.engine_first is None or self.engine_last is None:
            return None
        first_at = self.delivered_first if self.delivered_first is not None else done
        first = (first_at - self.received) - (self.engine_first - self.engine_called)
        total = (done - self.received) - (self.engine_last - self.engine_called)
        return first, total
