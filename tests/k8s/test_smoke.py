"""Prove the manifests, not just their syntax: run the rendered cpu overlay's Deployments locally.

No cluster here, so this test plays kubelet for three pods of `kubectl kustomize k8s/overlays/cpu`:
the vLLM servers of `dense` and `int8-w8a8` (only two fit this 2-core box) and the gateway. For
each, it takes the rendered container's command, args and env and runs them as a local process
group, as the kubelet would:

- env: the image's ENV (parsed from k8s/Dockerfile) then the container's env, downward-API
  fieldRefs resolved from the pod template's labels and annotations, `$(VAR)` references in env,
  command and args expanded by Kubernetes' rules;
- volumes: every mountPath is mapped to a local directory: the checkpoint PVC to the local
  DRIFTGATE_HOME (~/.cache/driftgate: models/smollm2-135m-instruct, variants/<name>), emptyDirs
  to scratch directories, the gateway's projected config volume to a directory holding the
  rendered ConfigMap's config.yaml (see below) and a keys.yaml standing in for the Secret; the
  image's WORKDIR (/opt/driftgate) is this repository, so `python` and `driftgate` resolve through
  the image's PATH to .venv/bin;
- ports: each container port gets a free local port (the vLLM servers' `--port` argument, the
  gateway's configured ports); Service DNS names resolve to 127.0.0.1: a variant's `engine.url`
  goes through its Service's targetPort to the selected Deployment's container port;
- probes: readiness is decided by the rendered probes themselves (httpGet /health for vLLM, native
  gRPC health of driftgate.v1.Gateway and tcpSocket for the gateway).

Overrides, all forced by the box, not by the manifests: VLLM_CPU_OMP_THREADS_BIND is "0" for
dense and "1" for int8-w8a8 instead of "auto" (one core each; two servers binding the same cores
collapse); the gateway's config keeps only those two variants (the other five servers aren't
running); ports are remapped as above. The pods start together, as on a cluster: the gateway must
say NOT_SERVING until its primary's server is up.

Then: a request through the gateway (gRPC with an API key, and the OpenAI HTTP door) is answered
by the dense server and mirrored to the int8-w8a8 server and compared (driftgate_mirror_total,
driftgate_drift_*); the series the HPAs and canary templates read exist where the monitors scrape;
each process's memory stays under its container's limit; SIGTERM drains every process within its
terminationGracePeriodSeconds.

Starts two vLLM servers: run it under the shared lock, e.g.
    flock /tmp/driftgate-heavy.lock .venv/bin/pytest tests/k8s/test_smoke.py -m engine
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.manifests import K8S, REPO, Obj, find, gateway_config_text, kustomize_command, render

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(kustomize_command() is None, reason="kubectl/kustomize not installed"),
]

SMOKE_VARIANTS = ("dense", "int8-w8a8")
PATH_LISTS = ("PATH", "LD_PRELOAD")
"""Environment variables holding `:`-separated paths, each mapped from the container to this machine."""
CORES = {"dense": "0", "int8-w8a8": "1"}
"""VLLM_CPU_OMP_THREADS_BIND override per server: one core each on this 2-core box."""
BASE_IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH of python:3.11-slim, which k8s/Dockerfile's `ENV PATH=...:$PATH` extends."""
IMAGE_WORKDIR = "/opt/driftgate"
STARTUP_DEADLINE_S = 900.0
FRANCE = "The capital of France is"

_PDEATHSIG = """
import ctypes, os, signal, sys
ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execvpe(sys.argv[2], sys.argv[2:], os.environ)
"""
"""Exec wrapper: the process dies with this test's process even if pytest is killed outright."""


# ------------------------------------------------------------------ Kubernetes semantics, locally
def image_env() -> dict[str, str]:
    """The ENV of k8s/Dockerfile (later instructions see earlier values and the base PATH)."""
    text = re.sub(r"\\\n", " ", (K8S / "Dockerfile").read_text())
    env = {"PATH": BASE_IMAGE_PATH}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S+)", line[4:]):
                env[key] = re.sub(
                    r"\$\{?([A-Za-z_]+)\}?", lambda m: env.get(m.group(1), ""), value.strip('"')
                )
    return env


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables replaced, `$$` escapes, others kept."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, value)


