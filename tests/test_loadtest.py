"""The locust load generator (loadtest/locustfile.py) against a real grpc.aio server, and against a
real HTTP door (`DRIFTGATE_PROTOCOL=http`).

The gRPC server implements driftgate.v1.Gateway with a trivial in-test servicer, the HTTP door
runs on a Gateway over a scripted engine (no vLLM): this tests the load generator, not the model.
locust monkey-patches the process with gevent on import, so it runs as a subprocess
(`locust -f ... --headless`), exactly as a user runs it; the servers live in this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from serving.config import Config, ServerConfig, VariantConfig
from serving.gateway import Gateway
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.http.server import start_http
from serving.stats import ListSink
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
BROKEN = "broken"  # requests pinned to this variant fail with UNAVAILABLE


@dataclass
class Recorder(pb_grpc.GatewayServicer):
    """Answers "Paris" (three stream chunks); records what each request asked for."""

    seen: list[tuple[str, int, float, str]] = field(default_factory=list)

    def _check(self, request: pb.GenerateRequest) -> None:
        self.seen.append((request.prompt, request.max_tokens, request.temperature, request.variant))

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        self._check(request)
        if request.variant == BROKEN:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "variant broken is down")
        return pb.GenerateResponse(
            text=" Paris.", variant=request.variant or "dense", finish_reason="stop", completion_tokens=2
        )

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.GenerateChunk]:
        self._check(request)
        if request.variant == BROKEN:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "variant broken is down")
        yield pb.GenerateChunk(text=" Par")
        await asyncio.sleep(0.01)
        yield pb.GenerateChunk(text="is")
        yield pb.GenerateChunk(
            text=".",
            finished=True,
            variant=request.variant or "dense",
            finish_reason="stop",
            completion_tokens=2,
        )


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    srv = grpc.aio.server()
    pb_grpc.add_GatewayServicer_to_server(recorder, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}", recorder
    await srv.stop(grace=None)


async def run_locust(
    host: str, tmp: Path, name: str, **env: str
) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Runs locust headless for 3 s with 2 users; returns (exit code, stats by name, output and the
    failures table)."""
    out = tmp / f"{name}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "2", "-r", "2",
        "-t", "3s", "--stop-timeout", "2", "--host", host, "--json-file", str(out.with_suffix("")),
        "--csv", str(tmp / name), "--only-summary", "--loglevel", "WARNING",
        cwd=REPO, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    stats = {s["name"]: s for s in json.loads(out.read_text())} if out.exists() else {}
    failures = tmp / f"{name}_failures.csv"
    text = output.decode(errors="replace") + (failures.read_text() if failures.exists() else "")
    return proc.returncode or 0, stats, text


@pytest.mark.asyncio(loop_scope="session")
async def test_locust_user_records_requests_and_failures(
    server: tuple[str, Recorder], tmp_path: Path
) -> None:
    host, recorder = server
    ok, broken, remote = await asyncio.gather(
        run_locust(f"http://{host}/", tmp_path, "ok", DRIFTGATE_MAX_TOKENS="7"),
        run_locust(host, tmp_path, "broken", DRIFTGATE_VARIANT=BROKEN),
        run_locust("10.1.2.3:50051", tmp_path, "remote"),
    )

    code, stats, output = ok
    assert code == 0, output
    assert set(stats) == {"Generate", "GenerateStream", "GenerateStream/ttft"}, output
    for s in stats.values():
        assert s["method"] == "grpc"
        assert s["num_requests"] > 0 and s["num_failures"] == 0, (s, output)
    assert stats["GenerateStream/ttft"]["num_requests"] == stats["GenerateStream"]["num_requests"]
    ttft, stream = stats["GenerateStream/ttft"], stats["GenerateStream"]
    assert ttft["total_response_time"] < stream["total_response_time"]  # first chunk before the end
    # response_length is the bytes of the generated text (" Paris.").
    assert stats["GenerateStream"]["total_content_length"] == 7 * stats["GenerateStream"]["num_requests"]
    assert stats["Generate"]["total_content_length"] == 7 * stats["Generate"]["num_requests"]
    sent = [r for r in recorder.seen if r[3] != BROKEN]
    assert sent and all(tokens == 7 and temp == 0.0 and variant == "" for _, tokens, temp, variant in sent)
    assert any(prompt.startswith("The capital of") for prompt, *_ in sent)

    code, stats, output = broken
    assert code != 0, output  # locust exits 1 when any request failed
    for method in ("Generate", "GenerateStream"):
        assert stats[method]["num_requests"] > 0, output
        assert stats[method]["num_failures"] == stats[method]["num_requests"], output
    assert "GenerateStream/ttft" not in stats  # no first chunk ever came
    assert "UNAVAILABLE: variant broken is down" in output  # failures are grouped by code: details
    assert any(r[3] == BROKEN for r in recorder.seen)

    code, stats, output = remote
    assert code == 2 and not stats.get("Generate"), output
    assert "only loopback targets" in output


HTTP_NAMES = {
    "completions",
    "chat",
    "completions/stream",
    "chat/stream",
    "completions/stream/ttft",
    "chat/stream/ttft",
}


@pytest.mark.asyncio(loop_scope="session")
async def test_locust_http_user_records_requests_and_failures(tmp_path: Path) -> None:
    config = Config(server=ServerConfig(http_port=0), variants=[VariantConfig(name="dense")])
    gateway = Gateway(config, ListSink())
    engine = FakeEngine("dense", text="Paris is nice")
    gateway.attach("dense", engine)
    server = await start_http(gateway, "127.0.0.1", 0)
    try:
        host = f"127.0.0.1:{server.port}"
        ok, missing = await asyncio.gather(
            run_locust(
                f"http://{host}/", tmp_path, "http-ok", DRIFTGATE_PROTOCOL="http", DRIFTGATE_MAX_TOKENS="7"
            ),
            run_locust(host, tmp_path, "http-missing", DRIFTGATE_PROTOCOL="http", DRIFTGATE_VARIANT="nope"),
        )
    finally:
        await server.stop()
        await gateway.close()

    code, stats, output = ok
    assert code == 0, output
    assert set(stats) == HTTP_NAMES, output  # no gRPC user runs in HTTP mode
    for s in stats.values():
        assert s["method"] == "http"
        assert s["num_requests"] > 0 and s["num_failures"] == 0, (s, output)
    for name in ("completions", "chat", "completions/stream", "chat/stream"):
        assert stats[name]["total_content_length"] == len("Paris is nice") * stats[name]["num_requests"]
    assert stats["chat/stream/ttft"]["num_requests"] == stats["chat/stream"]["num_requests"]
    assert any(prompt.startswith("The capital of") for prompt in engine.prompts)

    code, stats, output = missing
    assert code != 0, output
    for name in ("completions", "chat", "completions/stream", "chat/stream"):
        assert stats[name]["num_failures"] == stats[name]["num_requests"] > 0, output
    assert "HTTP 404: The model 'nope' does not exist" in output
