"""How calls are reported to locust: entry names with the answering variant, failures by status."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from locust.env import Environment

UNKNOWN = "?"
"""The variant of a call that failed before an answer named it (and no variant was pinned)."""
OTHER = "other"
"""Every variant beyond the first MAX_VARIANTS seen, or with an odd name: the set of entries stays bounded."""
MAX_VARIANTS = 16
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_seen: set[str] = set()


def variant_label(variant: str | None) -> str:
    """The variant as it appears in entry names: bounded to MAX_VARIANTS names (per process)."""
    if not variant:
        return UNKNOWN
    if variant in _seen:
        return variant
    if not _NAME.fullmatch(variant) or len(_seen) >= MAX_VARIANTS:
        return OTHER
    _seen.add(variant)
    return variant


def entry(base: str, variant: str | None, suffix: str = "") -> str:
    """`Generate[dense]`, `GenerateStream[dense]/ttft`, ..."""
    return f"{base}[{variant_label(variant)}]{suffix}"


class CallError(Exception):
    """A failed call, reduced to its status code and details (locust groups failures by message)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


@dataclass
class StreamClock:
    """When a stream started, sent its first text, and ended; its token count."""

    start: float
    first: float | None = None
    end: float | None = None
    tokens: int = 0

    def chunk(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()


class Reporter:
    """Reports calls to locust as `request_type`."""

    request_type = "grpc"

    def __init__(self, environment: Environment, pinned: str) -> None:
        self._events = environment.events
        self._pinned = pinned

    def fire(
        self,
        name: str,
        elapsed_s: float,
        length: int = 0,
        exception: Exception | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self._events.request.fire(
            request_type=self.request_type,
            name=name,
            response_time=elapsed_s * 1000.0,
            response_length=length,
            exception=exception,
            context=context or {},
        )

    def done(self, base: str, start: float, variant: str | None, length: int, exc: Exception | None) -> None:
        """A whole call: `base[variant]` on success, `base[pinned or ?]` on failure."""
        label = variant if exc is None else self._pinned or None
        context = {"variant": variant} if exc is None else {}
        self.fire(entry(base, label), time.perf_counter() - start, length, exc, context)

    def stream_done(
        self, base: str, clock: StreamClock, variant: str | None, length: int, exc: Exception | None
    ) -> None:
        """A stream: `base[variant]` (opened → last chunk); on success also `base[variant]/ttft`
        (opened → first text) and `base[variant]/itl` (mean time per token after the first)."""
        end = clock.end or time.perf_counter()
        self.done(base, clock.start, variant, length, exc)
        if exc is not None or clock.first is None:
            return
        self.fire(entry(base, variant, "/ttft"), clock.first - clock.start)
        if clock.tokens >= 2:
            self.fire(entry(base, variant, "/itl"), (end - clock.first) / (clock.tokens - 1))