def field_ref(template: Obj, path: str, pod_name: str) -> str:
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(template["metadata"][m.group(1)][m.group(2)])
    simple = {"metadata.name": pod_name, "metadata.namespace": "driftgate", "status.podIP": "127.0.0.1"}
    return simple[path]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantity_bytes(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "K": 1000, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if q.endswith(unit):
            return int(float(q[: -len(unit)]) * factor)
    return int(q)


@dataclass
class LocalPod:
    """One pod of a rendered Deployment, about to run as local processes."""

    deployment: Obj
    root: Path
    mounts: dict[str, Path] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    """container port name -> local port"""

    @property
    def name(self) -> str:
        return str(self.deployment["metadata"]["name"])

    @property
    def template(self) -> Obj:
        return dict(self.deployment["spec"]["template"])

    @property
    def spec(self) -> Obj:
        return dict(self.template["spec"])

    def container(self, name: str) -> Obj:
        (c,) = [
            c for c in (*self.spec.get("initContainers", ()), *self.spec["containers"]) if c["name"] == name
        ]
        return dict(c)

    def map_volumes(self, home: Path, files: dict[str, dict[str, str]]) -> None:
        """Local directories for the pod's volumes: the checkpoint claim is `home`, an in-memory
        /dev/shm stays /dev/shm, other emptyDirs are scratch, config volumes hold `files`."""
        volumes = {v["name"]: v for v in self.spec["volumes"]}
        for c in (*self.spec.get("initContainers", ()), *self.spec["containers"]):
            for m in c.get("volumeMounts", ()):
                volume, path = volumes[m["name"]], m["mountPath"]
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] == "driftgate-checkpoints"
                    local = home
                elif path == "/dev/shm":
                    assert volume["emptyDir"]["medium"] == "Memory"
                    local = Path("/dev/shm")
                else:
                    local = self.root / self.name / m["name"]
                    local.mkdir(parents=True, exist_ok=True)
                    for fname, text in files.get(m["name"], {}).items():
                        (local / fname).write_text(text)
                self.mounts[path] = local
        self.mounts[IMAGE_WORKDIR] = REPO

    def local_path(self, value: str) -> str:
        """`value` with a container path under a mount (or the image's WORKDIR) made local."""
        for prefix in sorted(self.mounts, key=len, reverse=True):
            if value == prefix or value.startswith(prefix + "/"):
                return str(self.mounts[prefix]) + value[len(prefix) :]
        return value

    def command(self, name: str, overrides: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
        """argv and environment of container `name`, as the kubelet would run it here."""
        c = self.container(name)
        env = image_env()
        for e in c.get("env", ()):
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
            else:
                env[e["name"]] = field_ref(
                    self.template, e["valueFrom"]["fieldRef"]["fieldPath"], f"{self.name}-0"
                )
        env.update(overrides or {})
        argv = [expand(a, env) for a in [*c.get("command", ()), *c.get("args", ())]]
        # Now from the container's file system to this machine's.
        argv = [self.local_path(a) for a in argv]
        env = {
            k: ":".join(self.local_path(p) for p in v.split(":")) if k in PATH_LISTS else self.local_path(v)
            for k, v in env.items()
        }
        if "--port" in argv:  # the server's listening port is an argument: remap it
            i = argv.index("--port") + 1
            (port,) = [p for p in c["ports"] if p["containerPort"] == int(argv[i])]
            argv[i] = str(self.ports[port["name"]])
        resolved = shutil.which(argv[0], path=env["PATH"])
        assert resolved, f"{argv[0]} not on the image's PATH {env['PATH']}"
        return [resolved, *argv[1:]], env

    def probe_ok(self, container: str, probe_name: str, grpc_health: Any = None) -> bool:
        probe = self.container(container)[probe_name]
        c = self.container(container)
        named = {p["name"]: p["containerPort"] for p in c.get("ports", ())}

        def local(port: int | str) -> int:
            name = port if isinstance(port, str) else next(n for n, p in named.items() if p == port)
            return self.ports[name]

        if "httpGet" in probe:
            url = f"http://127.0.0.1:{local(probe['httpGet']['port'])}{probe['httpGet']['path']}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1)) as r:
                    return 200 <= r.status < 400
            return False
        if "tcpSocket" in probe:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", local(probe["tcpSocket"]["port"])), 2),
            ):
                return True
            return False
        if "grpc" in probe:
            return bool(grpc_health(local(probe["grpc"]["port"]), probe["grpc"].get("service", "")))
        raise AssertionError(f"unknown probe {probe}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group_pids(self) -> list[int]:
        """The processes of this container's process group (API server, engine core, workers)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == self.popen.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def group_pss(self) -> int:
        """Proportional set size of the whole process group (API server, engine core, workers):
        shared pages counted once, as a cgroup's memory accounting does (RSS would count the
        torch libraries each process maps again)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.popen.pid:
                    rollup = (stat.parent / "smaps_rollup").read_text()
                    total += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) * 1024  # type: ignore[union-attr]
        return total


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Proc:
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-c", _PDEATHSIG, str(os.getpid()), *argv],
            env=env,
            cwd=REPO,  # the image's WORKDIR
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def group_alive(pgid: int) -> bool:
    from serving.engines.vllm_server import group_alive as alive

    return alive(pgid)


