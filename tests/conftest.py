"""Shared fixtures: one real vLLM engine on the default model for the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from serving.commands.model_pull import is_pulled
from serving.config import Config, EngineConfig, ServerConfig, VariantConfig
from serving.engines.base import Engine
from serving.home import default_model_dir, set_offline

set_offline()  # before any test loads a tokenizer or an engine

FRANCE = "The capital of France is"


def model_dir() -> Path:
    path = default_model_dir()
    if not is_pulled(path):
        pytest.skip("default model missing: run `driftgate model pull` (make test does)")
    return path


async def assert_same_greedy_answer(first: Engine, second: Engine) -> None:
    """Both engines complete FRANCE greedily (24 tokens) with the same text, naming Paris."""
    from serving.engines.base import SamplingSpec

    spec = SamplingSpec(max_tokens=24, temperature=0.0)
    texts = []
    for i, engine in enumerate((first, second)):
        texts.append("".join([c.text async for c in engine.generate(FRANCE, spec, f"same-{i}")]))
    assert "Paris" in texts[0] and texts[0] == texts[1], texts


def engine_config(cores: str = "0-1") -> EngineConfig:
    return EngineConfig(max_model_len=512, kv_cache_gib=0.5, cpu_cores=cores, max_num_seqs=32)


def dense_variant(name: str = "dense", **kw: object) -> VariantConfig:
    return VariantConfig(name=name, model=str(model_dir()), engine=engine_config(), **kw)  # type: ignore[arg-type]


def make_config(*variants: VariantConfig, **kw: object) -> Config:
    return Config(
        server=ServerConfig(grpc_port=0, metrics_port=0, http_port=0, drain_timeout_s=5.0),
        variants=list(variants) or [dense_variant()],
        **kw,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(dense_engine: Engine) -> AsyncIterator[Any]:
    """A gateway on the session's engine alone (a module that needs another setup defines its own)."""
    from serving.app import start_app

    running = await start_app(make_config(), engines={"dense": dense_engine})
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def stub(app: Any) -> AsyncIterator[Any]:
    """A Gateway stub on the module's `app` fixture (each engine test module defines `app`)."""
    import grpc

    from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(app.address) as channel:
        yield pb_grpc.GatewayStub(channel)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dense_engine() -> AsyncIterator[Engine]:
    """The real vLLM engine on SmolLM2-135M-Instruct (`engine.dtype: auto`: bf16, or float32 on a CPU
    without AVX-512), shared by every test."""
    from serving.engines.vllm_engine import VllmEngine

    engine = await VllmEngine.start(dense_variant())
    yield engine
    await engine.shutdown()
