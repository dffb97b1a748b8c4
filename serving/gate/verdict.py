"""Promotion verdict (pure, no I/O): `evaluate` turns a variant's evidence (sums and counts the
gateway keeps cheaply) and a `GateConfig` into PASS, FAIL or UNDECIDED with one `Check` per gate.
Intervals are anytime-valid (`serving.gate.sequential`): re-evaluating every minute is fine. Only
a one-shot probe run (`ProbeEvidence.one_shot`) uses a fixed-n interval, valid when judged once.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.gate import sequential as sq
from serving.gate.sequential import Interval, Verdict

_RATES = ("min_exact_match", "min_token_agreement", "max_error_rate", "probe_margin", "noise_margin")
_POSITIVE = ("kl_cap", "max_latency_ratio_p50", "max_latency_ratio_p99")
_NONNEG = ("min_samples", "min_probe_facts", "noise_margin_kl")
_KINDS: dict[str, type | tuple[type, ...]] = {"bool": bool, "int": int, "float": (int, float), "str": str}


@dataclass
class GateConfig:
    """Promotion gates, as defaults or per variant (`with_overrides`); None turns a check off.
    Drift, error and latency figures come from mirrored requests; the probe figure is
    P@1(variant) - P@1(primary) on the same facts. Exact match and token agreement are off by
    default: on the demo even int8-w8a8 (KL 0.03 nats) matched only 17% of 24-token answers
    (agreement 0.47; one early divergence shifts every later token); KL and probes separate good
    from broken. Turn them on for short answers (e.g. 0.5, 0.8). Latency gates are off by default:
    shadows sharing cores (as in the demo) are slow by construction; turn them on (e.g. 1.5 for
    p50, 2 for p99) when every variant is served like the primary, one per pod."""

    alpha: float = field(default=0.05, metadata={"doc": "false-PASS chance per variant, however many looks"})
    min_samples: int = field(default=10, metadata={"doc": "samples each drift/latency check needs to decide"})
    min_probe_facts: int = field(default=30, metadata={"doc": "paired facts the probe check needs to decide"})
    min_exact_match: float | None = field(
        default=None, metadata={"doc": "lowest identical-answer share (off)"}
    )
    min_token_agreement: float | None = field(
        default=None, metadata={"doc": "lowest mean token agreement (off)"}
    )
    max_kl: float | None = field(default=0.1, metadata={"doc": "highest mean clipped per-token KL, in nats"})
    kl_cap: float = field(default=1.0, metadata={"doc": "per-request KL is clipped to this (nats) first"})
    probe_margin: float | None = field(default=0.05, metadata={"doc": "non-inferiority margin on probe P@1"})
    max_error_rate: float | None = field(default=0.05, metadata={"doc": "highest failed/timed-out share"})
    error_rate_vs_primary: bool = field(default=False, metadata={"doc": "gate errors as excess over primary"})
    max_latency_ratio_p50: float | None = field(
        default=None, metadata={"doc": "highest variant/primary median latency (off: see the class doc)"}
    )
    max_latency_ratio_p99: float | None = field(
        default=None, metadata={"doc": "highest variant/primary p99 latency; needs ~1,000 samples to PASS"}
    )
    relative_to: str = field(default="", metadata={"doc": "twin shadow: drift gates relative to its figures"})
    noise_margin: float = field(default=0.1, metadata={"doc": "relative mode: allowed shortfall vs the twin"})
    noise_margin_kl: float = field(default=0.05, metadata={"doc": "relative mode: allowed KL excess (nats)"})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, str(f.type), getattr(self, f.name))
        rules = {
            "alpha in (0, 1)": 0 < self.alpha < 1,
            f"{', '.join(_NONNEG)} >= 0": all(v >= 0 for v in self._given(_NONNEG)),
            f"{', '.join(_RATES)} in [0, 1]": all(0 <= v <= 1 for v in self._given(_RATES)),
            f"{', '.join(_POSITIVE)} > 0": all(v > 0 for v in self._given(_POSITIVE)),
            "max_kl in [0, kl_cap)": self.max_kl is None or 0 <= self.max_kl < self.kl_cap,
        }
        broken = [rule for rule, ok in rules.items() if not ok]
        if broken:
            raise ValueError(f"invalid gate settings: {'; '.join(broken)}")

    def _given(self, names: Sequence[str]) -> list[float]:
        return [v for v in (getattr(self, n) for n in names) if v is not None]

    def with_overrides(self, overrides: Mapping[str, Any] | None = None, **kw: Any) -> GateConfig:
        """A copy with per-variant overrides (a field -> value mapping and/or keywords) applied."""
        merged = {**(overrides or {}), **kw}
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(merged) - set(known))
        if unknown:
            raise ValueError(f"unknown gate setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return dataclasses.replace(self, **merged)


def _check_type(name: str, annotation: str, value: Any) -> None:
    kind = annotation.split("|")[0].strip()
    ok = isinstance(value, _KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))
    ok = ok and (kind != "float" or math.isfinite(value))
    if not (ok or (value is None and "None" in annotation)):
        raise ValueError(f"{name} must be {annotation}, got {value!r}")


def clip_kl(kl: float, cap: float) -> float:
    """One request's KL as it enters `DriftEvidence.sum_kl_clipped`: clipped to [0, cap] (NaN -> cap).
    KL is unbounded, confidence sequences need bounded observations: the gate is on E[min(KL, cap)];
    with cap above max_kl a request with KL >= cap still counts as worse than the gate allows."""
    return cap if math.isnan(kl) else min(max(kl, 0.0), cap)


@dataclass(frozen=True)
class DriftEvidence:
    """Running sums over one variant's (or a dense twin's) mirrored requests."""

    compared: int = 0  # mirrored requests answered and compared with the primary
    exact_matches: int = 0  # compared answers identical to the primary's
    sum_token_agreement: float = 0.0  # sum of per-request token agreement (each in [0, 1])
    kl_scored: int = 0  # compared requests with a KL score
    sum_kl_clipped: float = 0.0  # sum of clip_kl(kl, cfg.kl_cap) over the scored requests
    errors: int = 0  # mirrored requests that failed or timed out (drops excluded)
    primary_errors: int = 0  # primary's failed requests (for error_rate_vs_primary)
    primary_requests: int = 0  # primary's requests (for error_rate_vs_primary)

    def __post_init__(self) -> None:
        ok = min(self.kl_scored, self.errors, self.primary_errors, self.sum_kl_clipped) >= 0
        ok = ok and 0 <= self.exact_matches <= self.compared and self.primary_errors <= self.primary_requests
        if not (ok and 0 <= self.sum_token_agreement <= self.compared * (1 + 1e-9)):
            raise ValueError(f"inconsistent evidence: {self}")

    @property
    def attempts(self) -> int:
        """Mirrored requests that got an outcome other than "dropped"."""
        return self.compared + self.errors


@dataclass(frozen=True)
class ProbeEvidence:
    """Paired probe outcomes: the same facts asked to the primary and to the variant."""

    both: int = 0  # facts both answer right
    lost: int = 0  # facts the primary answers right and the variant wrong
    gained: int = 0  # facts the variant answers right and the primary wrong
    neither: int = 0  # facts both answer wrong
    one_shot: bool = False  # a completed fixed-size run judged once: fixed-n interval, not a CS

    def __post_init__(self) -> None:
        if min(self.both, self.lost, self.gained, self.neither) < 0:
            raise ValueError(f"negative counts in {self}")

    @property
    def n(self) -> int:
        """Paired facts."""
        return self.both + self.lost + self.gained + self.neither

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[bool, bool]], one_shot: bool = False) -> ProbeEvidence:
        """From (primary_correct, variant_correct) per fact."""
        c = Counter((bool(p), bool(v)) for p, v in pairs)
        return cls(c[True, True], c[True, False], c[False, True], c[False, False], one_shot)


@dataclass(frozen=True)
class LatencyEvidence:
    """Latency histograms (seconds) of the variant and the primary over the same period.

    Bucket i holds samples in (edges[i-1], edges[i]]; counts have len(edges) + 1 entries, the last
    above the last edge. Quantile bounds are edges, so bucket spacing (x2-2.5 for the gateway's
    buckets) limits a ratio's precision: raw samples (`from_samples`) resolve finer.
    """

    edges: tuple[float, ...]
    variant_counts: tuple[float, ...]
    primary_counts: tuple[float, ...]

    def __post_init__(self) -> None:
        sq.check_histogram(self.edges, self.variant_counts)
        sq.check_histogram(self.edges, self.primary_counts)

    @classmethod
    def from_samples(cls, variant: Sequence[float], primary: Sequence[float]) -> LatencyEvidence:
        """Raw latencies: every distinct value becomes an edge, so bounds are exact order statistics."""
        edges = tuple(sorted(set(variant) | set(primary)))
        cv, cp = Counter(variant), Counter(primary)
        return cls(edges, (*(cv[e] for e in edges), 0), (*(cp[e] for e in edges), 0))

    @classmethod
    def from_cumulative(
        cls, edges: Sequence[float], var: Sequence[float], prim: Sequence[float]
    ) -> LatencyEvidence:
        """From Prometheus-style cumulative counts (le = each edge, then +Inf = the total)."""
        var_c, prim_c = (tuple(b - a for a, b in zip([0.0, *c], c, strict=False)) for c in (var, prim))
        return cls(tuple(edges), var_c, prim_c)


@dataclass(frozen=True)
class Check:
    """One gate's outcome: figure with its interval against a threshold, on n samples."""

    name: str
    figure: float
    interval: Interval
    threshold: float
    direction: str  # "min": figure >= threshold passes; "max": figure <= threshold passes
    n: int
    verdict: Verdict
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; non-finite numbers (unbounded or unknown) become null."""
        out = dataclasses.asdict(self) | {"verdict": str(self.verdict)}
        out.update(figure=_finite(self.figure), threshold=_finite(self.threshold))
        out["interval"] = {"lo": _finite(self.interval.lo), "hi": _finite(self.interval.hi)}
        return out


@dataclass(frozen=True)
class VariantVerdict:
    """The verdict on one variant and the checks behind it."""

    variant: str
    verdict: Verdict
    checks: tuple[Check, ...]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        checks = [c.to_dict() for c in self.checks]
        return {"variant": self.variant, "verdict": str(self.verdict), "note": self.note, "checks": checks}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


_GATES = (  # check name, direction, config field; in report order
    ("exact_match", "min", "min_exact_match"),
    ("token_agreement", "min", "min_token_agreement"),
    ("kl", "max", "max_kl"),
    ("error_rate", "max", "max_error_rate"),
    ("probe_p1_delta", "min", "probe_margin"),
    ("latency_p50_ratio", "max", "max_latency_ratio_p50"),
    ("latency_p99_ratio", "max", "max_latency_ratio_p99"),
)
Levels = tuple[float, float]  # (PASS-side alpha, FAIL-side alpha) of one check
Sums = tuple[int, float, float]  # (n, sum, upper end of the range [0, top])
Ref = tuple[int, float, str]  # (n, sum, label) of a reference sequence (twin or primary)
Drift = DriftEvidence | None
_ANY = Interval(-math.inf, math.inf)  # the interval of a check without evidence


def _levels(direction: str, a: Levels, split: int = 1) -> Levels:
    """(lower-end level, upper-end level); `split` sequences combined share them (union bound)."""
    return (a[0] / split, a[1] / split) if direction == "min" else (a[1] / split, a[0] / split)


def _check(name: str, d: str, thr: float, fig: float, cs: Interval, n: int, min_n: int, note: str) -> Check:
    return Check(name, fig, cs, thr, d, n, sq.decide(cs, thr, d, n, min_n), note)


def _bounded_check(name: str, d: str, thr: float, a: Levels, min_n: int, own: Sums, ref: Ref | None) -> Check:
    """Mean of values in [0, top] from (n, sum, top); with ref = (n, sum, label), the difference
    own - ref, each sequence at half the levels (both the same kind of observation)."""
    n, total, top = own
    figure = total / n if n else math.nan
    if ref is None:
        cs = sq.bounded_mean_cs(n, total, *_levels(d, a), 0.0, top)
        return _check(name, d, thr, figure, cs, n, min_n, "anytime-valid betting CS")
    rn, rtotal, label = ref
    lo_a, hi_a = _levels(d, a, 2)
    cs = sq.difference_interval(
        sq.bounded_mean_cs(n, total, lo_a, hi_a, 0.0, top),
        sq.bounded_mean_cs(rn, rtotal, hi_a, lo_a, 0.0, top),
    )
    ref_figure = rtotal / rn if rn else math.nan
    note = f"variant - {label} ({ref_figure:.4g} on {rn}); anytime-valid betting CSs"
    return _check(name, d, thr, figure - ref_figure, cs, min(n, rn), min_n, note)


def _drift_stat(ev: DriftEvidence, name: str, cap: float) -> Sums:
    """(n, sum, upper end of the range) of a drift figure."""
    if name == "exact_match":
        return ev.compared, ev.exact_matches, 1.0
    if name == "token_agreement":
        return ev.compared, ev.sum_token_agreement, 1.0
    if name == "error_rate":
        return ev.attempts, ev.errors, 1.0
    if ev.sum_kl_clipped > ev.kl_scored * cap * (1 + 1e-9):
        raise ValueError(f"sum_kl_clipped exceeds kl_scored * kl_cap: add clip_kl(kl, {cap}) per request")
    return ev.kl_scored, ev.sum_kl_clipped, cap


def _drift_check(name: str, d: str, cfg: GateConfig, a: Levels, drift: Drift, twin: Drift) -> Check:
    threshold = float(getattr(cfg, dict((g[0], g[2]) for g in _GATES)[name]))
    if drift is None:
        return _check(name, d, threshold, math.nan, _ANY, 0, 1, "no drift evidence")
    own = _drift_stat(drift, name, cfg.kl_cap)
    if name == "error_rate" and cfg.error_rate_vs_primary:
        if not drift.primary_requests:
            return _check(name, d, threshold, math.nan, _ANY, 0, 1, "no primary error counts")
        ref = (drift.primary_requests, float(drift.primary_errors), "primary")
        return _bounded_check(name, d, threshold, a, cfg.min_samples, own, ref)
    if name == "error_rate" or not cfg.relative_to:
        return _bounded_check(name, d, threshold, a, cfg.min_samples, own, None)
    threshold = -cfg.noise_margin if d == "min" else cfg.noise_margin_kl
    if twin is None:
        return _check(name, d, threshold, math.nan, _ANY, 0, 1, f"no evidence for twin {cfg.relative_to!r}")
    tn, ttotal, _ = _drift_stat(twin, name, cfg.kl_cap)
    ref = (tn, ttotal, f"twin {cfg.relative_to!r}")
    return _bounded_check(name, d, threshold, a, cfg.min_samples, own, ref)


def _probe_check(cfg: GateConfig, a: Levels, probes: ProbeEvidence | None) -> Check:
    threshold = -float(cfg.probe_margin or 0.0)
    if probes is None:
        return _check("probe_p1_delta", "min", threshold, math.nan, _ANY, 0, 1, "no probe evidence")
    p, n = probes, probes.n
    how = "fixed-n score interval, one look" if p.one_shot else "anytime-valid betting CS"
    if p.one_shot:
        cs = sq.paired_difference_score_interval(p.lost, p.gained, n, *a)
    else:
        cs = sq.paired_difference_cs(p.lost, p.gained, p.both + p.neither, *a)
    p1_v, p1_p = (p.both + p.gained) / max(n, 1), (p.both + p.lost) / max(n, 1)
    recovery = f"{p1_v / p1_p:.3f}" if p1_p else "-"
    mcnemar = sq.sign_test_pvalue(p.lost, p.gained)
    note = f"{how}; P@1 {p1_v:.3f} vs {p1_p:.3f} (recovery {recovery}), -{p.lost}/+{p.gained}, McNemar p={mcnemar:.3g}"
    return _check("probe_p1_delta", "min", threshold, p1_v - p1_p, cs, n, cfg.min_probe_facts, note)


def _latency_check(name: str, thr: float, cfg: GateConfig, a: Levels, lat: LatencyEvidence | None) -> Check:
    if lat is None:
        return _check(name, "max", thr, math.nan, _ANY, 0, 1, "no latency evidence")
    q = 0.5 if name == "latency_p50_ratio" else 0.99
    lo_a, hi_a = _levels("max", a, 2)
    num = sq.quantile_cs(lat.edges, lat.variant_counts, q, lo_a, hi_a)
    den = sq.quantile_cs(lat.edges, lat.primary_counts, q, hi_a, lo_a)
    est_p = sq.quantile_estimate(lat.edges, lat.primary_counts, q)
    figure = sq.quantile_estimate(lat.edges, lat.variant_counts, q) / est_p if est_p > 0 else math.nan
    n = int(min(sum(lat.variant_counts), sum(lat.primary_counts)))
    note = f"q{q:g} in s: variant [{num.lo:.4g}, {num.hi:.4g}], primary [{den.lo:.4g}, {den.hi:.4g}]; anytime-valid"
    return _check(name, "max", thr, figure, sq.ratio_interval(num, den), n, cfg.min_samples, note)


def evaluate(
    variant: str,
    cfg: GateConfig,
    *,
    drift: DriftEvidence | None = None,
    probes: ProbeEvidence | None = None,
    latency: LatencyEvidence | None = None,
    twin: DriftEvidence | None = None,
) -> VariantVerdict:
    """One verdict for one variant: FAIL if any check FAILs, PASS if every enabled check PASSes,
    else UNDECIDED. A check without evidence is UNDECIDED; a threshold of None removes it.

    False PASS <= alpha, with no multiplicity correction: this is an intersection-union test
    (Berger 1982). If some gate is truly violated, PASS requires that gate's own check to PASS,
    i.e. its confidence sequence to miss the truth on the PASS side at some look: probability
    <= alpha, whatever the other checks do and however often the verdict is re-computed.
    False FAIL <= alpha too: FAIL needs only one of the k enabled checks, so each check's FAIL
    side runs at alpha / k (Bonferroni; valid for dependent checks). Checks built from two
    sequences (twin or primary differences, latency ratios) give each half of the level.
    Observations are assumed to share one conditional mean given the past (a stable traffic
    mix); under drift the sequences cover the running average of the means.
    """
    enabled = [g for g in _GATES if getattr(cfg, g[2]) is not None]
    if not enabled:
        return VariantVerdict(variant, Verdict.UNDECIDED, (), "no gate enabled")
    a = (cfg.alpha, cfg.alpha / len(enabled))
    checks = []
    for name, d, key in enabled:
        if name == "probe_p1_delta":
            checks.append(_probe_check(cfg, a, probes))
        elif name.startswith("latency"):
            checks.append(_latency_check(name, float(getattr(cfg, key)), cfg, a, latency))
        else:
            checks.append(_drift_check(name, d, cfg, a, drift, twin))
    found = {c.verdict for c in checks}
    overall = Verdict.PASS if found == {Verdict.PASS} else Verdict.UNDECIDED
    if Verdict.FAIL in found:
        overall = Verdict.FAIL
    note = f"alpha {cfg.alpha:g} for PASS, {a[1]:.3g} per check for FAIL ({len(enabled)} checks)"
    return VariantVerdict(variant, overall, tuple(checks), note)


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{round(x, 4):.4g}"


def format_table(verdicts: Sequence[VariantVerdict]) -> str:
    """A human table: variant, verdict, then one row per check (figure [lo, hi] vs threshold, n)."""
    rows = [("variant", "verdict", "check", "figure [lo, hi]", "threshold", "n", "check verdict", "note")]
    for v in verdicts:
        if not v.checks:
            rows.append((v.variant, str(v.verdict), "-", "-", "-", "-", "-", v.note))
        for i, c in enumerate(v.checks):
            head = (v.variant, str(v.verdict)) if i == 0 else ("", "")
            span = f"{_num(c.figure)} [{_num(c.interval.lo)}, {_num(c.interval.hi)}]"
            limit = f"{'>=' if c.direction == 'min' else '<='} {_num(c.threshold)}"
            rows.append((*head, c.name, span, limit, str(c.n), str(c.verdict), c.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    return "\n".join(lines)


def exit_code(verdicts: Sequence[VariantVerdict]) -> int:
    """0 if every variant PASSes, 1 if any FAILs, 3 otherwise (also when there is none)."""
    if any(v.verdict is Verdict.FAIL for v in verdicts):
        return 1
    return 0 if verdicts and all(v.verdict is Verdict.PASS for v in verdicts) else 3
