"""Start-up time of a gateway config: seconds from `start_app` until every engine is built and
health is SERVING, per engine and in all (docs/performance.md, "Start-up").

The `startup` suite of `make bench` (`run_startup`) starts `configs/demo.yaml` twice in a child
process, cold (a fresh, empty compile cache in the report directory) then warm (reusing it),
then once more with every engine `enforce_eager`. By hand (starts real engines: run it alone):

    .venv/bin/python -m bench.startup --config configs/demo.yaml --cold   # empty compile cache
    .venv/bin/python -m bench.startup --config configs/demo.yaml          # warm: reuses it

`--cold` deletes the compile cache first (`$DRIFTGATE_COMPILE_CACHE`, default
`$DRIFTGATE_HOME/compile-cache`; the next start rebuilds it). Ports are picked free, probes are
off; prints one JSON object. `--only dense --throughput` serves the one variant and then measures
its greedy decode (64 max tokens) at 1 stream and 16 concurrent:

    .venv/bin/python -m bench.startup --only dense --throughput [--eager]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPTS = (
    "Explain in one sentence what a compiler does.",
    "Name three rivers in Europe and describe them.",
    "Write a short poem about the sea.",
    "What is the capital of France? Answer with a paragraph.",
)


async def decode_rate(engine: Any, concurrency: int, requests: int) -> dict[str, float]:
    """Greedy generations of 64 tokens (`ignore_eos`), `concurrency` at a time: tokens per second."""
    from serving.engines.base import SamplingSpec

    todo = list(range(requests))
    tokens = 0

    async def user() -> None:
        nonlocal tokens
        while todo:
            i = todo.pop()
            done = 0
            async for chunk in engine.generate(
                PROMPTS[i % 4], SamplingSpec(max_tokens=64, ignore_eos=True), f"t{i}-{time.time_ns()}"
            ):
                done = chunk.completion_tokens
            tokens += done

    t0 = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tok_s": round(tokens / seconds, 1),
    }


async def measure(
    config_path: str, eager: bool, concurrency: int | None, only: str, throughput: bool
) -> dict[str, Any]:
    from serving.app import start_app, start_concurrency
    from serving.commands.demo import drop_variants, unservable_here
    from serving.config import Role, load_config

    config = load_config(config_path)
    skipped = unservable_here(config)  # what this CPU's vLLM build cannot run (4-bit without AVX-512)
    drop_variants(config, skipped)
    if only:
        kept = [dataclasses.replace(v, role=Role.PRIMARY) for v in config.variants if v.name == only]
        config.variants = kept or config.variants
    server = dataclasses.replace(config.server, grpc_port=0, metrics_port=-1, http_port=-1)
    if concurrency is not None:
        server.engine_start_concurrency = concurrency
    config.server = server
    config.probes.enabled = False
    if eager:
        for v in config.variants:
            v.engine = dataclasses.replace(v.engine, enforce_eager=True)
    ready: dict[str, float] = {}
    t0 = time.perf_counter()

    def progress(name: str) -> None:
        ready[name] = time.perf_counter() - t0

    app = await start_app(config, progress=progress)
    rates: list[dict[str, float]] = []
    try:
        serving = app.gateway.is_ready()
        total = time.perf_counter() - t0
        if throughput:
            engine = app.gateway.engines[config.primary.name]
            await decode_rate(engine, 4, 8)  # warm-up
            rates = [await decode_rate(engine, 1, 6), await decode_rate(engine, 16, 48)]
    finally:
        await app.stop()
    return {
        "config": config_path,
        "variants": [v.name for v in config.variants],
        "skipped": skipped,
        "enforce_eager": eager,
        "start_concurrency": start_concurrency(config),
        "all_serving_s": round(total, 1),
        "serving": serving,
        "ready_s": {name: round(s, 1) for name, s in ready.items()},
        "decode": rates,
    }


RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cold", ("--cold",)),
    ("warm", ()),
    ("warm-eager", ("--eager",)),
)
"""The suite's starts, in order: cold fills the fresh compile cache that warm then reuses."""


async def _start_once(
    config: str, flags: tuple[str, ...], env: dict[str, str], log_path: Path
) -> dict[str, Any]:
    from serving.engines.vllm_server import with_parent_death_signal

    command = [sys.executable, "-m", "bench.startup", "--config", config, *flags]
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *with_parent_death_signal(command), stdout=asyncio.subprocess.PIPE, stderr=log, env=env
        )
        stdout, _ = await process.communicate()
        log.write(stdout)
    lines = [x for x in stdout.decode(errors="replace").splitlines() if x.startswith('{"cold"')]
    if process.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench.startup {' '.join(flags)} exited with {process.returncode}: see {log_path}"
        )
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


async def run_startup(
    workdir: Path, log: Callable[[str], None], config: str = "configs/demo.yaml"
) -> dict[str, Any]:
    """Cold, warm and warm-eager start of `config`, each in a fresh process, with a compile cache
    of their own under `workdir` (the user's cache is neither used nor touched)."""
    from bench.variants import demo_variants

    _present, missing, _unservable = demo_variants(config)  # the child drops the unservable
    if missing:
        raise RuntimeError(f"variants not built (make demo builds them): {', '.join(missing)}")
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    env = {**os.environ, "DRIFTGATE_COMPILE_CACHE": str(workdir / "startup-compile-cache")}
    out: dict[str, Any] = {}
    for name, flags in RUNS:
        out[name] = await _start_once(config, flags, env, workdir / f"startup-{name}.log")
        log(
            f"  {name}: all {len(out[name]['variants'])} engines SERVING in {out[name]['all_serving_s']:.0f} s"
        )
    await asyncio.to_thread(shutil.rmtree, workdir / "startup-compile-cache", ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="gateway config")
    parser.add_argument("--cold", action="store_true", help="delete the compile cache first")
    parser.add_argument("--eager", action="store_true", help="every engine with enforce_eager")
    parser.add_argument("--concurrency", type=int, default=None, help="engines built at once")
    parser.add_argument("--only", default="", help="serve this variant alone (as the primary)")
    parser.add_argument("--throughput", action="store_true", help="then measure the primary's decode")
    args = parser.parse_args(argv)
    from serving.engines.vllm_engine import compile_cache_env
    from serving.home import set_offline

    set_offline()
    if args.cold:
        shutil.rmtree(Path(compile_cache_env()["TORCHINDUCTOR_CACHE_DIR"]).parent, ignore_errors=True)
    result = asyncio.run(measure(args.config, args.eager, args.concurrency, args.only, args.throughput))
    print(json.dumps({"cold": args.cold, **result}))
    return 0 if result["serving"] else 1


if __name__ == "__main__":
    sys.exit(main())
