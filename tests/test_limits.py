"""Input and concurrency limits: refused with a clear status before any engine work (fake engines
behind a real grpc.aio server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from serving.app import App, start_app
from serving.auth import hash_key
from serving.config import AuthConfig, Config, LimitsConfig, ServerConfig, VariantConfig
from serving.engines.base import Chunk, SamplingSpec
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.fakes import FakeEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Gated(FakeEngine):
    """Counts tokenizations; holds every generation until `release` is set."""

    def __init__(self) -> None:
        super().__init__("dense")
        self.tokenized = 0
        self.release = asyncio.Event()

    def encode_prompt(self, prompt: str) -> tuple[int, ...]:
        self.tokenized += 1
        return super().encode_prompt(prompt)

    async def generate(
        self,
        prompt: str,
        sampling: SamplingSpec,
        request_id: str,
        logprobs: int | None = None,
        prompt_token_ids: Sequence[int] = (),
    ) -> AsyncGenerator[Chunk, None]:
        await self.release.wait()
        async for chunk in super().generate(prompt, sampling, request_id, logprobs, prompt_token_ids):
            yield chunk


@pytest_asyncio.fixture(loop_scope="session")
async def app(tmp_path: Path) -> AsyncIterator[App]:
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: a, scope: user, sha256: {hash_key('ka')}}}\n"
                    f"  - {{name: b, scope: user, sha256: {hash_key('kb')}}}\n")  # fmt: skip
    config = Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=-1, max_concurrent_requests=3),
        limits=LimitsConfig(
            max_request_bytes=64 << 10, max_prompt_bytes=1000, max_tokens=100, max_concurrent_per_key=2
        ),
        auth=AuthConfig(keys_file=str(keys)),
        variants=[VariantConfig(name="dense")],
    )
    engine = Gated()
    running = await start_app(config, engines={"dense": engine})
    yield running
    engine.release.set()
    await running.stop()


def _key(name: str) -> Sequence[tuple[str, str]]:
    return (("authorization", f"Bearer k{name}"),)


async def _status(
    stub: pb_grpc.GatewayStub, req: pb.GenerateRequest, key: str = "a"
) -> tuple[grpc.StatusCode, str]:
    try:
        await stub.Generate(req, metadata=_key(key), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_oversized_and_out_of_range_input_is_refused_before_tokenization(app: App) -> None:
    engine = app.gateway.engines["dense"]
    assert isinstance(engine, Gated)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        cases = [
            (pb.GenerateRequest(prompt="x" * 1001), grpc.StatusCode.RESOURCE_EXHAUSTED, "limit is 1000"),
            (pb.GenerateRequest(prompt="é" * 501), grpc.StatusCode.RESOURCE_EXHAUSTED, "1002 bytes"),
            (
                pb.GenerateRequest(prompt="x" * (70 << 10)),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "",
            ),  # gRPC's own
            (pb.GenerateRequest(prompt="hi", max_tokens=101), grpc.StatusCode.INVALID_ARGUMENT, "[1, 100]"),
            (
                pb.GenerateRequest(prompt="hi", stop=["s" * 257]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "256 bytes",
            ),
            (pb.GenerateRequest(prompt="hi", stop=["s"] * 9), grpc.StatusCode.INVALID_ARGUMENT, "at most 8"),
        ]
        for req, code, words in cases:
            got, details = await _status(stub, req)
            assert got == code and words in details, (got, details)
        assert engine.tokenized == 0 and engine.prompts == []


async def test_concurrency_limits_per_key_and_overall_name_the_limit(app: App) -> None:
    engine = app.gateway.engines["dense"]
    assert isinstance(engine, Gated)
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        held = [
            asyncio.ensure_future(stub.Generate(pb.GenerateRequest(prompt="hi"), metadata=_key("a")))
            for _ in range(2)
        ]
        for _ in range(100):
            if app.gateway._in_flight == 2:
                break
            await asyncio.sleep(0.02)
        code, details = await _status(stub, pb.GenerateRequest(prompt="hi"), "a")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "for key 'a' (limit 2)" in details
        held.append(asyncio.ensure_future(stub.Generate(pb.GenerateRequest(prompt="hi"), metadata=_key("b"))))
        for _ in range(100):
            if app.gateway._in_flight == 3:
                break
            await asyncio.sleep(0.02)
        code, details = await _status(stub, pb.GenerateRequest(prompt="hi"), "b")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "(limit 3)" in details
        engine.release.set()
        replies = await asyncio.gather(*held)
        assert [r.text for r in replies] == ["ok fine"] * 3
        assert (await _status(stub, pb.GenerateRequest(prompt="hi"), "a"))[0] == grpc.StatusCode.OK
