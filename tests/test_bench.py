"""The bench's pure parts: statistics of a cell, pairing across repeats, the report, the roofline's
parameter count (on the real checkpoint's headers). The measuring itself is `make bench`."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.direct import parse_settings
from bench.doors import requests_for, rotated
from bench.load import Cell, Sample, closed_loop, paired_differences, paired_ratios, pct, spread, summarize
from bench.roofline import parameter_count, served_dtype
from bench.run import markdown
from bench.settings import KERNELS, answer_agreement
from bench.systems import engine_config
from serving.home import default_model_dir


def test_pct_is_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert pct(xs, 0.5) == 50.0
    assert pct(xs, 0.99) == 99.0
    assert pct(xs, 1.0) == 100.0
    assert pct([3.0], 0.99) == 3.0
    assert math.isnan(pct([], 0.5))


def test_summarize_counts_errors_apart_and_time_per_output_token() -> None:
    samples = [Sample(1.0, 0.1, 10), Sample(2.0, 0.2, 19), Sample(0.5, 0.0, 0, ok=False)]
    cell = summarize("s", 2, 0, samples, seconds=2.0)
    assert (cell.requests, cell.errors) == (3, 1)
    assert cell.tokens_per_s == pytest.approx(29 / 2.0)
    assert cell.requests_per_s == pytest.approx(1.0)
    assert cell.ttft_p50_s == pytest.approx(0.1)
    assert cell.tpot_p50_s == pytest.approx(0.1)  # (1.0-0.1)/9 and (2.0-0.2)/18 are both 0.1


def test_closed_loop_keeps_concurrency_and_total() -> None:
    live = peak = 0

    async def call(prompt: str) -> Sample:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.001)
        live -= 1
        return Sample(0.001, 0.0005, len(prompt))

    samples, seconds = asyncio.run(closed_loop(call, 4, 10))
    assert len(samples) == 10 and peak == 4 and seconds > 0


def _cell(system: str, c: int, rep: int, tps: float, p50: float) -> Cell:
    return Cell(system, c, rep, 8, 0, 1.0, tps, 8.0, p50, p50 * 2, p50 / 10, p50 / 5, 0.02)


def test_ratios_and_differences_pair_the_same_repeat() -> None:
    cells = [
        _cell("gw", 1, 0, 90.0, 1.010),
        _cell("direct", 1, 0, 100.0, 1.000),
        _cell("gw", 1, 1, 45.0, 2.004),  # a slow repeat for both: the pair still says 0.9
        _cell("direct", 1, 1, 50.0, 2.000),
        _cell("gw", 8, 0, 400.0, 3.0),  # no direct cell at c=8: no ratio
    ]
    r = paired_ratios(cells, "tokens_per_s", "gw", "direct")
    assert list(r) == [1]
    assert r[1].median == pytest.approx(0.9) and r[1].n == 2
    d = paired_differences(cells, "latency_p50_s", "gw", "direct")
    assert d[1].low == pytest.approx(0.004) and d[1].high == pytest.approx(0.010)
    assert spread([float("nan")]).n == 0


def test_rotation_and_cell_sizes() -> None:
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert requests_for(1) == 8 and requests_for(32) == 128


def _settings_cells(speedups: dict[str, float]) -> list[dict[str, Any]]:
    """A settings suite's cells: each system at c=1, 3 repeats, 30 tok/s times its speed-up."""
    return [_cell(s, 1, r, 30.0 * k, 1.0).as_dict() for s, k in speedups.items() for r in range(3)]


