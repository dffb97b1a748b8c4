"""`driftgate soak` (`make soak`): the gateway under saturating load for a long while, one shadow
killed and restored mid-run, with a report and pass criteria (see docs/reliability.md).

The gateway runs as its own process (`driftgate serve` on free ports) so its RSS is its own; the
remote variants' vLLM servers, if the config has any, are started here. Once health is SERVING,
locust runs headless (loadtest/locustfile.py, closed loop, `users` in flight) for `duration_s`.
Every `sample_s` the gateway's RSS and /metrics are sampled. At `kill_at` of the run the victim
shadow is killed: an in-process engine's vLLM engine-core process (the supervisor marks it
not-ready and restarts it), or a remote variant's server (killed, then started again here). After
the load: wait until every engine is idle, SIGTERM the gateway, write report.json and report.png
under `out`, print the checks, exit 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.commands.soak_report import Events, Sample, build_report, by_label, checks, parse_metrics, plot
from serving.commands.soak_report import summary as summarize
from serving.config import Config, Role, load_config
from serving.engines.factory import check_checkpoints
from serving.errors import ConfigError
from serving.home import driftgate_home

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"
_SERVING = re.compile(r"serving gRPC on (\S+), HTTP on :\S+, metrics on :(\d+)")


def _f(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass
class SoakOptions:
    """What to run and what passes."""

    config: str = _f("configs/demo.yaml", "the gateway's config (its ports are replaced by free ones)")
    duration_s: float = _f(600.0, "seconds of load")
    users: int = _f(32, "locust users, each one request in flight (closed loop): saturation")
    max_tokens: int = _f(16, "max_tokens of every request")
    out: str = _f("", "report folder (default: $DRIFTGATE_HOME/reports/soak-<time>)")
    victim: str = _f("", "the shadow to kill (default: the config's first shadow)")
    kill_at: float = _f(0.3, "when to kill it, as a fraction of the load's duration")
    sample_s: float = _f(5.0, "seconds between samples of RSS and /metrics")
    warmup_s: float = _f(60.0, "RSS growth is measured from the first sample after this")
    rss_bound_mib: float = _f(256.0, "the largest RSS growth (peak - post-warm-up baseline) that passes")
    startup_timeout_s: float = _f(3600.0, "seconds the gateway may take to become SERVING")
    restore_timeout_s: float = _f(900.0, "seconds the killed shadow may take to serve again")
    settle_timeout_s: float = _f(300.0, "seconds after the load for every engine to go idle")


def scrape(url: str) -> dict[Any, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return parse_metrics(resp.read().decode())


@dataclass
class Run:
    """The processes of one soak and what was seen of them."""

    opts: SoakOptions
    config: Config
    out: Path
    gateway: asyncio.subprocess.Process | None = None
    address: str = ""
    metrics_url: str = ""
    samples: list[Sample] = field(default_factory=list)
    events: Events = field(default_factory=Events)
    t0: float = 0.0
    remote: Any = None
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def now(self) -> float:
        return time.time() - self.t0

    async def metrics(self) -> dict[Any, float]:
        return await asyncio.to_thread(scrape, self.metrics_url)

    async def sample(self) -> Sample:
        import psutil

        assert self.gateway is not None
        proc = psutil.Process(self.gateway.pid)
        children = 0
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # one may end meanwhile (a killed engine core)
                children += child.memory_info().rss
        s = Sample(self.now(), proc.memory_info().rss, children, await self.metrics())
        self.samples.append(s)
        return s


async def start_gateway(run: Run) -> None:
    """`driftgate serve` on free ports; returns once it printed its address (engines built)."""
    cmd = [sys.executable, "-m", "serving.commands.main", "serve", "--config", run.opts.config]
    cmd += ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--http-port", "-1"]
    log = (run.out / "gateway.log").open("ab")
    started = time.monotonic()
    run.gateway = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True
    )
    assert run.gateway.stdout is not None
    async with asyncio.timeout(run.opts.startup_timeout_s):
        while line := (await run.gateway.stdout.readline()).decode():
            log.write(line.encode())
            if found := _SERVING.search(line):
                run.address, port = found.group(1), found.group(2)
                run.metrics_url = f"http://127.0.0.1:{port}/metrics"
                break
    if not run.address:
        raise RuntimeError(f"the gateway exited ({await run.gateway.wait()}): see {run.out / 'gateway.log'}")
    run.background.append(asyncio.create_task(_drain(run.gateway.stdout, log)))
    await wait_for(run, lambda m: all(by_label(m, "driftgate_variant_ready", "variant").values()), 1800)
    run.events.startup_s = round(time.monotonic() - started, 1)


async def _drain(stream: asyncio.StreamReader, log: Any) -> None:
    while line := await stream.readline():
        log.write(line)
        log.flush()


async def wait_for(run: Run, ok: Any, timeout_s: float, every_s: float = 1.0) -> bool:
    """Polls /metrics until `ok(metrics)`; False after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            if ok(await run.metrics()):
                return True
        await asyncio.sleep(every_s)
    return False


