"""Lifecycle under load: SIGTERM to a real `driftgate serve` while answers stream (they complete,
new calls are refused, the process and its engine-core child exit 0 within the drain bound), and a
client that cancels, or whose deadline passes, in the middle of a stream (the engine request is
aborted and the outcome counted as CANCELLED).

NOT_SERVING before the primary attaches is tests/test_app.py's; RESOURCE_EXHAUSTED at the
concurrency limit is tests/test_limits.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.app import App
from serving.engines.base import Engine
from serving.engines.preload import find_iomp, find_tcmalloc
from serving.engines.priority import thread_nices
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import FRANCE, model_dir

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parents[1]
DRIFTGATE = ROOT / ".venv" / "bin" / "driftgate"
COUNT = "Count from one to five hundred: one, two, three,"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# ------------------------------------------------------------------------------ SIGTERM


DRAIN_TIMEOUT_S = 60.0
EXIT_MARGIN_S = 15.0
"""Past the drain: gRPC's 1 s grace, the engine-core process's shutdown, interpreter exit."""
STREAMS = 3
VLLM_DEL_AT_EXIT = "Exception ignored in: <function AsyncLLM.__del__"
STREAM_TOKENS = 200  # enough that the streams are still running when SIGTERM arrives


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _session(sid: int, live: bool = False) -> list[str]:
    """`pid stat args` of every process in session `sid` (the server and its children); with
    `live`, those that have not exited (an exited child whose parent died first stays a zombie
    until init reaps it)."""
    out = subprocess.run(["ps", "-s", str(sid), "-o", "pid=,stat=,args="], capture_output=True, text=True)
    rows = [line.split(None, 2) for line in out.stdout.splitlines() if line.strip()]
    return [" ".join(r) for r in rows if not (live and r[1].startswith("Z"))]


async def _session_gone(sid: int, timeout: float = 15.0) -> list[str]:
    """Waits for session `sid` to empty; returns its processes that are still running."""
    end = time.monotonic() + timeout
    while _session(sid) and time.monotonic() < end:
        await asyncio.sleep(0.2)
    return _session(sid, live=True)


PRELOADED = bool(find_tcmalloc() and find_iomp())
"""The served engine runs with the default `engine.preload` (auto): vLLM's recommended preloads
wherever `make setup` could install them."""
ENGINE_NICE = min(19, os.nice(0) + 5)
"""The served engine's `engine.nice`: its processes below the gateway's (above this test run's own)."""


def _own_thread_nices(pid: int) -> set[int]:
    """The niceness of the threads of `pid` itself (not its children); threads gone meanwhile skipped."""
    out = set()
    for t in psutil.Process(pid).threads():
        with contextlib.suppress(ProcessLookupError):
            out.add(os.getpriority(os.PRIO_PROCESS, t.id))
    return out


def _mapped(pid: str, library: str) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return library in maps.read()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`driftgate serve` on the dense model, in a session of its own (so every process it starts
    can be found, and killed if the test fails)."""
    port = _free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "server:\n"
        f"  grpc_port: {port}\n"
        "  metrics_port: -1\n"
        "  http_port: -1\n"
        f"  drain_timeout_s: {DRAIN_TIMEOUT_S}\n"
        "variants:\n"
        f"  - name: dense\n    model: {model_dir()}\n"
        f'    engine: {{cpu_cores: "0-1", max_model_len: 512, kv_cache_gib: 0.5, nice: {ENGINE_NICE}}}\n'
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(DRIFTGATE), "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
        )
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None or _session(proc.pid, live=True):
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test started
            proc.wait(30)


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2.0
        )
    except grpc.aio.AioRpcError:
        return -1
    return int(reply.status)


async def _read_all(call: AsyncIterator[pb.GenerateChunk], first: asyncio.Event) -> list[pb.GenerateChunk]:
    chunks = []
    async for chunk in call:
        chunks.append(chunk)
        first.set()
    return chunks


async def _error(call: grpc.aio.Call) -> grpc.aio.AioRpcError:
    """The error a unary or streaming call ends with (fails if it is answered)."""
    try:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            await call.read()
        else:
            await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call was answered")


async def test_sigterm_drains_streams_refuses_new_calls_and_exits_0(
    server: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = server
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        deadline = time.monotonic() + 300
        while await _health(channel) != SERVING:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "driftgate serve did not become SERVING in 300 s"
            await asyncio.sleep(0.5)
        processes = _session(proc.pid)
        assert any("EngineCore" in p for p in processes), processes  # the check below can fail
        if PRELOADED:  # loaded into the engine-core and worker processes, not the gateway
            engines = [p.split()[0] for p in processes if "VLLM::" in p]
            assert engines and all(
                _mapped(pid, "libtcmalloc") and _mapped(pid, "libiomp5") for pid in engines
            )
            assert not _mapped(str(proc.pid), "libtcmalloc")
        # engine.nice: every thread of the engine-core and worker processes, none of the gateway's.
        engine_pids = [int(p.split()[0]) for p in processes if "VLLM::" in p]
        assert engine_pids and all(set(thread_nices(pid)) == {ENGINE_NICE} for pid in engine_pids)
        assert _own_thread_nices(proc.pid) == {os.nice(0)}

        req = pb.GenerateRequest(prompt=COUNT, max_tokens=STREAM_TOKENS, temperature=0.0)
        firsts = [asyncio.Event() for _ in range(STREAMS)]
        streams = [asyncio.ensure_future(_read_all(stub.GenerateStream(req), e)) for e in firsts]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in firsts)), 120)
        assert not any(s.done() for s in streams)  # all mid-stream

        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # Health turns NOT_SERVING first; the gateway refuses new calls from the same moment.
        while (status := await _health(channel, "driftgate.v1.Gateway")) == SERVING:
            await asyncio.sleep(0.02)
        assert status == NOT_SERVING
        assert not all(s.done() for s in streams), "the streams ended before the refusal could be seen"
        for call in (
            stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=4), timeout=10),
            stub.GenerateStream(pb.GenerateRequest(prompt=FRANCE, max_tokens=4), timeout=10),
        ):
            error = await _error(call)
            # The server is still up (draining): the refusal is the gateway's own, not a closed port.
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error.details() == "the gateway is shutting down"

        answers = await asyncio.wait_for(asyncio.gather(*streams), DRAIN_TIMEOUT_S)
        drained = time.monotonic()
        for chunks in answers:
            assert [c.finished for c in chunks] == [False] * (len(chunks) - 1) + [True]
            last = chunks[-1]
            assert last.finish_reason in ("length", "stop") and last.variant == "dense"
            if last.finish_reason == "length":
                assert last.completion_tokens == STREAM_TOKENS
            assert "".join(c.text for c in chunks).strip()

        code = await asyncio.to_thread(proc.wait, DRAIN_TIMEOUT_S + EXIT_MARGIN_S)
        exited = time.monotonic()
        took, after_drain = exited - signalled, exited - drained
        output = log.read_text()
        print(
            f"\n[sigterm] exit status {code} {took:.1f} s after SIGTERM, {after_drain:.1f} s after the "
            f"{STREAMS} streams of {STREAM_TOKENS} tokens ended"
        )
        assert code == 0, output[-3000:]
        assert took <= DRAIN_TIMEOUT_S + EXIT_MARGIN_S and after_drain <= EXIT_MARGIN_S
        assert "driftgate: draining" in output
        # The one traceback allowed is vLLM's AsyncLLM.__del__ failing at interpreter exit (a known
        # defect of VllmEngine.shutdown, reported; exit status 0 regardless); any other fails.
        assert output.count("Traceback") == output.count(VLLM_DEL_AT_EXIT), output[-3000:]

        # Once it has exited, nothing listens: the port refuses connections (gRPC: UNAVAILABLE).
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        error = await _error(stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=4), timeout=10))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert await _session_gone(proc.pid) == []  # no engine-core (or any other) process left running


# ------------------------------------------------------------------------------ cancel and deadline


def _sample(app: App, name: str, labels: dict[str, str]) -> float:
    value = app.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


CANCELLED = {"variant": "dense", "role": "primary", "code": "CANCELLED"}
OK = {**CANCELLED, "code": "OK"}


async def _settled(app: App, engine: Engine, cancelled: float, timeout: float = 15.0) -> None:
    """Waits until the engine request is gone and the outcome counted, then checks both."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and (
        engine.num_unfinished() or _sample(app, "driftgate_requests_total", CANCELLED) != cancelled
    ):
        await asyncio.sleep(0.05)
    assert engine.num_unfinished() == 0
    assert _sample(app, "driftgate_requests_total", CANCELLED) == cancelled
    assert _sample(app, "driftgate_requests_in_flight", {"variant": "dense"}) == 0
    assert app.gateway._in_flight == 0