def test_markdown_has_every_section(tmp_path: Path) -> None:
    cells = [
        _cell(s, c, r, 100.0 + r, 1.0)
        for s in ("asyncllm-direct", "driftgate-grpc")
        for c in (1, 8)
        for r in (0, 1, 2)
    ]
    mirror = [_cell(s, 1, r, 50.0, 1.0) for s in ("mirroring-off", "mirroring-on") for r in (0, 1, 2)]
    mirror += [_cell("neighbour-asyncllm", 1, r, 40.0, 1.0) for r in (0, 1, 2)]
    neighbours = [
        {"system": "neighbour-asyncllm", "concurrency": 1, "repeat": r, "tok_s": 44.0 + r, "requests": 9}
        for r in (0, 1, 2)
    ] + [
        {"system": "neighbour-read", "concurrency": 1, "repeat": 0, "read_gb_s": 25.0, "covered": False},
        {
            "system": "neighbour-read",
            "concurrency": 1,
            "repeat": 1,
            "error": "RuntimeError: x",
            "covered": True,
        },
    ]
    cpu = [
        {
            "system": s,
            "concurrency": 1,
            "repeat": r,
            "window_s": 5.0,
            "gateway_cores": 0.05,
            "engines_cores": 1.7,
            "gateway_cpu_s_per_request": 0.004,
            "engines_cpu_s_per_request": 0.2,
        }
        for s in ("mirroring-off", "mirroring-on")
        for r in range(3)
    ]
    result: dict[str, Any] = {
        "machine": {
            "date": "d",
            "commit": "c",
            "cpu": "x",
            "isa": ["avx2", "avx512f"],
            "cores": 2,
            "memory_gb": 24,
            "versions": {"vllm": "v"},
        },
        "settings": {"repeats": 3},
        "roofline": {
            "bandwidth_gb_s": 20.0,
            "how": "h",
            "weight_bytes_bf16": 2e8,
            "parameters": 1e8,
            "roofline_tok_s": 100.0,
        },
        "doors": {"start_s": {}, "cells": [c.as_dict() for c in cells]},
        "mirror": {
            "cells": [c.as_dict() for c in mirror],
            "cpu": cpu,
            "idle_cores": {"gateway": 0.03, "engines": 0.1},
            "neighbours": neighbours,
        },
        "contention": {
            "cores": [0, 1],
            "rounds": [
                {"repeat": 0, "kind": k, "alone": [2e10, 3e10], "both": [1e10, 1.5e10], "ratios": [0.5, 0.5]}
                for k in ("read", "compute")
            ],
        },
        "compress": [{"recipe": "gptq-w4a16", "wall_s": 30.0, "ratio_vs_source": 0.4}],
        "preload": {
            "start_s": {"preload-none": 60.0, "preload-tcmalloc": 50.0},
            "cells": _settings_cells({"preload-none": 1.0, "preload-tcmalloc": 1.1}),
        },
        "dtype": {
            "start_s": {"dtype-bfloat16": 60.0, "dtype-float32": 55.0},
            "cells": _settings_cells({"dtype-bfloat16": 1.0, "dtype-float32": 2.0}),
            "answers_baseline": "dtype-bfloat16",
            "answers": {"dtype-float32": answer_agreement([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 6]])},
        },
        "kernels": {
            "start_s": {"kernels-parallel": 30.0, "kernels-serial": 90.0},
            "cells": _settings_cells({"kernels-parallel": 1.0, "kernels-serial": 1.25}),
            "answers_baseline": "kernels-parallel",
            "answers": {"kernels-serial": answer_agreement([[1, 2, 3]], [[1, 2, 3]])},
        },
        "nice": {
            "start_s": {"nice0": 60.0, "nice5": 61.0, "nice10": 62.0},
            "cells": _settings_cells(
                {
                    **{"nice0-grpc": 1.0, "nice5-grpc": 0.97, "nice10-grpc": 1.05},
                    **{"nice0-http": 1.0, "nice5-http": 1.02, "nice10-http": 0.9},
                }
            ),
            "added": [],
        },
        "variants": {
            "dense": {"cells": [c.as_dict() for c in cells]},
            "gptq-w4a16": {"skipped": "its 4-bit weights need cpu_gemm_wna16"},
        },
        "startup": {
            "cold": {
                "all_serving_s": 456.2,
                "variants": ["a", "b"],
                "skipped": {"c": "its 4-bit weights need cpu_gemm_wna16"},
                "ready_s": {"a": 200.0, "b": 450.0},
            },
            "warm": {"all_serving_s": 250.0, "variants": ["a", "b"], "ready_s": {"a": 100.0, "b": 240.0}},
        },
        "restart": {
            "cold_s": 130.0,
            "starts_s": {"vllm-serve": [100.0, 110.0, 120.0], "driftgate-variant-serve": [50.0, 44.0, 60.0]},
            "loaded": {"vllm-serve": [False] * 3, "driftgate-variant-serve": [True, True, False]},
        },
    }
    text = markdown(result)
    headings = (
        "## Roofline",
        "## One core's work against the other's",
        "## Gateway cost",
        "## Mirroring",
        "## Engine preloads",
        "## Engine dtype",
        "## Engine priority",
        "## Fused kernels",
        "## Start-up",
        "## A remote",
        "## Demo variants",
    )
    for heading in headings:
        assert heading in text
    assert "| preload-tcmalloc / preload-none | 1.100 [1.100–1.100] |" in text
    assert "| dense | 8 | 101.0 [100.0–102.0] | 101.0 [100.0–102.0] | 1.000 [1.000–1.000] |" in text
    assert "- gptq-w4a16: not measured on this CPU: its 4-bit weights need cpu_gemm_wna16" in text
    assert "- c: not started on this CPU: its 4-bit weights need cpu_gemm_wna16" in text
    assert "| cold | 456 | 2 | 450 |" in text and "| warm | 250 | 2 | 240 |" in text
    assert (
        "| driftgate-variant-serve | 50 [44–60] | 2/3 |" in text
        and "| vllm-serve | 110 [100–120] | 0/3 |" in text
    )
    assert "paired by round: 0.50 [0.40–0.50]" in text  # 50/100, 44/110, 60/120
    assert "· x (avx2 avx512f) · 2 cores ·" in text  # results differ by ISA: the header says which
    assert "| driftgate-grpc / asyncllm-direct | 1.000 [1.000–1.000] | 1.000 [1.000–1.000] |" in text
    assert "0.50 of the roofline" in text  # tpot 0.02 s -> 50 tok/s of 100
    assert "| mirroring-on | 1 | 0.050 | 1.70 | 4.0 |" in text
    assert (
        "| neighbour-asyncllm | 1 | 1.000 [1.000–1.000] | 1.000 [1.000–1.000] | 0.800 [0.800–0.800] |" in text
    )
    assert "| neighbour-asyncllm | 1 | decodes 45.0 tok/s | – | 0 |" in text  # not recorded (older runs)
    assert (
        "| neighbour-read | 1 | reads 25.0 GB/s | 1/2 | 1 |" in text
    )  # a failed neighbour is counted, not averaged
    assert "| read | 1 | 30.0 [30.0–30.0] GB/s | 15.0 [15.0–15.0] GB/s | 0.500 [0.500–0.500] |" in text
    # Each dtype against its own roofline: 20 GB/s over 1e8 parameters x 2 or x 4 bytes.
    assert "dtype-bfloat16, c=1: decode 50.0 tok/s = 0.50 of the roofline" in text
    assert "dtype-float32, c=1: decode 50.0 tok/s = 1.00 of the roofline" in text
    assert "| dtype-float32 / dtype-bfloat16 | 2.000 [2.000–2.000] |" in text
    assert "Gateway start: nice0 60 s, nice5 61 s, nice10 62 s" in text
    assert "| nice5-grpc / nice0-grpc | 0.970 [0.970–0.970] |" in text
    assert "| nice5-http / nice0-http | 1.020 [1.020–1.020] |" in text
    assert "| nice10-grpc / nice0-grpc | 1.050 [1.050–1.050] |" in text
    assert "| nice10-http / nice0-http | 0.900 [0.900–0.900] |" in text
    assert "2 bench prompts (up to 32 tokens): 1 identical, token agreement mean 0.750, " in text
    assert "the others first differ at token [1]" in text
    assert "| kernels-serial / kernels-parallel | 1.250 [1.250–1.250] |" in text
    assert (
        "- kernels-serial vs kernels-parallel: greedy answers to the 1 bench prompts (up to 32 tokens): 1 identical\n"
        in text
    )
    report.plot(report.cells_of(result["doors"]), tmp_path / "doors.png", "t")
    assert (tmp_path / "doors.png").stat().st_size > 1000


