"""The evidence the promotion gates read, gathered on the hot path as plain counts.

`GateBook` is a `Sink` (fed next to the Prometheus sink): per variant it counts requests and
failures, bins request latency into the Prometheus latency buckets, and pairs knowledge-probe
outcomes with the primary's on the same fact. Mirror comparisons are read from the gateway's
`DriftBook`. `GateBook.evidence` turns both into the inputs of `serving.gate.verdict.evaluate`.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from serving.drift_book import DriftStats
from serving.gate.verdict import DriftEvidence, LatencyEvidence, ProbeEvidence
from serving.stats import MirrorStats, OverheadStats, ProbeStats, RequestStats

OK_CODES = frozenset({"OK", "CANCELLED", "INVALID_ARGUMENT", "NOT_FOUND"})
"""Outcomes that are not the variant's failure (the client's doing)."""


@dataclass
class VariantTally:
    requests: int = 0
    errors: int = 0
    latency_counts: list[int] = field(default_factory=list)
    both: int = 0
    lost: int = 0
    gained: int = 0
    neither: int = 0


class GateBook:
    """Counts per variant (one event loop: no locking). `edges` are the latency bucket bounds (s)."""

    def __init__(self, edges: tuple[float, ...]) -> None:
        self.edges = tuple(edges)
        self._tally: dict[str, VariantTally] = {}

    def tally(self, variant: str) -> VariantTally:
        if variant not in self._tally:
            self._tally[variant] = VariantTally(latency_counts=[0] * (len(self.edges) + 1))
        return self._tally[variant]

    # ------------------------------------------------------------------ Sink
    def request(self, stats: RequestStats) -> None:
        t = self.tally(stats.variant)
        t.requests += 1
        if stats.code not in OK_CODES:
            t.errors += 1
        elif stats.code == "OK":
            t.latency_counts[bisect_left(self.edges, stats.latency_s)] += 1

    def in_flight(self, variant: str, delta: int) -> None:
        return None

    def overhead(self, stats: OverheadStats) -> None:
        return None

    def mirror(self, stats: MirrorStats) -> None:
        return None  # comparisons are in the gateway's DriftBook

    def probe(self, stats: ProbeStats) -> None:
        if stats.primary_correct is None:
            return
        t = self.tally(stats.variant)
        if stats.primary_correct:
            t.both += stats.correct
            t.lost += not stats.correct
        else:
            t.gained += stats.correct
            t.neither += not stats.correct

    def ready(self, variant: str, ready: bool) -> None:
        return None

    def traffic(self, source: str, outcome: str) -> None:
        return None

    def engine_restart(self, variant: str, outcome: str) -> None:
        return None

    def unfinished(self, variant: str, count: int) -> None:
        return None

    def reset(self) -> None:
        self._tally.clear()

    # ------------------------------------------------------------------ evidence
    def evidence(
        self, variant: str, primary: str, drift: DriftStats
    ) -> tuple[DriftEvidence, ProbeEvidence, LatencyEvidence]:
        mine, theirs = self.tally(variant), self.tally(primary)
        drift_ev = DriftEvidence(
            compared=drift.compared,
            exact_matches=drift.exact_matches,
            sum_token_agreement=drift.sum_token_agreement,
            kl_scored=drift.kl_scored,
            sum_kl_clipped=drift.sum_kl_clipped,
            errors=drift.error + drift.timeout,
            primary_errors=theirs.errors,
            primary_requests=theirs.requests,
        )
        probes = ProbeEvidence(both=mine.both, lost=mine.lost, gained=mine.gained, neither=mine.neither)
        latency = LatencyEvidence(
            self.edges,
            tuple(float(c) for c in mine.latency_counts),
            tuple(float(c) for c in theirs.latency_counts),
        )
        return drift_ev, probes, latency