_CORE = re.compile(
    r"\(EngineCore pid=(\d+)\).*? Initializing a V1 LLM engine .*? with config: model='([^']+)'"
)


def engine_core(run: Run, name: str) -> int:
    """The live engine-core process of in-process variant `name`: vLLM's engine core logs its pid
    and model as it starts ("(EngineCore pid=N) ... Initializing a V1 LLM engine ... model='PATH'"
    in the gateway's log); engines start in parallel, so the order of the processes says nothing."""
    import psutil

    assert run.gateway is not None
    variant = run.config.variant(name)
    assert variant is not None
    path = variant.model_path
    if sum(v.model_path == path for v in run.config.variants) > 1:
        raise RuntimeError(f"two variants serve {path}: cannot tell their engine cores apart")
    text = (run.out / "gateway.log").read_text(errors="replace")
    logged = [int(m.group(1)) for m in _CORE.finditer(text) if m.group(2) == path]
    kids = psutil.Process(run.gateway.pid).children(recursive=True)
    live = {p.pid for p in kids if "EngineCore" in p.name()}
    found = [pid for pid in logged if pid in live]
    if not found:
        raise RuntimeError(f"no live engine-core process of {name} (logged {logged}, live {sorted(live)})")
    return found[-1]


def _ready(name: str, value: float) -> Any:
    return lambda m: by_label(m, "driftgate_variant_ready", "variant").get(name) == value


async def kill_and_restore(run: Run, victim: str) -> None:
    """Kills the victim at `kill_at`, waits until it is not ready, then until it serves again."""
    await asyncio.sleep(run.opts.duration_s * run.opts.kill_at)
    run.events.victim = victim
    variant = run.config.variant(victim)
    assert variant is not None
    if variant.remote:
        await run.remote.kill(victim)
    else:
        os.kill(engine_core(run, victim), signal.SIGKILL)
    run.events.killed_at = round(run.now(), 1)
    print(f"soak: killed {victim} at {run.events.killed_at} s", flush=True)
    run.events.not_ready_seen = await wait_for(run, _ready(victim, 0.0), 120, every_s=0.5)
    if variant.remote:
        await run.remote.start(victim)
    if await wait_for(run, _ready(victim, 1.0), run.opts.restore_timeout_s):
        run.events.restored_at = round(run.now(), 1)
        print(f"soak: {victim} serving again at {run.events.restored_at} s", flush=True)


async def sampler(run: Run) -> None:
    import psutil

    while True:
        with contextlib.suppress(OSError, psutil.Error):
            await run.sample()
        await asyncio.sleep(run.opts.sample_s)