def test_bench_direct_takes_engine_settings_by_name() -> None:
    chosen = parse_settings(["preload=none", "fused_kernels=serial"])
    assert chosen == {"preload": "none", "fused_kernels": "serial"}
    e = engine_config("1", **chosen)
    assert (e.preload.value, e.fused_kernels.value, e.dtype, e.cpu_cores) == ("none", "serial", "auto", "1")
    assert parse_settings([]) == {}
    with pytest.raises(ValueError, match="unknown setting 'nice'"):
        parse_settings(["nice=10"])
    with pytest.raises(ValueError, match="unknown setting 'none'"):
        parse_settings(["none"])  # the old positional form
    assert [s.engine()["fused_kernels"] for s in KERNELS.values()] == ["parallel", "serial"]


def test_machine_records_the_vector_isa() -> None:
    from bench.run import ISA_FLAGS, machine

    m = machine()
    assert set(m["isa"]) <= set(ISA_FLAGS)
    assert ("avx2" in m["isa"]) == (" avx2 " in Path("/proc/cpuinfo").read_text().replace("\n", " "))


def test_parameter_count_of_the_dense_checkpoint() -> None:
    model = default_model_dir()
    if not any(model.glob("*.safetensors")):
        pytest.skip("the dense model is not pulled (make test pulls it)")
    assert 134e6 < parameter_count(model) < 136e6  # SmolLM2-135M, tied embedding stored once