def stop(proc: Proc, grace_s: float) -> int | None:
    """SIGTERM to the group (what the kubelet sends after preStop), SIGKILL after the grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGTERM)
    try:
        return proc.popen.wait(grace_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)


# ------------------------------------------------------------------ clients
def grpc_health(port: int, service: str) -> bool | None:
    """SERVING -> True, NOT_SERVING -> False, no answer -> None."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=3
            )
        except grpc.RpcError:
            return None
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def metric_samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def has(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> bool:
    want = set(labels.items())
    return any(n == name and want <= ls for (n, ls) in samples)


# ------------------------------------------------------------------ the pods
def gateway_config_for(
    objs: list[Obj], gateway: LocalPod, servers: dict[str, LocalPod], keys_file: str
) -> str:
    """The rendered ConfigMap's config.yaml, reduced to the running variants, its ports, URLs and
    paths made local."""
    cfg = yaml.safe_load(gateway_config_text(objs))
    server = cfg["server"]
    c = gateway.container("gateway")
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    for key, port_name in (("grpc_port", "grpc"), ("http_port", "http"), ("metrics_port", "metrics")):
        assert server[key] == named[port_name]  # the config listens where the Deployment says
        server[key] = gateway.ports[port_name]
    cfg["variants"] = [v for v in cfg["variants"] if v["name"] in SMOKE_VARIANTS]
    for v in cfg["variants"]:
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", v["engine"]["url"]).groups()  # type: ignore[union-attr]
        service = find(objs, "Service", host)  # the DNS name is the Service's
        (sport,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
        target = servers[v["name"]]
        assert all(
            target.template["metadata"]["labels"].get(k) == val
            for k, val in service["spec"]["selector"].items()
        )
        v["engine"]["url"] = f"http://127.0.0.1:{target.ports[sport['targetPort']]}"
        v["model"] = gateway.local_path(v["model"])
    assert cfg["auth"]["keys_file"] == keys_file
    cfg["auth"]["keys_file"] = gateway.local_path(keys_file)
    return str(yaml.safe_dump(cfg, sort_keys=False))


@contextlib.contextmanager
def running(procs: list[Proc], grace: dict[str, float]) -> Iterator[list[Proc]]:
    try:
        yield procs
    finally:
        for p in procs:
            if p.alive():
                stop(p, grace.get(p.name, 10.0))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(10)
        deadline = time.monotonic() + 20
        while any(group_alive(p.popen.pid) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p.name for p in procs if group_alive(p.popen.pid)], "processes left behind"


def test_rendered_cpu_deployments_serve_and_mirror_a_request(tmp_path: Path) -> None:
    import grpc

    from compress.api import build_recipes
    from serving.auth import hash_key
    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
    from serving.home import driftgate_home
    from tests.conftest import model_dir

    home = driftgate_home()
    # What the compress Job would have written to the checkpoint claim: built here when missing (a fresh
    # CI machine has no variants; a current one is kept, ~10 s).
    build_recipes(model_dir(), [v for v in SMOKE_VARIANTS if v != "dense"])
    objs = render("cpu")
    servers = {v: LocalPod(find(objs, "Deployment", f"vllm-{v}"), tmp_path) for v in SMOKE_VARIANTS}
    for v, pod in servers.items():
        checkpoint = pod.template["metadata"]["annotations"]["driftgate.io/checkpoint"]
        pod.map_volumes(home, {})
        local = Path(pod.local_path(checkpoint))
        assert (local / "config.json").is_file(), (
            f"{v}: the manifest's checkpoint {local} is not what was built"
        )
        pod.ports = {p["name"]: free_port() for p in pod.container("vllm")["ports"]}

    gateway = LocalPod(find(objs, "Deployment", "driftgate"), tmp_path)
    gateway.ports = {p["name"]: free_port() for p in gateway.container("gateway")["ports"]}
    user_key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    keys = {
        "keys": [
            {"name": "smoke-user", "scope": "user", "sha256": hash_key(user_key)},
            {"name": "smoke-admin", "scope": "admin", "sha256": hash_key(admin_key)},
        ]
    }
    gateway.map_volumes(home, {})
    config_text = gateway_config_for(objs, gateway, servers, keys_file="/etc/driftgate/keys.yaml")
    # The projected volume: config.yaml from the ConfigMap, keys.yaml from the Secret.
    gateway.map_volumes(home, {"config": {"config.yaml": config_text, "keys.yaml": yaml.safe_dump(keys)}})

    logs = tmp_path / "logs"
    logs.mkdir()
    # Init containers first (they wait for the Job's checkpoint, which exists here).
    for v, pod in servers.items():
        argv, env = pod.command("wait-for-checkpoint")
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{v} init container: {done.stdout}{done.stderr}"

    procs: list[Proc] = []
    grace = {}
    for v, pod in servers.items():
        argv, env = pod.command("vllm", overrides={"VLLM_CPU_OMP_THREADS_BIND": CORES[v]})
        assert argv[1:4] == ["-m", "vllm.entrypoints.openai.api_server", "--model"]
        assert argv[argv.index("--served-model-name") + 1] == v
        assert argv[argv.index("--model") + 1] == pod.local_path(
            pod.template["metadata"]["annotations"]["driftgate.io/checkpoint"]
        )
        procs.append(start(f"vllm-{v}", argv, env, logs))
        grace[f"vllm-{v}"] = float(pod.spec["terminationGracePeriodSeconds"])
    argv, env = gateway.command("gateway")
    assert Path(argv[0]) == REPO / ".venv" / "bin" / "driftgate"
    procs.append(start("driftgate", argv, env, logs))
    grace["driftgate"] = float(gateway.spec["terminationGracePeriodSeconds"])
    by_name = {p.name: p for p in procs}

    def logs_tail() -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)

    with running(procs, grace):
        t0 = time.monotonic()
        ready_at: dict[str, float] = {}
        not_serving_before_primary = None
        while len(ready_at) < 3:
            assert time.monotonic() - t0 < STARTUP_DEADLINE_S, (
                f"not ready after {STARTUP_DEADLINE_S}s:\n{logs_tail()}"
            )
            for p in procs:
                assert p.alive(), f"{p.name} exited with {p.popen.returncode}:\n{p.tail()}"
            for v, pod in servers.items():
                name = f"vllm-{v}"
                if (
                    name not in ready_at
                    and pod.probe_ok("vllm", "startupProbe")
                    and pod.probe_ok("vllm", "readinessProbe")
                ):
                    ready_at[name] = time.monotonic() - t0
            if "driftgate" not in ready_at and gateway.probe_ok("gateway", "startupProbe"):
                serving = gateway.probe_ok("gateway", "readinessProbe", grpc_health)
                if "vllm-dense" not in ready_at and not servers["dense"].probe_ok("vllm", "readinessProbe"):
                    # Up, but its primary isn't: the gateway must keep itself out of the Service.
                    assert not serving, "gateway SERVING before its primary's server is ready"
                    not_serving_before_primary = True
                elif serving:
                    ready_at["driftgate"] = time.monotonic() - t0
            time.sleep(0.5)
        print(f"\nready after (s): { {k: round(v, 1) for k, v in ready_at.items()} }")
        assert gateway.probe_ok("gateway", "livenessProbe")
        for pod in servers.values():
            assert pod.probe_ok("vllm", "livenessProbe")

        grpc_port = gateway.ports["grpc"]
        user = (("authorization", f"Bearer {user_key}"),)
        admin = (("authorization", f"Bearer {admin_key}"),)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            deadline = time.monotonic() + 60  # the supervisor attaches the shadow once its server answers
            while True:
                listed = {
                    v.name: v.ready
                    for v in stub.ListVariants(pb.ListVariantsRequest(), metadata=user, timeout=10).variants
                }
                if all(listed.get(v) for v in SMOKE_VARIANTS) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert listed == dict.fromkeys(SMOKE_VARIANTS, True), listed

            with pytest.raises(grpc.RpcError) as no_key:
                stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=4), timeout=30)
            assert no_key.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answers = [
                stub.Generate(pb.GenerateRequest(prompt=p, max_tokens=8), metadata=user, timeout=120)
                for p in (FRANCE, "The capital of Italy is")
            ]
            assert all(
                a.variant == "dense" and a.text.strip() and a.completion_tokens > 0 for a in answers
            ), answers
            print(f"gRPC answers: {[a.text for a in answers]}")
            # The admin RPC: a user key may not change traffic, the admin key may.
            change = pb.SetTrafficRequest(variant="int8-w8a8", sample_rate=1.0)
            with pytest.raises(grpc.RpcError) as denied:
                stub.SetTraffic(change, metadata=user, timeout=30)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            changed = stub.SetTraffic(change, metadata=admin, timeout=30)
            assert {v.name: v.sample_rate for v in changed.variants}["int8-w8a8"] == 1.0

        body = json.dumps(
            {"model": "driftgate", "prompt": FRANCE, "max_tokens": 8, "temperature": 0}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{gateway.ports['http']}/v1/completions",
            data=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {user_key}"},
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            completion = json.loads(r.read())
        assert completion["choices"][0]["text"].strip(), completion
        assert completion["choices"][0]["text"] == answers[0].text  # greedy: same answer both doors

        # Where the ServiceMonitor / PodMonitor scrape: the gateway's and the servers' series.
        monitor = find(objs, "ServiceMonitor", "driftgate")["spec"]["endpoints"][0]
        gateway_metrics = f"http://127.0.0.1:{gateway.ports[monitor['port']]}{monitor['path']}"
        deadline = time.monotonic() + 180
        while True:
            samples = metric_samples(gateway_metrics)
            compared = total(samples, "driftgate_mirror_total", variant="int8-w8a8", outcome="compared")
            if compared >= 3 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert compared >= 3, f"mirrored copies compared: {compared}\n{logs_tail()}"
        assert total(samples, "driftgate_drift_answers_total", variant="int8-w8a8") >= 3
        assert total(samples, "driftgate_drift_token_agreement_count", variant="int8-w8a8") >= 3
        assert total(samples, "driftgate_drift_kl_count", variant="int8-w8a8") >= 3  # teacher-forced scoring
        assert total(samples, "driftgate_requests_total", variant="dense", role="primary", code="OK") >= 3
        assert has(samples, "driftgate_requests_in_flight", variant="dense")  # the gateway HPA's input
        assert has(samples, "driftgate_gate_verdict", variant="int8-w8a8")  # Argo Rollouts / Flagger input
        assert total(samples, "driftgate_gc_frozen_objects") > 50_000  # server.gc_freeze: the start-up heap
        assert total(samples, "driftgate_gc_pause_seconds_count", generation="0") >= 1
        agreement = total(samples, "driftgate_drift_token_agreement_sum", variant="int8-w8a8") / total(
            samples, "driftgate_drift_token_agreement_count", variant="int8-w8a8"
        )
        print(f"int8-w8a8 vs dense: {compared:.0f} compared, mean token agreement {agreement:.2f}")
        podmonitor = find(objs, "PodMonitor", "vllm")["spec"]["podMetricsEndpoints"][0]
        for v, pod in servers.items():
            vllm = metric_samples(f"http://127.0.0.1:{pod.ports[podmonitor['port']]}{podmonitor['path']}")
            for series in (
                "vllm:num_requests_waiting",
                "vllm:num_requests_running",
            ):  # the variant HPAs' input
                assert has(vllm, series, model_name=v), (v, series)
            assert total(vllm, "vllm:request_success_total", model_name=v) >= 1

        # Memory: each process group fits its container's limit.
        for p in procs:
            pod = gateway if p.name == "driftgate" else servers[p.name.removeprefix("vllm-")]
            c = pod.container("gateway" if p.name == "driftgate" else "vllm")
            pss, limit = p.group_pss(), quantity_bytes(c["resources"]["limits"]["memory"])
            print(f"{p.name}: PSS {pss / 2**30:.2f} GiB (limit {c['resources']['limits']['memory']})")
            assert 0 < pss < 0.8 * limit, f"{p.name}: less than 20% headroom"

        # Every process of each server runs with the libraries the overlay preloads (LD_PRELOAD).
        for v, pod in servers.items():
            preload = [Path(p).name for p in pod.command("vllm")[1]["LD_PRELOAD"].split(":")]
            pids = by_name[f"vllm-{v}"].group_pids()
            assert preload == ["libtcmalloc_minimal.so.4", "libiomp5.so"] and len(pids) >= 2, (v, pids)
            titles = []
            for pid in pids:
                with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/maps") as f:
                    maps = f.read()
                    assert all(name in maps for name in preload), (v, pid, preload)
                    titles.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
            # DRIFTGATE_EXECUTOR uni: the model runs in the engine core, no worker process.
            assert any(b"EngineCore" in t for t in titles) and not any(b"Worker" in t for t in titles), titles

        # Each server compiled into its pod's /tmp emptyDir (HOME), where a restarted container finds it.
        for v, pod in servers.items():
            log = by_name[f"vllm-{v}"].log.read_text(errors="replace")
            kept = re.search(
                r"(?:saved AOT compiled function to|Directly load AOT compilation from path) (\S+)", log
            )
            assert kept and kept.group(1).startswith(pod.local_path("/tmp") + "/"), (
                v,
                by_name[f"vllm-{v}"].tail(),
            )

        # SIGTERM (after the preStop sleep, which only delays it): each drains and exits in time.
        codes = {
            name: stop(by_name[name], grace[name])
            for name in ("driftgate", *(f"vllm-{v}" for v in SMOKE_VARIANTS))
        }
        print(f"exit codes after SIGTERM: {codes}")
        assert codes["driftgate"] == 0, by_name["driftgate"].tail()
        assert all(code is not None for code in codes.values()), codes
        print(f"gateway seen NOT_SERVING while its primary was starting: {bool(not_serving_before_primary)}")
