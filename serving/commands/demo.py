"""`driftgate demo` (what `make demo` runs): the main job, end to end.

Pull the dense model, build the compressed variants (cached), start the gateway on
configs/demo.yaml, show greedy answers of every variant side by side, send mirrored traffic,
replay the probe set through the gateway as live traffic, and print the drift report (probes,
mirror comparison, throughput per variant) with plots under $DRIFTGATE_HOME/reports/<timestamp>/.

The terminal shows the demo's own lines and one progress bar per step (variants built, engines
started, variants probed). Everything libraries print (vLLM, llm-compressor, their subprocesses)
goes to `demo.log` in the report directory: the process's stdout/stderr file descriptors point
there while the demo runs, and the demo writes to a duplicate of the terminal's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc

from serving.config import Config, Role, load_config, validate
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


@contextlib.contextmanager
def _terminal_only(log_path: Path) -> Iterator[TextIO]:
    """Points fds 1 and 2 (this process's and its children's output) at `log_path`; yields a
    stream on the terminal, which `print` also uses meanwhile. Restores everything on exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        with contextlib.redirect_stdout(terminal):
            yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        terminal.close()


def _bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="variant", file=sys.stdout, leave=True, dynamic_ncols=True)


async def _verdicts(stub: Any, report: dict[str, Any], config: Config, out: Path) -> None:
    """The promotion verdicts: live (mirrored traffic and probe rounds, `GetVerdict`) and on the
    probe replay's report (the probe check alone, judged once); both written to verdicts.json."""
    from serving.commands.gate import from_proto
    from serving.gate.judge import judge_report
    from serving.gate.verdict import format_table as verdict_table
    from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb

    live = [from_proto(v) for v in (await stub.GetVerdict(pb.GetVerdictRequest())).verdicts]
    offline = judge_report(report, config.gate)
    _say("promotion verdicts on the live traffic (GetVerdict; `driftgate gate --target` exits on it)")
    print(verdict_table(live))
    _say("promotion verdicts on the probe report (`driftgate gate --report report.json`)")
    print(verdict_table(offline))
    dump = {"live": [v.to_dict() for v in live], "report": [v.to_dict() for v in offline]}
    (out / "verdicts.json").write_text(json.dumps(dump, indent=2) + "\n")


def _advance(bar: Any) -> Callable[[str], None]:
    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update()

    return step


async def _run(config: Config, probes: str, limit: int, out: Path) -> None:
    from serving.app import start_app, start_concurrency
    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
    from serving.probes.batch import run_gateway, write_outputs
    from serving.probes.facts import load_probe_set
    from serving.probes.report import format_table

    n = start_concurrency(config)
    _say(f"starting the gateway with {len(config.variants)} vLLM engines ({n} at once)")
    t0 = time.perf_counter()
    with _bar(len(config.variants), "engines started") as bar:
        app = await start_app(config, progress=_advance(bar), freeze=True)
    print(
        f"gateway ready on {app.address} in {time.perf_counter() - t0:.0f} s; metrics on :{app.metrics_port}"
    )
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
            with _bar(len(config.variants), "variants probed") as bar:
                run = await run_gateway(stub, facts, progress=_advance(bar))
            paths = write_outputs(run, facts, out)
            (out / "drift.json").write_text(json.dumps(drift_rows, indent=2) + "\n")
            report = json.loads((out / "report.json").read_text())
            _say("knowledge probes (P@1 on greedy answers; recovery = P@1 / primary P@1)")
            print(format_table(report))
            _say("throughput per variant during the probe replay")
            for name, cost in run.costs().items():
                size = f"{cost['bytes'] / 1e6:7.1f} MB on disk" if "bytes" in cost else ""
                print(f"{name:26s} {cost['tokens_per_s']:7.1f} tok/s   {size}")
            await _verdicts(stub, report, config, out)
            _check_metrics(app.metrics_port)
            print("\nwritten: " + ", ".join(str(p) for p in paths))
    finally:
        await app.stop()


def _build_variants(skip: dict[str, str]) -> None:
    from compress.api import DEMO_RECIPES, build_recipes

    recipes = [r for r in DEMO_RECIPES if r not in skip]
    _say("building the compressed variants (cached; llm-compressor runs in .venv-compress)")
    with _bar(len(recipes), "variants built") as bar:
        for recipe in recipes:
            bar.set_postfix_str(recipe)
            (path,) = build_recipes(None, [recipe]).values()
            bar.update()
            bar.write(f"{recipe:26s} {path}")


def unservable_here(config: Config) -> dict[str, str]:
    """Name → reason for each in-process variant of `config` other than the primary that this CPU's
    vLLM build cannot serve: read from its checkpoint once built (`serving.engines.factory.unservable`),
    else from the demo recipe of the same name (so the demo does not build what it cannot serve)."""
    from compress.api import DEMO_RECIPES
    from compress.recipes import load_recipe
    from serving.engines.cpu import bits_gap, cpu_flags
    from serving.engines.factory import unservable

    flags = cpu_flags()
    local = [v for v in config.variants if not v.remote and v.role is not Role.PRIMARY]
    built = [v for v in local if (Path(v.model_path) / "config.json").is_file()]
    gaps = unservable(built, flags)
    for v in local:
        if v not in built and v.name in DEMO_RECIPES:
            if why := bits_gap(load_recipe(v.name).weight_bits, flags):
                gaps[v.name] = why
    return {v.name: gaps[v.name] for v in local if v.name in gaps}  # in the config's order


def drop_variants(config: Config, names: Iterable[str]) -> None:
    """Removes the named variants from `config` (ConfigError if what is left does not validate)."""
    gone = set(names)
    if gone:
        config.variants = [v for v in config.variants if v.name not in gone]
        validate(config)


def _skip_unservable(config: Config) -> dict[str, str]:
    skip = unservable_here(config)
    drop_variants(config, skip)
    if skip:
        _say("not built or served on this CPU: " + ", ".join(skip))
        for why in sorted(set(skip.values())):
            print(f"  {why}")
    return skip


def run_demo(args: argparse.Namespace) -> int:
    from compress.api import CompressError
    from serving.commands.model_pull import pull
    from serving.probes.batch import default_report_dir

    config = load_config(args.config)
    out = default_report_dir()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "demo.log"
    # vLLM's own log handler would bind the stream `print` writes to at its import (the terminal,
    # inside `_terminal_only`): let its records go through the root logger to the log file instead.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = 0
    with _terminal_only(log_path):
        print(f"driftgate demo: library logs go to {log_path}")
        try:
            _say("pulling the dense model (SmolLM2-135M-Instruct, bf16)")
            print(pull())
            _build_variants(_skip_unservable(config))
            asyncio.run(_run(config, args.probes, args.limit, out))
        except CompressError as exc:
            print(f"driftgate demo: compression failed: {exc}")
            code = 1
        _say(f"report: {out}")
        print(f"full library logs: {log_path}")
    return code