def test_the_roofline_counts_the_bytes_of_the_dtype_the_engines_serve() -> None:
    model = default_model_dir()
    if not (model / "config.json").exists():
        pytest.skip("the dense model is not pulled (make test pulls it)")
    avx512 = " avx512f " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    assert served_dtype(model) == ("bfloat16" if avx512 else "float32")  # engine.dtype auto
    roof = {"bandwidth_gb_s": 20.0, "how": "h", "parameters": 1e8, "dtype": "float32"}
    lines = report.roofline_lines({**roof, "weight_bytes": 4e8, "roofline_tok_s": 50.0}, None)
    assert "- weights read per decoded token: 400 MB (100.0 M parameters, float32)" in lines
    # a run from before the dtype was recorded counted bf16 bytes, and says so
    old = {**roof, "weight_bytes_bf16": 2e8, "roofline_tok_s": 100.0}
    del old["dtype"]
    assert "- weights read per decoded token: 200 MB (100.0 M parameters, bfloat16)" in report.roofline_lines(
        old, None
    )


def test_integer_tensors_count_their_stored_bytes_whatever_the_served_dtype() -> None:
    from bench.roofline import split_bytes, weight_bytes

    # an int8 W8A8 checkpoint: int8 linear weights, bf16 embedding, norms and scales
    floats, fixed = split_bytes([("I8", 1000), ("BF16", 300), ("F32", 20), ("I32", 10)])
    assert (floats, fixed) == (320, 1040)
    assert weight_bytes(floats, fixed, "bfloat16") == 320 * 2 + 1040
    assert weight_bytes(floats, fixed, "float32") == 320 * 4 + 1040
    assert split_bytes([("BF16", 5)]) == (5, 0)  # a dense checkpoint: every tensor follows the dtype
    # the dtype suite puts each dtype against its own roofline, integer bytes unchanged
    result = {
        "start_s": {"dtype-bfloat16": 1.0, "dtype-float32": 1.0},
        "cells": _settings_cells({"dtype-bfloat16": 1.0, "dtype-float32": 1.0}),
    }
    roof = {"bandwidth_gb_s": 1e-9 * 50 * (300 * 2 + 1000), "parameters": 1300}
    lines = report.dtype_lines(result, {**roof, "float_parameters": 300, "fixed_bytes": 1000})
    assert any("dtype-bfloat16, c=1: decode 50.0 tok/s = 1.00 of the roofline" in x for x in lines)
    # float32 reads 300 x 4 + 1000 = 2200 bytes, not 1300 x 4: a roofline of 36.4 tok/s
    assert any("dtype-float32, c=1: decode 50.0 tok/s = 1.37 of the roofline" in x for x in lines)


