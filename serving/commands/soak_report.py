"""The soak's report, from what it sampled (pure: no processes, no network).

Inputs: the gateway's /metrics text at each sample, its RSS, the locust CSV files. Output: one JSON
document (`build_report`), the pass criteria checked on it (`checks`), a PNG (`plot`).
"""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

MIB = 1 << 20
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Samples of one /metrics scrape: (sample name, sorted labels) -> value."""


def parse_metrics(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def by_label(series: Series, name: str, label: str, **match: str) -> dict[str, float]:
    """Values of sample `name` keyed by `label`, over the samples whose labels include `match`."""
    found: dict[str, float] = {}
    for (sample, labels), value in series.items():
        as_dict = dict(labels)
        if sample == name and all(as_dict.get(k) == v for k, v in match.items()) and label in as_dict:
            found[as_dict[label]] = found.get(as_dict[label], 0.0) + value
    return found


@dataclass
class Sample:
    """One look at the gateway: seconds since the load started, its RSS, its /metrics."""

    t: float
    rss: int
    children_rss: int
    metrics: Series = field(default_factory=dict)


@dataclass
class Events:
    """When the shadow was killed and when it served again (seconds since the load started)."""

    victim: str = ""
    killed_at: float | None = None
    not_ready_seen: bool = False
    restored_at: float | None = None
    load_end: float | None = None
    idle_after_s: float | None = None
    startup_s: float = 0.0
    exit_code: int | None = None


def locust_stats(prefix: Path) -> list[dict[str, Any]]:
    """Rows of PREFIX_stats.csv (entry totals and percentiles, in ms)."""
    path = Path(f"{prefix}_stats.csv")
    if not path.exists():
        return []
    rows = []
    for row in csv.DictReader(path.open()):
        rows.append(
            {
                "name": row["Name"],
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "p50_ms": float(row["50%"] or 0),
                "p99_ms": float(row["99%"] or 0),
                "rps": float(row["Requests/s"] or 0),
            }
        )
    return rows


_CODE = re.compile(r"""(?:^|\(['"])([A-Z_]+|HTTP \d+|SSE error|CONNECTION)(?::|$)""")


def locust_failures(prefix: Path) -> dict[str, int]:
    """PREFIX_failures.csv summed by status (`UNAVAILABLE`, `HTTP 503`, ...)."""
    path = Path(f"{prefix}_failures.csv")
    counts: Counter[str] = Counter()
    if path.exists():
        for row in csv.DictReader(path.open()):
            found = _CODE.search(row["Error"])
            counts[found.group(1) if found else row["Error"][:80]] += int(row["Occurrences"])
    return dict(counts)


def is_call(name: str) -> bool:
    """A request entry (not a stream's /ttft or /itl measure, not the Aggregated row)."""
    return name != "Aggregated" and not name.endswith(("/ttft", "/itl"))


def latency_over_time(prefix: Path, t0: float) -> dict[str, list[list[float]]]:
    """From PREFIX_stats_history.csv (--csv-full-history): per call entry, [t, p50 ms, p99 ms] over
    time (locust's percentiles of the last ~10 s)."""
    path = Path(f"{prefix}_stats_history.csv")
    out: dict[str, list[list[float]]] = {}
    if not path.exists():
        return out
    for row in csv.DictReader(path.open()):
        if not is_call(row["Name"]) or row["50%"] in ("", "N/A"):
            continue
        point = [float(row["Timestamp"]) - t0, float(row["50%"]), float(row["99%"])]
        out.setdefault(row["Name"], []).append(point)
    return out


def rss_summary(samples: list[Sample], warmup_s: float, bound_mib: float) -> dict[str, Any]:
    """Gateway RSS: at start, the baseline (first sample after warm-up), peak after it, end, growth
    (peak - baseline) against the bound, and the slope over the second half (MiB/min)."""
    rss = [(s.t, s.rss / MIB) for s in samples]
    after = [r for r in rss if r[0] >= warmup_s] or rss
    base, peak, end = after[0][1], max(r[1] for r in after), after[-1][1]
    half = after[len(after) // 2 :]
    slope = 0.0
    if len(half) >= 3 and half[-1][0] > half[0][0]:
        slope = statistics.linear_regression([t for t, _ in half], [m for _, m in half]).slope * 60
    return {
        "start_mib": round(rss[0][1], 1),
        "baseline_mib": round(base, 1),
        "baseline_at_s": round(after[0][0], 1),
        "peak_mib": round(peak, 1),
        "end_mib": round(end, 1),
        "growth_mib": round(peak - base, 1),
        "bound_mib": bound_mib,
        "second_half_slope_mib_per_min": round(slope, 2),
    }


def gc_summary(metrics: Series) -> dict[str, Any]:
    """The gateway's garbage collections over the run, by generation (`serving.gcwatch`)."""
    return {
        "frozen_objects": metrics.get(("driftgate_gc_frozen_objects", ()), 0.0),
        "collections": by_label(metrics, "driftgate_gc_pause_seconds_count", "generation"),
        "paused_s": {
            g: round(v, 4)
            for g, v in by_label(metrics, "driftgate_gc_pause_seconds_sum", "generation").items()
        },
    }


def build_report(
    samples: list[Sample], events: Events, prefix: Path, t0: float, warmup_s: float, bound_mib: float
) -> dict[str, Any]:
    """The whole report (JSON-ready); `t0` is the load's start (epoch seconds)."""
    last = samples[-1].metrics if samples else {}
    primary_codes = by_label(last, "driftgate_requests_total", "code", role="primary")
    mirror: dict[str, dict[str, float]] = {}
    for (name, labels), value in last.items():
        if name == "driftgate_mirror_total":
            d = dict(labels)
            mirror.setdefault(d["variant"], {})[d["outcome"]] = value
    stats = locust_stats(prefix)
    return {
        "events": vars(events),
        "locust": {
            "entries": stats,
            "requests": sum(r["requests"] for r in stats if is_call(r["name"])),
            "failures": sum(r["failures"] for r in stats if is_call(r["name"])),
            "failures_by_status": locust_failures(prefix),
        },
        "gateway": {
            "primary_requests_by_code": primary_codes,
            "primary_errors": sum(v for k, v in primary_codes.items() if k != "OK"),
            "mirror_outcomes": mirror,
            "engine_restarts": by_label(
                last, "driftgate_engine_restarts_total", "variant", outcome="restarted"
            ),
            "num_unfinished_end": by_label(last, "driftgate_engine_unfinished_requests", "variant"),
            "in_flight_end": by_label(last, "driftgate_requests_in_flight", "variant"),
            "gc": gc_summary(last),
        },
        "rss": rss_summary(samples, warmup_s, bound_mib) if samples else {},
        "rss_over_time": [[round(s.t, 1), round(s.rss / MIB, 1)] for s in samples],
        "latency_over_time": latency_over_time(prefix, t0),
    }


def checks(report: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
    """The pass criteria: (name, passed, what was measured)."""
    gw, lc, rss, ev = report["gateway"], report["locust"], report["rss"], report["events"]
    unfinished = {**gw["num_unfinished_end"]}
    busy = {k: v for k, v in {**unfinished, **gw["in_flight_end"]}.items() if v}
    restored = ev["restored_at"] is not None and ev["not_ready_seen"]
    return [
        ("0 primary errors", gw["primary_errors"] == 0 and lc["failures"] == 0,
         f"gateway {gw['primary_requests_by_code']}, locust failures {lc['failures_by_status'] or 0}"),
        ("requests served", lc["requests"] > 0, f"{lc['requests']} requests"),
        ("RSS growth bounded", bool(rss) and rss["growth_mib"] <= rss["bound_mib"],
         f"peak - baseline = {rss.get('growth_mib')} MiB <= {rss.get('bound_mib')} MiB"),
        ("every engine idle at the end", not busy and bool(unfinished),
         f"num_unfinished {unfinished}, in flight {gw['in_flight_end']}"),
        ("killed shadow restored", restored,
         f"{ev['victim']} killed at {ev['killed_at']} s, serving again at {ev['restored_at']} s"),
        ("gateway exits 0 on SIGTERM", ev["exit_code"] == 0, f"exit code {ev['exit_code']}"),
    ]  # fmt: skip


def summary(report: Mapping[str, Any], results: Iterable[tuple[str, bool, str]]) -> str:
    lines = [f"{'PASS' if ok else 'FAIL'}  {name}: {measured}" for name, ok, measured in results]
    gw = report["gateway"]
    lines.append(f"mirror outcomes: {gw['mirror_outcomes']}")
    gc = gw["gc"]
    lines.append(
        f"gateway GC: collections {gc['collections']}, paused {gc['paused_s']} s, "
        f"{gc['frozen_objects']:.0f} start-up objects frozen"
    )
    for r in report["locust"]["entries"]:
        if r["name"] != "Aggregated":
            lines.append(
                f"  {r['name']}: {r['requests']} req, {r['failures']} failed, "
                f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
            )
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Gateway RSS and the calls' p50/p99 over time, the kill and the restore marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    rss = report["rss_over_time"]
    top.plot([t for t, _ in rss], [m for _, m in rss], color="tab:blue")
    top.set_ylabel("gateway RSS (MiB)")
    for name, points in sorted(report["latency_over_time"].items()):
        t = [p[0] for p in points]
        (line,) = bottom.plot(t, [p[1] for p in points], label=f"{name} p50")
        bottom.plot(t, [p[2] for p in points], linestyle="--", color=line.get_color(), label=f"{name} p99")
    bottom.set_ylabel("latency (ms, last 10 s)")
    bottom.set_xlabel("seconds since the load started")
    ev = report["events"]
    for ax in (top, bottom):
        for at, label, color in (
            (ev["killed_at"], "shadow killed", "red"),
            (ev["restored_at"], "restored", "green"),
        ):
            if at is not None:
                ax.axvline(at, color=color, linestyle=":", label=label if ax is top else None)
    top.legend(loc="lower right")
    if report["latency_over_time"]:
        bottom.legend(loc="upper left", fontsize="small")
    fig.suptitle(f"driftgate soak: {report['locust']['requests']} requests")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
