"""Verdicts: a running gateway's evidence, or a finished probe report, judged by the gates.

`judge` is pure over snapshots (a config, the `DriftBook` stats and the `GateBook`): the gateway
calls it for `GetVerdict`, and a background task refreshes the Prometheus gauges with it. A
variant gated relative to a twin (`gate.relative_to`) is judged against the twin's drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from serving.config import Config, Role
from serving.drift_book import DriftBook
from serving.gate.book import GateBook
from serving.gate.verdict import GateConfig, ProbeEvidence, VariantVerdict, evaluate


def judge(
    config: Config, drift: DriftBook, gates: GateBook, variants: Iterable[str] | None = None
) -> list[VariantVerdict]:
    """One verdict per named variant (default: every variant but the primary), in config order."""
    primary = config.primary.name
    wanted = set(variants) if variants is not None else None
    out: list[VariantVerdict] = []
    for v in config.variants:
        if v.role is Role.PRIMARY or (wanted is not None and v.name not in wanted):
            continue
        cfg = config.gate_for(v.name)
        drift_ev, probes, latency = gates.evidence(v.name, primary, drift.stats(v.name))
        twin = None
        if cfg.relative_to:
            twin = gates.evidence(cfg.relative_to, primary, drift.stats(cfg.relative_to))[0]
        out.append(evaluate(v.name, cfg, drift=drift_ev, probes=probes, latency=latency, twin=twin))
    return out


PROBES_ONLY = {
    "min_exact_match": None,
    "min_token_agreement": None,
    "max_kl": None,
    "max_error_rate": None,
    "max_latency_ratio_p50": None,
    "max_latency_ratio_p99": None,
}
"""A probe report carries no traffic: only the probe check applies to it."""


def judge_report(report: Mapping[str, Any], cfg: GateConfig) -> list[VariantVerdict]:
    """Verdicts of a finished probe report (`driftgate probe`'s report.json): the probe check on
    the paired outcomes, judged once (fixed-n interval), for every variant but the primary."""
    cfg = cfg.with_overrides(PROBES_ONLY)
    primary = report["primary"]
    variants = report["variants"]
    n = int(variants[primary]["n"])
    primary_right = round(float(variants[primary]["p_at_1"]) * n)
    out = []
    for name, row in variants.items():
        if name == primary:
            continue
        lost, gained = int(row["flips_lost"]), int(row["flips_gained"])
        both = primary_right - lost
        probes = ProbeEvidence(
            both=both, lost=lost, gained=gained, neither=n - both - lost - gained, one_shot=True
        )
        out.append(evaluate(name, cfg, probes=probes))
    return out
