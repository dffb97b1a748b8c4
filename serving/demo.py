"""`driftgate demo` (what `make demo` runs): the main job, end to end.

Pull the dense model, build the compressed variants (cached), start the gateway on
configs/demo.yaml, show greedy answers of every variant side by side, send mirrored traffic,
replay the probe set through the gateway as live traffic, and print the drift report (probes,
mirror comparison, throughput per variant) with plots under $DRIFTGATE_HOME/reports/<timestamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from serving.config import Config, load_config
from serving.probes.facts import stratified

CAPITALS = [
    "The capital of France is",
    "The capital of Japan is",
    "The capital of Italy is",
    "The capital of Egypt is",
    "The capital of Canada is",
]
MIRRORED_PROMPTS = [
    *CAPITALS,
    "The largest planet in the solar system is",
    "Water boils at a temperature of",
    "The chemical symbol for gold is",
    "The author of Romeo and Juliet is",
    "The longest river in Africa is",
    "The speed of light is about",
    "Photosynthesis is the process by which",
    "The first man to walk on the moon was",
    "A CPU cache is",
    "The currency of the United Kingdom is the",
    "Mount Everest is located in",
]
MIRRORED_REQUESTS = 16


def _say(msg: str) -> None:
    print(f"\n=== {msg}", flush=True)


async def _side_by_side(stub: Any, names: list[str]) -> None:
    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb

    _say("greedy answers, every variant pinned in turn (first 8 tokens)")
    for prompt in CAPITALS:
        print(f"{prompt!r}")
        for name in names:
            t0 = time.perf_counter()
            reply = await stub.Generate(
                pb.GenerateRequest(prompt=prompt, max_tokens=8, temperature=0.0, variant=name)
            )
            answer = reply.text.strip().splitlines()[0] if reply.text.strip() else ""
            print(f"   {name:26s} {time.perf_counter() - t0:6.2f} s  {answer!r}")


async def _mirrored(stub: Any, gateway: Any) -> None:
    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb

    _say(
        f"{MIRRORED_REQUESTS} greedy requests to the gateway (answered by the primary, mirrored to every shadow)"
    )
    gateway.drift_summary(reset=True)
    prompts = MIRRORED_PROMPTS[:MIRRORED_REQUESTS]
    t0 = time.perf_counter()
    replies = await asyncio.gather(
        *(stub.Generate(pb.GenerateRequest(prompt=p, max_tokens=24, temperature=0.0)) for p in prompts)
    )
    took = time.perf_counter() - t0
    answered = {r.variant for r in replies}
    print(
        f"all {len(replies)} answered by {sorted(answered)} in {took:.1f} s; waiting for the shadows' comparisons"
    )
    await gateway.mirror.drain()


async def _drift_table(stub: Any) -> list[dict[str, Any]]:
    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb

    resp = await stub.GetDriftSummary(pb.GetDriftSummaryRequest())
    _say(f"mirror comparison vs primary {resp.primary!r} (GetDriftSummary)")
    print(f"{'variant':26s} {'compared':>8s} {'dropped':>7s} {'error':>5s} {'timeout':>7s} {'exact':>6s} "
          f"{'tok agr':>7s} {'1st div':>7s} {'TF agr':>7s} {'KL':>7s}")  # fmt: skip
    rows = []
    for v in resp.variants:
        tf = v.mean_teacher_forced_agreement if v.HasField("mean_teacher_forced_agreement") else float("nan")
        kl = v.mean_kl if v.HasField("mean_kl") else float("nan")
        print(f"{v.variant:26s} {v.compared:8d} {v.dropped:7d} {v.errors:5d} {v.timeouts:7d} "
              f"{v.exact_match_rate:6.2f} {v.mean_token_agreement:7.3f} {v.mean_first_divergence_tokens:7.2f} "
              f"{tf:7.3f} {kl:7.3f}")  # fmt: skip
        rows.append({"variant": v.variant, "compared": v.compared, "exact_match_rate": v.exact_match_rate,
                     "token_agreement": v.mean_token_agreement, "teacher_forced_agreement": tf, "kl": kl})  # fmt: skip
    return rows


def _check_metrics(port: int | None) -> None:
    import shutil
    import subprocess

    if port is None:
        return
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    promtool = shutil.which("promtool")
    verdict = "promtool not installed"
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
        verdict = "promtool check metrics: OK" if check.returncode == 0 else check.stdout.decode()[:500]
    series = sum(1 for line in body.decode().splitlines() if line.startswith("driftgate_"))
    print(f"/metrics on :{port}: {series} driftgate_* samples; {verdict}")


async def _run(config: Config, probes: str, limit: int) -> Path:
    from serving.app import start_app
    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
    from serving.probe_run import default_report_dir, load_probe_set, run_gateway, write_outputs
    from serving.probes.report import format_table

    _say(f"starting the gateway with {len(config.variants)} vLLM engines (one after another)")
    t0 = time.perf_counter()
    app = await start_app(config)
    print(
        f"gateway ready on {app.address} in {time.perf_counter() - t0:.0f} s; metrics on :{app.metrics_port}"
    )
    out = default_report_dir()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            await _side_by_side(stub, [v.name for v in config.variants])
            await _mirrored(stub, app.gateway)
            drift_rows = await _drift_table(stub)
            facts = stratified(load_probe_set(probes), limit)
            _say(
                f"replaying {len(facts)} probe facts from {probes} through the gateway, pinned to each variant"
            )
            run = await run_gateway(stub, facts)
            paths = write_outputs(run, facts, out)
            (out / "drift.json").write_text(json.dumps(drift_rows, indent=2) + "\n")
            report = json.loads((out / "report.json").read_text())
            _say("knowledge probes (P@1 on greedy answers; recovery = P@1 / primary P@1)")
            print(format_table(report))
            _say("throughput per variant during the probe replay")
            for name, cost in run.costs().items():
                size = f"{cost['bytes'] / 1e6:7.1f} MB on disk" if "bytes" in cost else ""
                print(f"{name:26s} {cost['tokens_per_s']:7.1f} tok/s   {size}")
            _check_metrics(app.metrics_port)
            print("\nwritten: " + ", ".join(str(p) for p in paths))
    finally:
        await app.stop()
    return out


def run_demo(args: argparse.Namespace) -> int:
    from compress.api import build_demo_set
    from serving.model_pull import pull

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the demo's output readable
    _say("pulling the dense model (SmolLM2-135M-Instruct, bf16)")
    print(pull())
    _say("building the compressed variants (cached)")
    for name, path in build_demo_set().items():
        print(f"{name:26s} {path}")
    config = load_config(args.config)
    out = asyncio.run(_run(config, args.probes, args.limit))
    _say(f"report: {out}")
    return 0