def test_bench_model_is_a_checkpoint_or_a_built_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.commands.bench import bench_model
    from serving.commands.main import main

    monkeypatch.setenv("DRIFTGATE_HOME", str(tmp_path / "home"))
    built = tmp_path / "home" / "variants" / "int8-w8a8"
    built.mkdir(parents=True)
    (built / "config.json").write_text("{}")
    assert bench_model("int8-w8a8") == built
    assert bench_model(str(built)) == built
    with pytest.raises(FileNotFoundError, match="nor a built variant"):
        bench_model("awq-w4a16")
    assert main(["bench", "--model", "awq-w4a16", "--suites", "roofline"]) == 2
    assert "--model awq-w4a16: neither a checkpoint directory" in capsys.readouterr().err


def test_top_frames_folds_collapsed_stacks() -> None:
    from bench.profile import top_frames

    collapsed = "\n".join(
        [
            "main (a.py:1);run (b.py:2);select (selectors.py:468) 60",
            "main (a.py:1);run (b.py:2);handle (c.py:3);encode (d.py:4) 30",
            "main (a.py:1);run (b.py:2);handle (c.py:3) 10",
            "garbage line",
        ]
    )
    top = {f: (s, i) for f, s, i in top_frames(collapsed)}
    assert top["select"] == (0.6, 0.6)
    assert top["encode"] == (0.3, 0.3)
    assert top["handle"] == pytest.approx((0.1, 0.4))
    assert "main" not in top  # no self time
    assert top_frames("") == []


def test_engine_preload_values() -> None:
    from serving.config import Preload
    from serving.engines.preload import preload_value
    from serving.errors import ConfigError

    gomp = "/v/torch/lib/libgomp.so.1"
    tc, iomp = "/usr/lib/libtcmalloc_minimal.so.4", "/v/lib/libiomp5.so"
    assert preload_value(Preload.NONE, gomp, tc, iomp) == gomp
    assert preload_value(Preload.TCMALLOC, gomp, tc, iomp) == f"{tc}:{gomp}"
    assert preload_value(Preload.TCMALLOC_IOMP, f"/x/a.so {gomp}", tc, iomp) == f"{tc}:{iomp}:/x/a.so"
    assert preload_value(Preload.TCMALLOC, f"{tc}:{gomp}", tc, iomp) == f"{tc}:{gomp}"  # not twice
    with pytest.raises(ConfigError, match="libtcmalloc-minimal4"):
        preload_value(Preload.TCMALLOC, "", None, iomp)
    with pytest.raises(ConfigError, match="intel-openmp"):
        preload_value(Preload.TCMALLOC_IOMP, "", tc, None)


def test_engine_preload_auto_takes_what_is_found_and_never_refuses() -> None:
    from serving.config import EngineConfig, Preload
    from serving.engines.preload import preload_value, resolve

    gomp = "/v/torch/lib/libgomp.so.1"
    tc, iomp = "/usr/lib/libtcmalloc_minimal.so.4", "/v/lib/libiomp5.so"
    assert EngineConfig().preload is Preload.AUTO
    assert resolve(Preload.AUTO, tc, iomp) is Preload.TCMALLOC_IOMP
    assert resolve(Preload.AUTO, tc, None) is Preload.TCMALLOC
    assert resolve(Preload.AUTO, None, iomp) is Preload.NONE  # Intel OpenMP is only taken with tcmalloc
    assert resolve(Preload.NONE, tc, iomp) is Preload.NONE  # an explicit choice stays
    assert preload_value(Preload.AUTO, gomp, tc, iomp) == f"{tc}:{iomp}"
    assert preload_value(Preload.AUTO, gomp, tc, None) == f"{tc}:{gomp}"
    assert preload_value(Preload.AUTO, gomp, None, None) == gomp