async def test_client_cancel_mid_stream_aborts_the_engine_request(
    app: App, stub: pb_grpc.GatewayStub, dense_engine: Engine
) -> None:
    cancelled, ok = (
        _sample(app, "driftgate_requests_total", CANCELLED),
        _sample(app, "driftgate_requests_total", OK),
    )
    call = stub.GenerateStream(pb.GenerateRequest(prompt=COUNT, max_tokens=400, temperature=0.0))
    chunks = [await call.read() for _ in range(3)]
    assert not any(c.finished for c in chunks)
    assert dense_engine.num_unfinished() == 1 and app.gateway._in_flight == 1
    assert call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED
    await _settled(app, dense_engine, cancelled + 1)
    assert _sample(app, "driftgate_requests_total", OK) == ok
    reply = await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=4, temperature=0.0))
    assert "Paris" in reply.text  # still serving


async def test_deadline_mid_stream_aborts_the_engine_request(
    app: App, stub: pb_grpc.GatewayStub, dense_engine: Engine
) -> None:
    cancelled = _sample(app, "driftgate_requests_total", CANCELLED)
    # 480 tokens take far longer than the deadline here; the first ones come well within it.
    call = stub.GenerateStream(pb.GenerateRequest(prompt=COUNT, max_tokens=480, temperature=0.0), timeout=2.0)
    chunks: list[pb.GenerateChunk] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for chunk in call:
            chunks.append(chunk)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert chunks and not any(c.finished for c in chunks)  # it passed mid-stream
    await _settled(app, dense_engine, cancelled + 1)
    reply = await stub.Generate(pb.GenerateRequest(prompt=FRANCE, max_tokens=4, temperature=0.0))
    assert "Paris" in reply.text
