"""Turns the gateway's stats records into `driftgate_*` Prometheus series.

Labels are bounded: `variant` (from the config), `role` (3 values), `code` (gRPC status names),
`outcome` (4), `match` (2), `door` (3), `phase` (2), `relation` (from the probe file), `direction` (2),
`generation` (3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from serving.config import TlsConfig, VariantConfig
from serving.drift_book import OUTCOMES
from serving.gate.verdict import VariantVerdict, Verdict
from serving.stats import LATENCY_BUCKETS, MirrorStats, OverheadStats, ProbeStats, RequestStats

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
UNIT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
POSITION_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
"""Gateway-added latency bounds (s): 1 ms and 5 ms are bounds, so the p50/p99 targets read exactly."""
DOORS = ("grpc", "http", "internal")
PHASES = ("first", "total")
KL_BUCKETS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
GENERATIONS = ("0", "1", "2")


def _histogram(
    name: str, doc: str, labels: Sequence[str], buckets: Sequence[float], registry: CollectorRegistry
) -> Histogram:
    """A histogram of ``registry`` with its own bucket bounds."""
    return Histogram(name, doc, labels, buckets=buckets, registry=registry)


VERDICT_VALUE = {Verdict.PASS: 1.0, Verdict.UNDECIDED: 0.0, Verdict.FAIL: -1.0}


class PrometheusSink:
    """The `Sink` for production: every series lives in `registry` (one per gateway/test)."""

    def __init__(self, registry: CollectorRegistry, variants: Iterable[VariantConfig] = ()) -> None:
        self.registry = registry
        self._request_series(registry)
        self._drift_series(registry)
        self._probe_series(registry)
        self._gate_series(registry)
        self._readiness_series(registry)
        self._gc_series(registry)
        for v in variants:
            self._init_variant(v)

    def _request_series(self, r: CollectorRegistry) -> None:
        """Series of every generation, by variant and role."""
        vr = ("variant", "role")
        self.requests = Counter(
            "driftgate_requests", "Generations finished, by outcome code.", [*vr, "code"], registry=r
        )
        self.latency = _histogram(
            "driftgate_request_latency_seconds", "Generation latency.", vr, LATENCY_BUCKETS, r
        )
        self.ttft = _histogram(
            "driftgate_time_to_first_token_seconds", "Time to first token.", vr, TTFT_BUCKETS, r
        )
        self.itl = _histogram(
            "driftgate_inter_token_latency_seconds", "Time between tokens.", vr, ITL_BUCKETS, r
        )
        self.prompt_tokens = Counter("driftgate_prompt_tokens", "Prompt tokens processed.", vr, registry=r)
        self.generated_tokens = Counter("driftgate_generated_tokens", "Tokens generated.", vr, registry=r)
        self.added = _histogram(
            "driftgate_gateway_added_seconds",
            "Latency the gateway added to an answered request: its span minus the engine's, to the "
            "first streamed event (phase=first) and to the last (phase=total). A lower bound: engine "
            "output that waits for a busy gateway counts as the engine's.",
            ("variant", "door", "phase"),
            OVERHEAD_BUCKETS,
            r,
        )
        self.in_flight_gauge = Gauge(
            "driftgate_requests_in_flight", "Generations running now.", ["variant"], registry=r
        )

    def _drift_series(self, r: CollectorRegistry) -> None:
        """Series of the mirrored copies and of how far the shadows' answers drift."""
        self.mirrors = Counter(
            "driftgate_mirror", "Mirrored copies by outcome.", ["variant", "outcome"], registry=r
        )
        self.answers = Counter(
            "driftgate_drift_answers",
            "Compared shadow answers by exact match.",
            ["variant", "match"],
            registry=r,
        )
        self.token_agreement = _histogram(
            "driftgate_drift_token_agreement",
            "Fraction of positions where the shadow's tokens equal the primary's (0-1).",
            ["variant"],
            UNIT_BUCKETS,
            r,
        )
        self.first_divergence = _histogram(
            "driftgate_drift_first_divergence_tokens",
            "Position of the first token where the shadow's answer differs.",
            ["variant"],
            POSITION_BUCKETS,
            r,
        )
        self.tf_agreement = _histogram(
            "driftgate_drift_teacher_forced_agreement",
            "Fraction of the primary's tokens that are the shadow's top-1, teacher-forced (0-1).",
            ["variant"],
            UNIT_BUCKETS,
            r,
        )
        self.kl = _histogram(
            "driftgate_drift_kl",
            "Mean per-token KL(primary || shadow) over the top-k support (nats, lower bound).",
            ["variant"],
            KL_BUCKETS,
            r,
        )

    def _probe_series(self, r: CollectorRegistry) -> None:
        """Series of the knowledge probes asked through the gateway."""
        by_relation = ("variant", "relation")
        self.probes = Counter("driftgate_probe", "Knowledge-probe facts asked.", by_relation, registry=r)
        self.probes_correct = Counter(
            "driftgate_probe_correct", "Knowledge-probe facts answered right.", by_relation, registry=r
        )
        self.probe_flips = Counter(
            "driftgate_probe_flips",
            "Probe facts whose correctness differs from the primary's (lost: primary right, variant wrong).",
            ["variant", "direction"],
            registry=r,
        )

    def _readiness_series(self, r: CollectorRegistry) -> None:
        """Whether each variant takes traffic (its engine passed its last health check)."""
        self.ready_gauge = Gauge(
            "driftgate_variant_ready",
            "1 while the variant's engine is healthy and attached.",
            ["variant"],
            registry=r,
        )
        self.restarts = Counter(
            "driftgate_engine_restarts",
            "Restarts of in-process engines that failed, by outcome (restarted, failed).",
            ["variant", "outcome"],
            registry=r,
        )
        self.unfinished_gauge = Gauge(
            "driftgate_engine_unfinished_requests",
            "Requests the variant's engine still holds (num_unfinished), sampled every health round.",
            ["variant"],
            registry=r,
        )
        self.traffic_changes = Counter(
            "driftgate_traffic_changes",
            "Changes of roles, weights and sample rates, by source (admin, reload) and outcome.",
            ["source", "outcome"],
            registry=r,
        )
        self.transitions = Counter(
            "driftgate_variant_transitions",
            "Variant readiness changes, by new state.",
            ["variant", "to"],
            registry=r,
        )

    def _gc_series(self, r: CollectorRegistry) -> None:
        """The process's garbage collector (`serving.gcwatch`): every collection stops the event loop."""
        self.gc_pauses = _histogram(
            "driftgate_gc_pause_seconds",
            "Garbage-collector pauses of the gateway process, by generation (2 = full).",
            ["generation"],
            GC_BUCKETS,
            r,
        )
        # Resolved once: `labels()` takes the parent's lock and copies a dict while holding it, and a
        # collection started by that copy would call `gc_pause` in the same thread: a deadlock.
        self._gc_children = [self.gc_pauses.labels(g) for g in GENERATIONS]
        self.gc_frozen_gauge = Gauge(
            "driftgate_gc_frozen_objects",
            "Objects moved to the permanent generation at start (server.gc_freeze), which collections skip.",
            registry=r,
        )

    def gc_pause(self, generation: int, seconds: float) -> None:
        """Called from inside the garbage collector: no `labels()` here (see `_gc_series`)."""
        self._gc_children[generation].observe(seconds)

    def gc_frozen(self, count: int) -> None:
        self.gc_frozen_gauge.set(count)

    def engine_restart(self, variant: str, outcome: str) -> None:
        self.restarts.labels(variant, outcome).inc()

    def unfinished(self, variant: str, count: int) -> None:
        self.unfinished_gauge.labels(variant).set(count)

    def traffic(self, source: str, outcome: str) -> None:
        self.traffic_changes.labels(source, outcome).inc()

    def ready(self, variant: str, ready: bool) -> None:
        self.ready_gauge.labels(variant).set(1.0 if ready else 0.0)
        self.transitions.labels(variant, "ready" if ready else "not_ready").inc()

    def _gate_series(self, r: CollectorRegistry) -> None:
        """Promotion verdicts (1 PASS, 0 UNDECIDED, -1 FAIL), refreshed by the gateway periodically."""
        self.verdict_gauge = Gauge(
            "driftgate_gate_verdict",
            "Promotion verdict of the variant: 1 PASS, 0 UNDECIDED, -1 FAIL.",
            ["variant"],
            registry=r,
        )
        self.check_gauge = Gauge(
            "driftgate_gate_check",
            "Verdict of one promotion check: 1 PASS, 0 UNDECIDED, -1 FAIL.",
            ["variant", "check"],
            registry=r,
        )
        self.check_figure = Gauge(
            "driftgate_gate_check_figure",
            "The figure one promotion check judges (its unit is the check's).",
            ["variant", "check"],
            registry=r,
        )
        self.check_samples = Gauge(
            "driftgate_gate_check_samples",
            "Samples behind one promotion check.",
            ["variant", "check"],
            registry=r,
        )

    def verdicts(self, verdicts: Iterable[VariantVerdict]) -> None:
        """Sets the gate gauges from the latest verdicts."""
        for vv in verdicts:
            self.verdict_gauge.labels(vv.variant).set(VERDICT_VALUE[vv.verdict])
            for check in vv.checks:
                labels = (vv.variant, check.name)
                self.check_gauge.labels(*labels).set(VERDICT_VALUE[check.verdict])
                self.check_figure.labels(*labels).set(check.figure)
                self.check_samples.labels(*labels).set(check.n)

    def _init_variant(self, v: VariantConfig) -> None:
        """Creates each variant's series at zero so dashboards and rate() see them from the start."""
        role = v.role.value
        for metric in (self.latency, self.ttft, self.itl, self.prompt_tokens, self.generated_tokens):
            metric.labels(v.name, role)
        self.in_flight_gauge.labels(v.name)
        if role != "shadow":
            for door in DOORS:
                for phase in PHASES:
                    self.added.labels(v.name, door, phase)
        self.ready_gauge.labels(v.name)
        self.unfinished_gauge.labels(v.name)
        for to in ("ready", "not_ready"):
            self.transitions.labels(v.name, to)
        if role != "primary":
            self.verdict_gauge.labels(v.name)
        if role == "shadow":
            for outcome in sorted(OUTCOMES):
                self.mirrors.labels(v.name, outcome)
            for match in ("true", "false"):
                self.answers.labels(v.name, match)
            for metric in (self.token_agreement, self.first_divergence, self.tf_agreement, self.kl):
                metric.labels(v.name)

    # ------------------------------------------------------------------ Sink
    def request(self, stats: RequestStats) -> None:
        labels = (stats.variant, stats.role)
        self.requests.labels(*labels, stats.code).inc()
        self.latency.labels(*labels).observe(stats.latency_s)
        if stats.ttft_s is not None:
            self.ttft.labels(*labels).observe(stats.ttft_s)
        itl = self.itl.labels(*labels)
        for gap in stats.inter_token_s:
            itl.observe(gap)
        self.prompt_tokens.labels(*labels).inc(stats.prompt_tokens)
        self.generated_tokens.labels(*labels).inc(stats.completion_tokens)

    def overhead(self, stats: OverheadStats) -> None:
        if stats.first_s is not None:
            self.added.labels(stats.variant, stats.door, "first").observe(stats.first_s)
        self.added.labels(stats.variant, stats.door, "total").observe(stats.total_s)

    def in_flight(self, variant: str, delta: int) -> None:
        self.in_flight_gauge.labels(variant).inc(delta)

    def mirror(self, stats: MirrorStats) -> None:
        self.mirrors.labels(stats.variant, stats.outcome).inc()
        if stats.outcome != "compared":
            return
        v = stats.variant
        self.answers.labels(v, "true" if stats.exact_match else "false").inc()
        if stats.token_agreement is not None:
            self.token_agreement.labels(v).observe(stats.token_agreement)
        if stats.first_divergence is not None:
            self.first_divergence.labels(v).observe(stats.first_divergence)
        if stats.teacher_forced_agreement is not None:
            self.tf_agreement.labels(v).observe(stats.teacher_forced_agreement)
        if stats.kl is not None:
            self.kl.labels(v).observe(stats.kl)

    def probe(self, stats: ProbeStats) -> None:
        self.probes.labels(stats.variant, stats.relation).inc()
        if stats.correct:
            self.probes_correct.labels(stats.variant, stats.relation).inc()
        if stats.flip is not None:
            self.probe_flips.labels(stats.variant, stats.flip).inc()


def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, tls: TlsConfig | None = None
) -> tuple[int, object]:
    """Starts the /metrics endpoint (HTTPS with `tls.metrics` and a certificate; client
    certificates required when a client CA is set); returns the bound port and the server."""
    kw: dict[str, Any] = {}
    if tls is not None and tls.metrics and tls.cert_file:
        kw = {"certfile": tls.cert_file, "keyfile": tls.key_file}
        if tls.client_ca_file:
            kw |= {"client_cafile": tls.client_ca_file, "client_auth_required": True}
    server, _thread = start_http_server(port, addr=host, registry=registry, **kw)
    return int(server.server_port), server
