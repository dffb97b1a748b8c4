"""The soak harness (`driftgate soak`, serving/commands/soak.py): a short real soak, and its
report's pass criteria on made-up samples (each criterion shown to fail)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.commands.soak import SoakOptions, parse_duration, soak
from serving.commands.soak_report import (
    Events,
    Sample,
    build_report,
    checks,
    parse_metrics,
    plot,
    summary,
)
from tests.conftest import model_dir

SHADOW = "int8-w8a8"

CONFIG = """
server: {{host: 127.0.0.1, grpc_port: 0, metrics_port: 0, http_port: -1, health_interval_s: 1.0}}
generation: {{max_tokens: 16}}
variants:
  - name: dense
    model: {dense}
    role: primary
    engine: {{max_model_len: 512, kv_cache_gib: 0.5, cpu_cores: "0"}}
  - name: {shadow}
    model: {shadow_dir}
    role: shadow
    sample_rate: 1.0
    max_in_flight: 16
    timeout_s: 120
    engine: {{max_model_len: 512, kv_cache_gib: 0.25, cpu_cores: "1"}}
"""


@pytest.mark.engine
@pytest.mark.asyncio(loop_scope="session")
async def test_a_short_soak_with_the_shadow_killed_passes(tmp_path: Path) -> None:
    """~90 s of saturating load on dense + one shadow; the shadow's engine core is killed 20 s in and
    restarted by the supervisor: no primary error, bounded RSS, every engine idle at the end."""
    from compress.api import build_recipes

    # Built here when missing (a fresh CI machine has no variants; a current one is kept, ~10 s).
    shadow_dir = (await asyncio.to_thread(build_recipes, model_dir(), [SHADOW]))[SHADOW]
    config = tmp_path / "soak.yaml"
    config.write_text(CONFIG.format(dense=model_dir(), shadow=SHADOW, shadow_dir=shadow_dir))
    opts = SoakOptions(
        config=str(config), duration_s=90, users=16, kill_at=0.2, sample_s=2, warmup_s=20, out=str(tmp_path)
    )
    report = await soak(opts, tmp_path)

    failed = [c for c in report["checks"] if not c["passed"]]
    assert not failed, failed
    gw, events = report["gateway"], report["events"]
    assert events["victim"] == SHADOW and events["not_ready_seen"]
    assert gw["gc"]["frozen_objects"] > 100_000  # `driftgate serve` froze its start-up heap (two engines)
    assert gw["gc"]["collections"]["0"] > 0  # and its collections were timed under the load
    assert gw["engine_restarts"].get(SHADOW) == 1
    mirrored = gw["mirror_outcomes"][SHADOW]
    assert mirrored.get("compared", 0) > 0 and mirrored.get("dropped", 0) > 0, mirrored  # down a while
    assert set(gw["num_unfinished_end"]) == {"dense", SHADOW}
    assert report["latency_over_time"] and report["rss"]["growth_mib"] <= opts.rss_bound_mib
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.png").stat().st_size > 10_000


METRICS = """
driftgate_requests_total{{variant="dense",role="primary",code="OK"}} 100
driftgate_requests_total{{variant="dense",role="primary",code="UNAVAILABLE"}} {errors}
driftgate_requests_total{{variant="s",role="shadow",code="UNAVAILABLE"}} 7
driftgate_mirror_total{{variant="s",outcome="compared"}} 90
driftgate_mirror_total{{variant="s",outcome="dropped"}} 10
driftgate_engine_unfinished_requests{{variant="dense"}} 0
driftgate_engine_unfinished_requests{{variant="s"}} {unfinished}
driftgate_requests_in_flight{{variant="dense"}} 0
driftgate_engine_restarts_total{{variant="s",outcome="restarted"}} 1
driftgate_gc_pause_seconds_count{{generation="0"}} 40
driftgate_gc_pause_seconds_sum{{generation="0"}} 0.02
driftgate_gc_pause_seconds_count{{generation="2"}} 1
driftgate_gc_pause_seconds_sum{{generation="2"}} 0.005
driftgate_gc_frozen_objects 630000
"""
STATS = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,"
    "90%,95%,98%,99%,99.9%,99.99%,100%\n"
    "grpc,Generate[dense],60,0,100,100,50,400,10,1,0,100,110,120,130,140,150,160,300,390,400,400\n"
    "grpc,GenerateStream[dense]/ttft,40,0,20,20,10,90,0,1,0,20,21,22,23,24,25,26,80,90,90,90\n"
)


def _report(tmp_path: Path, errors: int = 0, unfinished: int = 0, leak_mib: int = 0) -> dict:
    (tmp_path / "locust_stats.csv").write_text(STATS)
    (tmp_path / "locust_failures.csv").write_text(
        "Method,Name,Error,Occurrences\ngrpc,Generate[?],CallError('UNAVAILABLE: down'),3\n" if errors else ""
    )
    text = METRICS.format(errors=errors, unfinished=unfinished)
    samples = [Sample(t, (500 + leak_mib * t // 100) << 20, 0, parse_metrics(text)) for t in range(0, 601, 5)]
    events = Events(
        victim="s", killed_at=100, not_ready_seen=True, restored_at=200, load_end=600, exit_code=0
    )
    return build_report(samples, events, tmp_path / "locust", 0.0, warmup_s=60, bound_mib=64)


def test_the_report_checks_pass_on_a_clean_run_and_each_fails_on_its_defect(tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert all(ok for _, ok, _ in checks(report)), checks(report)
    assert report["locust"]["requests"] == 60  # /ttft entries are measures, not requests
    assert report["gateway"]["mirror_outcomes"] == {"s": {"compared": 90.0, "dropped": 10.0}}
    assert report["rss"]["growth_mib"] == 0 and report["rss"]["second_half_slope_mib_per_min"] == 0
    assert report["gateway"]["gc"] == {
        "frozen_objects": 630000,
        "collections": {"0": 40, "2": 1},
        "paused_s": {"0": 0.02, "2": 0.005},
    }
    assert "gateway GC: collections {'0': 40.0, '2': 1.0}" in summary(report, checks(report))
    plot(report, tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000

    def failed(r: dict) -> set[str]:
        return {name for name, ok, _ in checks(r) if not ok}

    errors = _report(tmp_path, errors=3)
    assert failed(errors) == {"0 primary errors"}
    assert errors["locust"]["failures_by_status"] == {"UNAVAILABLE": 3}
    assert failed(_report(tmp_path, unfinished=2)) == {"every engine idle at the end"}
    leaking = _report(tmp_path, leak_mib=20)  # 20 MiB per 100 s: ~108 MiB over the bound's window
    assert failed(leaking) == {"RSS growth bounded"}
    assert leaking["rss"]["second_half_slope_mib_per_min"] == pytest.approx(12, abs=1)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h")] == [90, 90, 600, 5400]