async def run_locust(run: Run) -> int:
    prefix = run.out / "locust"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", run.address]
    cmd += ["-u", str(run.opts.users), "-r", str(run.opts.users), "-t", f"{int(run.opts.duration_s)}s"]
    cmd += ["--stop-timeout", "120", "--csv", str(prefix), "--csv-full-history", "--json-file", str(prefix)]
    cmd += ["--only-summary", "--loglevel", "WARNING", "--dg-max-tokens", str(run.opts.max_tokens)]
    with (run.out / "locust.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=log)
        return await proc.wait()


def _idle(m: dict[Any, float]) -> bool:
    busy = by_label(m, "driftgate_engine_unfinished_requests", "variant")
    busy |= {f"in-flight {k}": v for k, v in by_label(m, "driftgate_requests_in_flight", "variant").items()}
    return not any(busy.values())


async def settle(run: Run) -> None:
    """Waits until /metrics shows every engine idle in 3 looks in a row (the gauge is sampled every
    health round), up to `settle_timeout_s`."""
    assert run.events.load_end is not None
    streak, end = 0, time.monotonic() + run.opts.settle_timeout_s
    while streak < 3 and time.monotonic() < end:
        with contextlib.suppress(OSError):
            streak = streak + 1 if _idle(await run.metrics()) else 0
        await asyncio.sleep(1.0)
    if streak >= 3:
        run.events.idle_after_s = round(run.now() - run.events.load_end, 1)


class RemoteServers:
    """The vLLM servers of the config's remote variants, started (and restarted) here."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._stacks: dict[str, contextlib.AsyncExitStack] = {}

    async def start(self, name: str) -> None:
        from urllib.parse import urlparse

        from serving.engines.vllm_server import running_server, variant_command, variant_env

        v = self._run.config.variant(name)
        assert v is not None
        port = urlparse(v.engine.url).port or 8000
        stack = contextlib.AsyncExitStack()
        log = self._run.out / f"vllm-{name}.log"
        await stack.enter_async_context(
            running_server(variant_command(v, port), variant_env(v), log, port, wait=False)
        )
        self._stacks[name] = stack

    async def kill(self, name: str) -> None:
        stack = self._stacks.pop(name)
        await stack.aclose()  # SIGTERM, then SIGKILL to what is left of the group

    async def close(self) -> None:
        for name in list(self._stacks):
            await self.kill(name)


async def stop_gateway(run: Run) -> None:
    """SIGTERM, then SIGKILL to the whole group if it has not exited within the drain bound + 60 s."""
    if run.gateway is None or run.gateway.returncode is not None:
        return
    run.gateway.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(run.config.server.drain_timeout_s + 60):
            run.events.exit_code = await run.gateway.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.gateway.pid, signal.SIGKILL)
        await run.gateway.wait()


async def _load(run: Run, victim: str) -> None:
    """Locust for the duration, the sampler and the fault beside it; then settle."""
    run.t0 = time.time()
    sampling = asyncio.create_task(sampler(run))
    fault = asyncio.create_task(kill_and_restore(run, victim))
    try:
        code = await run_locust(run)
        run.events.load_end = round(run.now(), 1)
        print(f"soak: load done at {run.events.load_end} s (locust exit {code})", flush=True)
        await fault  # a restore still running after the load is waited for (bounded)
        await settle(run)
        await run.sample()
    finally:
        sampling.cancel()
        fault.cancel()
        await asyncio.gather(sampling, fault, return_exceptions=True)


def report_dir(opts: SoakOptions) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(opts.out).expanduser() if opts.out else driftgate_home() / "reports" / f"soak-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out


async def soak(opts: SoakOptions, out: Path) -> dict[str, Any]:
    """Runs one soak; returns the report (also written under `out`)."""
    config = load_config(opts.config)
    shadows = [v.name for v in config.variants if v.role is Role.SHADOW]
    victim = opts.victim or (shadows[0] if shadows else "")
    if victim not in shadows:
        raise ConfigError(f"soak: no shadow {victim!r} to kill in {opts.config} (shadows: {shadows})")
    check_checkpoints(config.variants, remote_too=True)  # the remote variants' servers run here too
    run = Run(opts, config, out)
    run.remote = RemoteServers(run)
    try:
        for v in config.variants:
            if v.remote:
                await run.remote.start(v.name)
        await start_gateway(run)
        print(f"soak: gateway SERVING on {run.address} after {run.events.startup_s} s", flush=True)
        await _load(run, victim)
    finally:
        await stop_gateway(run)
        await run.remote.close()
        for task in run.background:
            task.cancel()
    report = build_report(run.samples, run.events, out / "locust", run.t0, opts.warmup_s, opts.rss_bound_mib)
    report["options"] = vars(opts)
    report["out"] = str(out)
    report["checks"] = [{"name": n, "passed": ok, "measured": m} for n, ok, m in checks(report)]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "report.png")
    return report


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("soak", help="saturating load for a long while, a shadow killed and restored")
    for name, f in SoakOptions.__dataclass_fields__.items():
        flags = ["--" + name.replace("_", "-")]
        kind: Any = type(f.default)
        if name == "duration_s":
            flags, kind = ["--time", *flags], parse_duration
        parser.add_argument(*flags, dest=name, type=kind, default=f.default, help=f.metadata["doc"])
    parser.set_defaults(func=run_soak)


def parse_duration(text: str) -> float:
    """`600`, `600s`, `10m`, `1h` -> seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 90s, 10m)")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


async def _cancellable(opts: SoakOptions, out: Path) -> dict[str, Any]:
    """`soak`, cancelled by SIGTERM or SIGINT (even when started in the background, where SIGINT is
    ignored): the gateway and servers it started are stopped on the way out."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await soak(opts, out)


def run_soak(args: argparse.Namespace) -> int:
    opts = SoakOptions(**{k: getattr(args, k) for k in SoakOptions.__dataclass_fields__})
    try:
        report = asyncio.run(_cancellable(opts, report_dir(opts)))
    except asyncio.CancelledError:
        print("soak: interrupted", file=sys.stderr)
        return 130
    results = checks(report)
    print(summarize(report, results))
    print(f"soak: report in {report['out']}", flush=True)
    return 0 if all(ok for _, ok, _ in results) else 1
