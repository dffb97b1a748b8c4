"""Extracts the openAPIV3Schema of the custom resources the manifests use from their CRDs.

Reads the CRD YAML straight from each project's git repository (a clone or a bare mirror) at
HEAD and writes one compact JSON file per kind next to this script:

    .venv/bin/python tests/k8s/schemas/extract.py \\
        --prometheus-operator PATH/prometheus-operator --argo-rollouts PATH/argo-rollouts \\
        --flagger PATH/flagger

Sources, versions and commits: README.md here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCES = (
    (
        "prometheus_operator",
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "ServiceMonitor",
        "v1",
    ),
    (
        "prometheus_operator",
        "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
        "PodMonitor",
        "v1",
    ),
    (
        "prometheus_operator",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        "PrometheusRule",
        "v1",
    ),
    ("argo_rollouts", "manifests/crds/analysis-template-crd.yaml", "AnalysisTemplate", "v1alpha1"),
    ("flagger", "artifacts/flagger/crd.yaml", "MetricTemplate", "v1beta1"),
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prometheus-operator", type=Path, required=True)
    parser.add_argument("--argo-rollouts", type=Path, required=True)
    parser.add_argument("--flagger", type=Path, required=True)
    args = parser.parse_args()
    for repo_arg, path, kind, version in SOURCES:
        repo: Path = getattr(args, repo_arg)
        commit = git(repo, "rev-parse", "HEAD").strip()
        for doc in yaml.safe_load_all(git(repo, "show", f"HEAD:{path}")):
            if (
                not doc
                or doc.get("kind") != "CustomResourceDefinition"
                or doc["spec"]["names"]["kind"] != kind
            ):
                continue
            (served,) = [v for v in doc["spec"]["versions"] if v["name"] == version]
            out = HERE / f"{doc['spec']['group']}_{version}_{kind.lower()}.json"
            schema = served["schema"]["openAPIV3Schema"]
            out.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
            print(f"{out.name}: {repo.name} {commit[:12]} {path}")


if __name__ == "__main__":
    main()