def test_added_latency_from_a_real_registry_between_two_scrapes() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bench import added
    from serving.config import VariantConfig
    from serving.metrics import PrometheusSink
    from serving.stats import OverheadStats

    registry = CollectorRegistry()
    sink = PrometheusSink(registry, [VariantConfig(name="dense")])
    sink.overhead(OverheadStats("dense", "grpc", 0.2, 0.2))  # before the cell: not counted
    before = added.parse(generate_latest(registry).decode())
    for first in [0.0004] * 60 + [0.0015] * 30 + [0.004] * 9 + [0.03]:
        sink.overhead(OverheadStats("dense", "grpc", first, first * 2))
    sink.overhead(OverheadStats("dense", "http", 0.5, 0.5))  # another door: another key
    after = added.parse(generate_latest(registry).decode())
    record = added.cell_record("driftgate-grpc", 8, 0, ("dense", "grpc"), after, before)
    first, total = record["first"], record["total"]
    assert first["count"] == 100 and first["share_le_1ms"] == 0.6 and first["share_le_5ms"] == 0.99
    assert first["p50_s"] == pytest.approx(0.00025 + 0.00025 * 50 / 60)  # rank 50 of the 60 in (0.25, 0.5] ms
    assert 0.002 < first["p99_s"] <= 0.005
    assert total["share_le_1ms"] == 0.6 and total["share_le_5ms"] == 0.9
    lines = report.added_server_lines([record, {**record, "repeat": 1}])
    assert lines[2].startswith("| driftgate-grpc | 8 | 0.46 |") and "| 60% | 99% |" in lines[2]


def test_quantile_edges() -> None:
    from bench.added import quantile

    assert math.isnan(quantile(0.5, []))
    assert quantile(0.5, [(0.001, 0.0), (0.002, 10.0), (math.inf, 10.0)]) == pytest.approx(0.0015)
    assert quantile(0.99, [(0.001, 1.0), (math.inf, 10.0)]) == 0.001  # rank in +Inf: the last bound


def test_the_doors_gateway_has_a_remote_variant_on_each_server(tmp_path: Path) -> None:
    import yaml

    from bench.doors import _gateway_variants
    from bench.systems import gateway_yaml
    from serving.config import load_config

    variants = _gateway_variants("/m", "http://127.0.0.1:1", "http://127.0.0.1:2")
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(gateway_yaml(variants, 0, 0, "asyncio", 0), sort_keys=False))
    config = load_config(path)
    remote = {v.name: v for v in config.variants if v.engine.url}
    assert {n: (v.engine.url, v.weight) for n, v in remote.items()} == {
        "remote": ("http://127.0.0.1:1", 0.0),
        "remote-variant": ("http://127.0.0.1:2", 0.0),
    }
    assert [v["name"] for v in _gateway_variants("/m", "http://127.0.0.1:1")] == ["dense", "remote"]


def test_the_report_compares_the_variant_server_with_the_bare_one() -> None:
    cells = [
        _cell(s, 1, r, tps, 1.0)
        for s, tps in (
            ("vllm-serve-http", 100.0),
            ("variant-serve-http", 120.0),
            ("driftgate-remote-variant-grpc", 114.0),
        )
        for r in (0, 1, 2)
    ]
    text = "\n".join(report.ratio_table(cells))
    assert "| variant-serve-http / vllm-serve-http | 1.200" in text
    assert "| driftgate-remote-variant-grpc / variant-serve-http | 0.950" in text
    assert "driftgate-grpc" not in text  # systems the run did not measure have no row


def test_pool_pairs_cells_within_each_run_and_repeat() -> None:
    """Two runs, each with repeat 0: pooled, each run's on/off pair stays its own (no cross-run pairs)."""
    from bench.pool import pooled_lines, quartiles

    def run(on: float, off: float) -> dict[str, Any]:
        cells = [_cell("mirroring-on", 1, 0, on, 1.0), _cell("mirroring-off", 1, 0, off, 1.0)]
        cells.append(_cell("mirroring-unscored", 1, 0, 50.0, 1.0))
        return {"mirror": {"cells": [c.as_dict() for c in cells]}}

    text = "\n".join(pooled_lines([run(40.0, 50.0), run(45.0, 50.0)]))
    # 0.8 and 0.9: cross-run pairs would have added 40/50 and 45/50 again, or mixed 40 with the other 50.
    assert "| mirroring-on / mirroring-off | tok/s | 1 | 0.850 | 0.825–0.875 | 0.800–0.900 | 2 |" in text
    assert "| mirroring-on / mirroring-unscored | tok/s | 1 | 0.850 |" in text  # what scoring costs
    assert "neighbour-asyncllm" not in text  # no cells, no row
    assert quartiles([3.0]) == (3.0, 3.0, 3.0, 3.0, 3.0)
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (1.0, 2.0, 3.0, 4.0, 5.0)
