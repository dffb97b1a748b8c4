"""Aggregation: per-variant scores, flips, recovery, the report schema and the text table."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from serving.probes.facts import Fact
from serving.probes.report import ReportSchemaError
from serving.probes.scoring import (
    VariantResult,
    build_report,
    flips,
    flips_by_relation,
    format_table,
    recovery,
    score_variant,
    validate_report,
)

FACTS = [
    Fact("capital", "France", "Paris", "The capital of [X] is"),
    Fact("capital", "Japan", "Tokyo", "The capital of [X] is"),
    Fact("capital", "Peru", "Lima", "The capital of [X] is"),
    Fact("capital", "Chad", "N'Djamena", "The capital of [X] is"),
    Fact("currency", "Japan", "yen", "The currency of [X] is the"),
    Fact("currency", "India", "rupee", "The currency of [X] is the"),
]
PRIMARY = [True, True, True, False, True, False]
INT8 = [True, True, False, True, True, False]  # lost Peru, gained Chad
INT4 = [True, False, False, False, False, False]  # lost Japan, Peru, yen
HITS = [True, True, True, False, True, True]


def make_report(**kwargs: Any) -> dict[str, Any]:
    per_variant = {
        "fp16": VariantResult(PRIMARY, HITS),
        "int8": VariantResult(INT8, HITS),
        "int4": VariantResult(INT4, [True, False, False, False, True, False]),
    }
    return build_report("fp16", per_variant, FACTS, k=3, **kwargs)


def test_score_variant() -> None:
    score = score_variant(FACTS, PRIMARY, HITS)
    assert score.n == 6
    assert score.p_at_1 == pytest.approx(4 / 6)
    assert score.p_at_k == pytest.approx(5 / 6)
    assert list(score.by_relation) == ["capital", "currency"]
    assert score.by_relation["capital"].n == 4
    assert score.by_relation["capital"].p_at_1 == pytest.approx(0.75)
    assert score.by_relation["currency"].p_at_k == pytest.approx(1.0)
    assert score_variant(FACTS, PRIMARY).p_at_k is None
    with pytest.raises(ValueError):
        score_variant(FACTS, PRIMARY[:-1])
    with pytest.raises(ValueError):
        score_variant([], [])


def test_flips() -> None:
    assert flips(PRIMARY, INT8) == (1, 1)
    assert flips(PRIMARY, INT4) == (3, 0)
    assert flips(PRIMARY, PRIMARY) == (0, 0)
    assert flips([False, False], [True, True]) == (0, 2)
    assert flips([], []) == (0, 0)
    with pytest.raises(ValueError):
        flips([True], [True, False])
    assert flips_by_relation(FACTS, PRIMARY, INT4) == {"capital": (2, 0), "currency": (1, 0)}
    assert flips_by_relation(FACTS, PRIMARY, INT8) == {"capital": (1, 1), "currency": (0, 0)}


def test_recovery() -> None:
    assert recovery(0.5, 0.8) == pytest.approx(0.625)
    assert recovery(0.9, 0.6) == pytest.approx(1.5)  # a variant can beat the primary
    assert recovery(0.5, 0.0) is None
    assert recovery(0.0, 0.0) is None
    assert recovery(math.nan, 0.5) is None


def test_build_report_values_and_schema() -> None:
    report = make_report(created="2026-01-01T00:00:00Z")
    validate_report(report)
    json.dumps(report, allow_nan=False)  # JSON-serialisable, no NaN
    assert report["primary"] == "fp16"
    assert list(report["variants"]) == ["fp16", "int8", "int4"]
    assert report["k"] == 3 and report["created"] == "2026-01-01T00:00:00Z"
    assert len(report["probes_sha256"]) == 64
    fp16, int8, int4 = (report["variants"][n] for n in ("fp16", "int8", "int4"))
    assert fp16["recovery"] == 1.0 and fp16["flips_lost"] == fp16["flips_gained"] == 0
    assert int8["p_at_1"] == pytest.approx(4 / 6) and int8["recovery"] == pytest.approx(1.0)
    assert (int8["flips_lost"], int8["flips_gained"]) == (1, 1)
    assert int4["p_at_1"] == pytest.approx(1 / 6) and int4["recovery"] == pytest.approx(0.25)
    assert int4["p_at_k"] == pytest.approx(2 / 6)
    assert int4["by_relation"]["capital"] == {
        "n": 4,
        "p_at_1": 0.25,
        "p_at_k": 0.25,
        "flips_lost": 2,
        "flips_gained": 0,
    }
    assert set(int4) == {"n", "p_at_1", "p_at_k", "recovery", "flips_lost", "flips_gained", "by_relation"}


def test_build_report_without_p_at_k_and_with_zero_primary() -> None:
    zero = [False] * 6
    report = build_report("base", {"base": VariantResult(zero), "q": VariantResult(INT8)}, FACTS)
    validate_report(report)
    assert "k" not in report and "created" not in report
    assert report["variants"]["base"]["recovery"] is None
    assert report["variants"]["q"]["recovery"] is None
    assert report["variants"]["q"]["p_at_k"] is None
    assert report["variants"]["q"]["flips_gained"] == 4
    assert json.loads(json.dumps(report))["variants"]["q"]["recovery"] is None


def test_build_report_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="primary"):
        build_report("missing", {"a": VariantResult(PRIMARY)}, FACTS)
    with pytest.raises(ValueError):
        build_report("a", {"a": VariantResult(PRIMARY[:3])}, FACTS)
    with pytest.raises(ValueError):
        build_report("a", {"a": VariantResult(PRIMARY)}, FACTS, k=0)


def _break(
    report: dict[str, Any], path: list[str], value: Any = None, delete: bool = False
) -> dict[str, Any]:
    broken = copy.deepcopy(report)
    node = broken
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "delete", "needle"),
    [
        (["primary"], None, True, "missing key"),
        (["variants"], None, True, "missing key"),
        (["extra"], 1, False, "unexpected key"),
        (["primary"], "nope", False, "primary 'nope' missing"),
        (["primary"], 3, False, "report.primary"),
        (["variants"], {}, False, "non-empty"),
        (["k"], 0, False, "report.k"),
        (["created"], 5, False, "report.created"),
        (["variants", "int8", "p_at_1"], 1.5, False, "p_at_1"),
        (["variants", "int8", "p_at_1"], math.nan, False, "p_at_1"),
        (["variants", "int8", "p_at_1"], None, False, "p_at_1"),
        (["variants", "int8", "p_at_k"], "0.5", False, "p_at_k"),
        (["variants", "int8", "recovery"], -1.0, False, "recovery"),
        (["variants", "int8", "flips_lost"], -1, False, "flips_lost"),
        (["variants", "int8", "flips_lost"], 1.0, False, "flips_lost"),
        (["variants", "int8", "flips_gained"], True, False, "flips_gained"),
        (["variants", "int8", "n"], 7, False, "n"),
        (["variants", "int8", "by_relation"], None, True, "missing key"),
        (["variants", "int8", "by_relation"], {}, False, "empty"),
        (["variants", "int8", "by_relation", "capital", "flips_lost"], 0, False, "flips_lost"),
        (["variants", "int8", "by_relation", "capital", "recovery"], 1.0, False, "unexpected key"),
        (["variants", "int8", "by_relation", "capital", "n"], None, True, "missing key"),
        (["variants", "int8", "speed"], 3.0, False, "unexpected key"),
        (["variants", "fp16", "flips_lost"], 1, False, "primary must have 0 flips"),
        (["variants", "fp16", "recovery"], 0.9, False, "recovery"),
        (["variants", "int4"], [], False, "expected an object"),
    ],
)
def test_validate_report_rejects(path: list[str], value: Any, delete: bool, needle: str) -> None:
    broken = _break(make_report(), path, value, delete)
    with pytest.raises(ReportSchemaError) as info:
        validate_report(broken)
    assert isinstance(info.value, ValueError)
    assert needle in str(info.value)


def test_validate_report_rejects_non_mapping() -> None:
    with pytest.raises(ReportSchemaError):
        validate_report([1, 2])


def test_validate_report_accepts_json_roundtrip() -> None:
    validate_report(json.loads(json.dumps(make_report())))


def test_format_table() -> None:
    table = format_table(make_report())
    lines = table.splitlines()
    assert lines[0].split() == ["variant", "relation", "n", "P@1", "P@k", "recovery", "lost", "gained"]
    assert any(ln.startswith("fp16*") and "(all)" in ln for ln in lines)
    int4_all = next(ln for ln in lines if ln.startswith("int4 "))
    assert int4_all.split() == ["int4", "(all)", "6", "0.167", "0.333", "0.250", "3", "0"]
    capital_row = next(ln for ln in lines[lines.index(int4_all) :] if "capital" in ln)
    assert capital_row.split()[-3:] == ["0.333", "2", "0"]  # 0.25 / 0.75 recovery on the relation
    no_k = format_table(build_report("a", {"a": VariantResult([False] * 6)}, FACTS))
    assert " - " in no_k  # P@k and recovery undefined
