"""Plain stats records produced on the hot path; `serving.metrics` turns them into series."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
"""Request-latency bucket bounds (s): Prometheus' histogram and the promotion gate's latency check."""


@dataclass(frozen=True)
class RequestStats:
    """One finished (or failed) generation on one variant."""

    variant: str
    role: str
    code: str
    latency_s: float
    ttft_s: float | None = None
    inter_token_s: tuple[float, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class OverheadStats:
    """What the gateway added to one answered request: its own span (door received it → door took
    the first / last event) minus the engine's (engine called → first / last output reached the
    gateway); `first_s` is None for a unary answer (no first event reaches the client)."""

    variant: str
    door: str
    first_s: float | None
    total_s: float


@dataclass(frozen=True)
class MirrorStats:
    """The outcome of one mirrored copy: compared, dropped, error or timeout."""

    variant: str
    outcome: str
    exact_match: bool | None = None
    token_agreement: float | None = None
    first_divergence: int | None = None
    teacher_forced_agreement: float | None = None
    kl: float | None = None


@dataclass(frozen=True)
class ProbeStats:
    """One knowledge-probe answer scored on one variant (flip relative to the primary, if known)."""

    variant: str
    relation: str
    correct: bool
    flip: str | None = None  # "lost" | "gained" | None
    primary_correct: bool | None = None  # the primary's outcome on the same fact (None: unknown, or primary)


class Sink(Protocol):
    """Where the gateway reports stats (Prometheus in production, a list in unit tests)."""

    def request(self, stats: RequestStats) -> None: ...
    def in_flight(self, variant: str, delta: int) -> None: ...
    def overhead(self, stats: OverheadStats) -> None: ...
    def mirror(self, stats: MirrorStats) -> None: ...
    def probe(self, stats: ProbeStats) -> None: ...
    def ready(self, variant: str, ready: bool) -> None: ...
    def traffic(self, source: str, outcome: str) -> None: ...
    def engine_restart(self, variant: str, outcome: str) -> None: ...
    def unfinished(self, variant: str, count: int) -> None:
        """The requests the variant's engine still holds (`Engine.num_unfinished`), sampled."""
        ...


class FanoutSink:
    """Passes every record to each of its sinks."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def request(self, stats: RequestStats) -> None:
        for sink in self.sinks:
            sink.request(stats)

    def in_flight(self, variant: str, delta: int) -> None:
        for sink in self.sinks:
            sink.in_flight(variant, delta)

    def overhead(self, stats: OverheadStats) -> None:
        for sink in self.sinks:
            sink.overhead(stats)

    def mirror(self, stats: MirrorStats) -> None:
        for sink in self.sinks:
            sink.mirror(stats)

    def probe(self, stats: ProbeStats) -> None:
        for sink in self.sinks:
            sink.probe(stats)

    def ready(self, variant: str, ready: bool) -> None:
        for sink in self.sinks:
            sink.ready(variant, ready)

    def traffic(self, source: str, outcome: str) -> None:
        for sink in self.sinks:
            sink.traffic(source, outcome)

    def engine_restart(self, variant: str, outcome: str) -> None:
        for sink in self.sinks:
            sink.engine_restart(variant, outcome)

    def unfinished(self, variant: str, count: int) -> None:
        for sink in self.sinks:
            sink.unfinished(variant, count)


@dataclass
class ListSink:
    """Keeps every record; for tests and offline runs."""

    requests: list[RequestStats] = field(default_factory=list)
    mirrors: list[MirrorStats] = field(default_factory=list)
    overheads: list[OverheadStats] = field(default_factory=list)
    probes: list[ProbeStats] = field(default_factory=list)
    in_flight_now: dict[str, int] = field(default_factory=dict)
    readiness: list[tuple[str, bool]] = field(default_factory=list)
    traffic_changes: list[tuple[str, str]] = field(default_factory=list)
    restarts: list[tuple[str, str]] = field(default_factory=list)
    unfinished_now: dict[str, int] = field(default_factory=dict)

    def request(self, stats: RequestStats) -> None:
        self.requests.append(stats)

    def in_flight(self, variant: str, delta: int) -> None:
        self.in_flight_now[variant] = self.in_flight_now.get(variant, 0) + delta

    def overhead(self, stats: OverheadStats) -> None:
        self.overheads.append(stats)

    def mirror(self, stats: MirrorStats) -> None:
        self.mirrors.append(stats)

    def probe(self, stats: ProbeStats) -> None:
        self.probes.append(stats)

    def ready(self, variant: str, ready: bool) -> None:
        self.readiness.append((variant, ready))

    def traffic(self, source: str, outcome: str) -> None:
        self.traffic_changes.append((source, outcome))

    def engine_restart(self, variant: str, outcome: str) -> None:
        self.restarts.append((variant, outcome))

    def unfinished(self, variant: str, count: int) -> None:
        self.unfinished_now[variant] = count
