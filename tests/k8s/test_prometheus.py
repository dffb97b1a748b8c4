"""The Prometheus side of the manifests, checked with promtool (Debian package `prometheus`).

- `promtool check rules` on the PrometheusRule's groups;
- `promtool test rules` (tests/k8s/rules_test.yaml): recording rules computed from synthetic
  series of two gateway pods, alerts firing (or not yet) at the right time;
- the Argo Rollouts and Flagger queries, their template variables filled in, evaluated on
  synthetic verdict gauges: PASS, FAIL, UNDECIDED and "no series yet";
- every PromQL expression of the Grafana dashboard and of the prometheus-adapter rules parses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.manifests import (
    ADAPTER_VALUES,
    find,
    kustomize_command,
    prometheus_rule_groups,
    render,
)

HERE = Path(__file__).resolve().parent
PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"),
    pytest.mark.skipif(kustomize_command() is None, reason="kubectl/kustomize not installed"),
]


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def write_rules(tmp_path: Path, groups: list[dict[str, Any]], name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_rule_groups_pass_promtool_check(tmp_path: Path) -> None:
    groups = prometheus_rule_groups(render("cpu"))
    output = promtool("check", "rules", str(write_rules(tmp_path, groups)), cwd=tmp_path)
    n = sum(len(g["rules"]) for g in groups)
    assert f"SUCCESS: {n} rules found" in output
    for g in groups:
        for rule in g["rules"]:
            if "record" in rule:  # level:metric:operations
                assert re.fullmatch(r"driftgate:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]
            else:
                assert rule["for"] and rule["labels"]["severity"] in {"warning", "critical"}
                assert {"summary", "description"} <= set(rule["annotations"])
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {
        "DriftgateShadowErrorRateHigh",
        "DriftgateShadowAgreementLow",
        "DriftgatePromotionVerdictFail",
    } <= alerts


def test_recording_rules_and_alerts_pass_promtool_unit_tests(tmp_path: Path) -> None:
    write_rules(tmp_path, prometheus_rule_groups(render("cpu")))
    shutil.copy(HERE / "rules_test.yaml", tmp_path / "rules_test.yaml")
    output = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert "SUCCESS" in output
    # Every alert is exercised firing at least once.
    tests = yaml.safe_load((HERE / "rules_test.yaml").read_text())["tests"]
    fired = {a["alertname"] for t in tests for a in t.get("alert_rule_test", ()) if a["exp_alerts"]}
    groups = prometheus_rule_groups(render("cpu"))
    assert fired == {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def _verdict_series() -> list[dict[str, str]]:
    """driftgate_gate_verdict of two gateway pods: int8-w8a8 FAIL on one pod (PASS on the
    other), gptq-w4a16 PASS on both, awq-w4a16 UNDECIDED on one; magnitude-global-all-50 has no
    series (gateway just started); another namespace's FAIL must not leak in."""
    rows = [
        ("driftgate", "gw-a", "int8-w8a8", "-1"),
        ("driftgate", "gw-b", "int8-w8a8", "1"),
        ("driftgate", "gw-a", "gptq-w4a16", "1"),
        ("driftgate", "gw-b", "gptq-w4a16", "1"),
        ("driftgate", "gw-a", "awq-w4a16", "0"),
        ("driftgate", "gw-b", "awq-w4a16", "1"),
        ("staging", "gw-c", "gptq-w4a16", "-1"),
    ]
    return [
        {
            "series": f'driftgate_gate_verdict{{namespace="{ns}",pod="{pod}",variant="{variant}"}}',
            "values": f"{value}x10",
        }
        for ns, pod, variant, value in rows
    ]


EXPECTED_VERDICT = {"int8-w8a8": -1, "gptq-w4a16": 1, "awq-w4a16": 0, "magnitude-global-all-50": 0}


def _argo_condition(condition: str, result: list[float]) -> bool:
    """Argo Rollouts evaluates conditions with expr-lang; these two are plain comparisons."""
    m = re.fullmatch(r"result\[0\] == (-?\d+)", condition)
    assert m, condition
    return result[0] == float(m.group(1))


def test_argo_and_flagger_queries_read_the_most_pessimistic_replica(tmp_path: Path) -> None:
    objs = render("cpu")
    template = find(objs, "AnalysisTemplate", "driftgate-verdict")["spec"]
    metric = template["metrics"][0]
    argo_query: str = metric["provider"]["prometheus"]["query"]
    defaults = {a["name"]: a.get("value") for a in template["args"]}
    flagger_query: str = find(objs, "MetricTemplate", "driftgate-verdict")["spec"]["query"]

    cases = []
    for variant, expected in EXPECTED_VERDICT.items():
        args = {**defaults, "variant": variant}
        argo = argo_query
        for key, value in args.items():
            argo = argo.replace("{{args." + key + "}}", str(value))
        flagger = flagger_query.replace("{{ namespace }}", "driftgate").replace(
            "{{ variables.variant }}", variant
        )
        assert "{{" not in argo + flagger
        for query in (argo, flagger):
            cases.append(
                {
                    "expr": query.strip(),
                    "eval_time": "5m",
                    "exp_samples": [{"labels": "{}", "value": expected}],
                }
            )
        # The measurement's phase in Argo: PASS -> Successful, FAIL -> Failed, else Inconclusive.
        success = _argo_condition(metric["successCondition"], [expected])
        failure = _argo_condition(metric["failureCondition"], [expected])
        assert (success, failure) == {1: (True, False), -1: (False, True), 0: (False, False)}[expected]

    write_rules(tmp_path, [])
    (tmp_path / "queries_test.yaml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yaml"],
                "tests": [{"interval": "1m", "input_series": _verdict_series(), "promql_expr_test": cases}],
            },
            sort_keys=False,
        )
    )
    assert "SUCCESS" in promtool("test", "rules", "queries_test.yaml", cwd=tmp_path)


def test_dashboard_and_adapter_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each expression becomes a recording rule of a scratch rules file for `promtool check
    rules` (Grafana's $variables and the adapter's <<templates>> filled in as they would be)."""
    import json

    objs = render("cpu")
    dashboard = json.loads(find(objs, "ConfigMap", "driftgate-grafana-dashboard")["data"]["driftgate.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    grafana = {"$namespace": "driftgate", "$variant": "int8-w8a8|dense"}
    filled = []
    for e in exprs:
        for var, value in grafana.items():
            e = e.replace(var, value)
        assert "$" not in e, e
        m = re.fullmatch(r"label_values\((.+), *[a-z_]+\)", e)  # Grafana's function: check its selector
        filled.append(m.group(1) if m else e)
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    for rule in adapter:
        filled.append(rule["seriesQuery"])
        query = rule["metricsQuery"]
        series = rule["seriesQuery"].split("{")[0]
        query = query.replace("<<.Series>>", series)
        query = query.replace(
            "<<.LabelMatchers>>", 'namespace="driftgate",pod=~"vllm-dense-abc|vllm-dense-def"'
        )
        query = query.replace("<<.GroupBy>>", "pod")
        assert "<<" not in query
        filled.append(query)
    rules = [{"record": f"check:expr_{i}:valid", "expr": e} for i, e in enumerate(filled)]
    path = write_rules(tmp_path, [{"name": "dashboard-and-adapter", "rules": rules}])
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path), cwd=tmp_path)
    assert len(dashboard["panels"]) > 10
