"""Rendering and reading the Kubernetes manifests of k8s/ (shared by the tests of tests/k8s).

`render(overlay)` runs `kubectl kustomize` (or `kustomize build`) once per overlay and session.
Run as a script to refresh the committed rendered output, k8s/rendered/<overlay>.yaml:

    .venv/bin/python -m tests.k8s.manifests --write
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu")
SCHEMAS = Path(__file__).resolve().parent / "schemas"
GATEWAY_CONFIG = K8S / "base" / "gateway" / "config.yaml"
ADAPTER_VALUES = K8S / "components" / "monitoring" / "prometheus-adapter-values.yaml"

Obj = dict[str, Any]

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_v1_podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
    ("argoproj.io/v1alpha1", "AnalysisTemplate"): "argoproj.io_v1alpha1_analysistemplate.json",
    ("flagger.app/v1beta1", "MetricTemplate"): "flagger.app_v1beta1_metrictemplate.json",
}
"""Custom resources the overlays render, and the openAPIV3Schema of each (tests/k8s/schemas/README.md)."""


def kustomize_command() -> list[str] | None:
    """`kubectl kustomize` or `kustomize build`, whichever is installed."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@functools.cache
def render_text(overlay: str) -> str:
    command = kustomize_command()
    if command is None:
        raise RuntimeError("neither kubectl nor kustomize is installed")
    done = subprocess.run(
        [*command, str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"kustomize {overlay} failed:\n{done.stderr}")
    return done.stdout


def render(overlay: str) -> list[Obj]:
    """The overlay's objects, freshly parsed (callers may modify them)."""
    return [d for d in yaml.safe_load_all(render_text(overlay)) if d]


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def pod_templates(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) of every Deployment and Job."""
    for o in objs:
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield o, o["spec"]["template"]


def containers(pod_spec: Obj) -> list[Obj]:
    return [*pod_spec.get("initContainers", ()), *pod_spec["containers"]]


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) matches `labels`."""
    if selector is None:
        return False
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or ():
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def service_selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """Whether a Service's selector (a plain map) picks pods with `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def gateway_config_text(objs: list[Obj]) -> str:
    """config.yaml of the ConfigMap the gateway Deployment mounts (found through its volume)."""
    pod = find(objs, "Deployment", "driftgate")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    names = [s["configMap"]["name"] for s in volume["projected"]["sources"] if "configMap" in s]
    (name,) = names
    return str(find(objs, "ConfigMap", name)["data"]["config.yaml"])


def gateway_config(objs: list[Obj]) -> dict[str, Any]:
    return dict(yaml.safe_load(gateway_config_text(objs)))


def prometheus_rule_groups(objs: list[Obj]) -> list[Obj]:
    (rule,) = of_kind(objs, "PrometheusRule")
    return list(rule["spec"]["groups"])


def schema(api_version: str, kind: str) -> Obj:
    return dict(json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text()))


def strict_schema(node: Any) -> Any:
    """A CRD schema made strict: objects that list their `properties` get additionalProperties:
    false unless they say otherwise (x-kubernetes-preserve-unknown-fields, additionalProperties).
    The API server prunes unknown fields silently; here a misspelt field is an error."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if isinstance(out.get("pattern"), str) and out["pattern"].startswith("^(?i)"):
        out["pattern"] = "(?i)^" + out["pattern"][5:]  # Go allows inline flags anywhere, Python first
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate_custom_resource(obj: Obj) -> None:
    """Validates `obj` against its CRD's strict schema (OpenAPI v3 schemas are JSON Schema draft 4
    with Kubernetes extensions, which the validator ignores); raises jsonschema.ValidationError."""
    import jsonschema

    validator = jsonschema.Draft4Validator(strict_schema(schema(obj["apiVersion"], obj["kind"])))
    validator.validate(obj)


def rendered_path(overlay: str) -> Path:
    return K8S / "rendered" / f"{overlay}.yaml"


HEADER = (
    "# Generated by `.venv/bin/python -m tests.k8s.manifests --write` from k8s/overlays/{0}: do not edit.\n"
)


def rendered_file_text(overlay: str) -> str:
    return HEADER.format(overlay) + render_text(overlay)


def vllm_metric_names() -> set[str]:
    """vllm:* metric names the installed vLLM defines (its Prometheus logger's source)."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")  # located, not imported (importing vLLM takes seconds)
    assert spec is not None and spec.origin is not None, "vllm is not installed"
    root = Path(spec.origin).parent
    names: set[str] = set()
    for path in (root / "v1" / "metrics").glob("*.py"):
        names |= set(re.findall(r"\"(vllm:[a-z_]+)\"", path.read_text()))
    return names


def main(argv: list[str]) -> int:
    if argv[1:] != ["--write"]:
        print(__doc__)
        return 2
    for overlay in OVERLAYS:
        rendered_path(overlay).parent.mkdir(exist_ok=True)
        rendered_path(overlay).write_text(rendered_file_text(overlay))
        print(f"wrote {rendered_path(overlay).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
