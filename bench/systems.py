"""The systems the bench starts, each in its own process(es), as a user runs them:

- a driftgate gateway (`driftgate serve --config …`), its config written by the bench;
- vLLM's own OpenAI server (`serving.engines.vllm_server`), for the direct-HTTP baseline and as
  the remote variant behind the gateway;
- `bench.direct`, AsyncLLM with no RPC (see `bench.clients.DirectClient`).

Every engine gets the same settings (`engine_config`), so the systems differ only in what sits
between the client and vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from serving.config import EngineConfig, Executor, FusedKernels, Preload
from serving.engines.vllm_server import free_port, with_parent_death_signal
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc


def engine_config(
    cores: str,
    preload: str = Preload.AUTO,
    dtype: str = "auto",
    fused_kernels: str = FusedKernels.PARALLEL,
    executor: str = Executor.UNI,
) -> EngineConfig:
    """The engine settings of every system in the bench (the default dtype, preload, fused kernels and
    executor unless a settings suite says otherwise, 1 GiB KV, 32 sequences)."""
    return EngineConfig(
        max_model_len=1024,
        kv_cache_gib=1.0,
        cpu_cores=cores,
        max_num_seqs=32,
        preload=Preload(preload),
        dtype=dtype,
        fused_kernels=FusedKernels(fused_kernels),
        executor=Executor(executor),
    )


def engine_yaml(cores: str, **extra: Any) -> dict[str, Any]:
    e = engine_config(cores)
    return {
        "max_model_len": e.max_model_len,
        "kv_cache_gib": e.kv_cache_gib,
        "cpu_cores": e.cpu_cores,
        "max_num_seqs": e.max_num_seqs,
        **extra,
    }


def gateway_yaml(
    variants: list[dict[str, Any]],
    grpc_port: int,
    http_port: int,
    event_loop: str = "asyncio",
    metrics_port: int = -1,
) -> dict[str, Any]:
    """A gateway config: the given variants, teacher-forced comparison on."""
    return {
        "server": {
            "host": "127.0.0.1",
            "grpc_port": grpc_port,
            "http_port": http_port,
            "metrics_port": metrics_port,
            "max_concurrent_requests": 512,
            "event_loop": event_loop,
        },
        "drift": {"teacher_forced": True},
        "variants": variants,
    }


@dataclass
class Gateway:
    """A running `driftgate serve` child process."""

    process: asyncio.subprocess.Process
    grpc_target: str
    http_url: str
    channel: grpc.aio.Channel
    metrics_url: str

    @property
    def stub(self) -> pb_grpc.GatewayStub:
        return pb_grpc.GatewayStub(self.channel)

    async def wait_ready(self, timeout_s: float = 900.0) -> float:
        """Polls ListVariants until every variant is ready; returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process.returncode is not None:
                raise RuntimeError(f"the gateway exited with {self.process.returncode}: see its log")
            with contextlib.suppress(grpc.aio.AioRpcError):
                listed = await self.stub.ListVariants(pb.ListVariantsRequest(), timeout=2)
                if listed.variants and all(v.ready for v in listed.variants):
                    return time.monotonic() - start
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the gateway's variants were not ready after {timeout_s:.0f} s")

    async def set_sample_rate(self, variant: str, rate: float, score_rate: float | None = None) -> None:
        """A shadow's share of requests mirrored and, of those, scored teacher-forced (None: as is)."""
        request = pb.SetTrafficRequest(variant=variant, sample_rate=rate)
        if score_rate is not None:
            request.score_rate = score_rate
        await self.stub.SetTraffic(request, timeout=10)


def _write_config(workdir: Path, name: str, data: dict[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


@contextlib.asynccontextmanager
async def gateway(
    variants: list[dict[str, Any]], workdir: Path, name: str, event_loop: str = "asyncio"
) -> AsyncIterator[Gateway]:
    """Starts `driftgate serve` on a config with `variants` (log and config in `workdir`); stops it
    with SIGTERM (then SIGKILL) on exit."""
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    config = _write_config(
        workdir, name, gateway_yaml(variants, grpc_port, http_port, event_loop, metrics_port)
    )
    with (workdir / f"{name}.log").open("ab") as log:
        command = [sys.executable, "-m", "serving.commands.main", "serve", "--config", str(config)]
        process = await asyncio.create_subprocess_exec(
            *with_parent_death_signal(command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "VLLM_CONFIGURE_LOGGING": "0"},
        )
    target = f"127.0.0.1:{grpc_port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield Gateway(
            process,
            target,
            f"http://127.0.0.1:{http_port}",
            channel,
            f"http://127.0.0.1:{metrics_port}/metrics",
        )
    finally:
        await channel.close()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
