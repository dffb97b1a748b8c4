"""Start-up time of a gateway config: seconds from `start_app` until every engine is built and
health is SERVING, per engine and in all (docs/performance.md, "Start-up"). Starts real engines:
run it alone on the machine.

    .venv/bin/python tools/start_time.py --config configs/demo.yaml --cold   # empty compile cache
    .venv/bin/python tools/start_time.py --config configs/demo.yaml          # warm: reuses it

`--cold` deletes `$DRIFTGATE_HOME/compile-cache` first (the next start rebuilds it). Ports are
picked free, probes are off; prints one JSON object. `--only dense --throughput` serves the one
variant and then measures its greedy decode (64 max tokens) at 1 stream and 16 concurrent:

    .venv/bin/python tools/start_time.py --only dense --throughput [--eager]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = (
    "Explain in one sentence what a compiler does.",
    "Name three rivers in Europe and describe them.",
    "Write a short poem about the sea.",
    "What is the capital of France? Answer with a paragraph.",
)


async def decode_rate(engine: Any, concurrency: int, requests: int) -> dict[str, float]:
    """Greedy generations of up to 64 tokens, `concurrency` at a time: tokens per second."""
    from serving.engines.base import SamplingSpec

    todo = list(range(requests))
    tokens = 0

    async def user() -> None:
        nonlocal tokens
        while todo:
            i = todo.pop()
            done = 0
            async for chunk in engine.generate(
                PROMPTS[i % 4], SamplingSpec(max_tokens=64), f"t{i}-{time.time_ns()}"
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
    from serving.config import Role, load_config

    config = load_config(config_path)
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
        "enforce_eager": eager,
        "start_concurrency": start_concurrency(config),
        "all_serving_s": round(total, 1),
        "serving": serving,
        "ready_s": {name: round(s, 1) for name, s in ready.items()},
        "decode": rates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="gateway config")
    parser.add_argument("--cold", action="store_true", help="delete the compile cache first")
    parser.add_argument("--eager", action="store_true", help="every engine with enforce_eager")
    parser.add_argument("--concurrency", type=int, default=None, help="engines built at once")
    parser.add_argument("--only", default="", help="serve this variant alone (as the primary)")
    parser.add_argument("--throughput", action="store_true", help="then measure the primary's decode")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
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
