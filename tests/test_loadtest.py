"""The locust load generator (loadtest/locustfile.py) against a real grpc.aio server, and against a
real HTTP door (`DRIFTGATE_PROTOCOL=http`).

The gRPC server implements driftgate.v1.Gateway with a trivial in-test servicer, the HTTP door
runs on a Gateway over a scripted engine (no vLLM): this tests the load generator, not the model.
locust monkey-patches the process with gevent on import, so it runs as a subprocess
(`locust -f ... --headless`), exactly as a user runs it; the servers live in this test's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from serving.app import start_app
from serving.auth import hash_key
from serving.config import AuthConfig, Config, ServerConfig, TlsConfig, VariantConfig
from serving.gateway import Gateway
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.http.server import start_http
from serving.stats import ListSink
from tests.certs import make_pki
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
BROKEN = "broken"  # requests pinned to this variant fail with UNAVAILABLE
MANY = "many"  # requests pinned to this variant are answered by a new variant name each time
KEY = "load-test-key-1"


@dataclass
class Recorder(pb_grpc.GatewayServicer):
    """Answers "Paris" (three stream chunks); records what each request asked for."""

    seen: list[tuple[str, int, float, str, bool]] = field(default_factory=list)

    def _check(self, request: pb.GenerateRequest) -> str:
        """Records the request; returns the variant that answers it."""
        self.seen.append(
            (request.prompt, request.max_tokens, request.temperature, request.variant, request.ignore_eos)
        )
        return f"{MANY}-{len(self.seen)}" if request.variant == MANY else request.variant or "dense"

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        variant = self._check(request)
        if request.variant == BROKEN:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "variant broken is down")
        return pb.GenerateResponse(text=" Paris.", variant=variant, finish_reason="stop", completion_tokens=2)

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Any
    ) -> AsyncIterator[pb.GenerateChunk]:
        variant = self._check(request)
        if request.variant == BROKEN:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "variant broken is down")
        yield pb.GenerateChunk(text=" Par")
        await asyncio.sleep(0.01)
        yield pb.GenerateChunk(text="is")
        yield pb.GenerateChunk(
            text=".",
            finished=True,
            variant=variant,
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
    host: str, args: tuple[str, ...] = (), **env: str
) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Runs locust headless for 3 s with 2 users (plus `args`); returns (exit code, stats by name,
    output). At the end of the run `--json` prints the stats to stdout, and locust logs the summary
    tables and the error report to stderr (the `--csv` failures file is only rewritten once a
    second, so a run's last failures may never reach it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "2", "-r", "2",
        "-t", "3s", "--stop-timeout", "2", "--host", host, "--json", "--only-summary",
        "--loglevel", "WARNING", *args,
        cwd=REPO, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    printed = out.decode(errors="replace")
    stats = {s["name"]: s for s in json.loads(printed)} if printed.strip() else {}  # none: a refused run
    return proc.returncode or 0, stats, err.decode(errors="replace") + printed


@pytest.mark.asyncio(loop_scope="session")
async def test_locust_user_records_requests_by_variant_and_failures(server: tuple[str, Recorder]) -> None:
    host, recorder = server
    ok, broken = await asyncio.gather(
        run_locust(f"http://{host}/", ("--dg-ignore-eos",), DRIFTGATE_MAX_TOKENS="7"),  # a bare switch: on
        run_locust(host, DRIFTGATE_VARIANT=BROKEN),
    )
    many, remote, bad = await asyncio.gather(
        run_locust(host, args=("--dg-variant", MANY)),
        run_locust("10.1.2.3:50051", DRIFTGATE_TIMEOUT_S="0.5"),
        run_locust(host, DRIFTGATE_TLS_CERT=str(LOCUSTFILE)),
    )

    code, stats, output = ok
    assert code == 0, output
    names = {"Generate[dense]", "GenerateStream[dense]", "GenerateStream[dense]/ttft"}
    assert set(stats) == {*names, "GenerateStream[dense]/itl"}, output
    for s in stats.values():
        assert s["method"] == "grpc"
        assert s["num_requests"] > 0 and s["num_failures"] == 0, (s, output)
    ttft, stream = stats["GenerateStream[dense]/ttft"], stats["GenerateStream[dense]"]
    assert (
        ttft["num_requests"] == stream["num_requests"] == stats["GenerateStream[dense]/itl"]["num_requests"]
    )
    assert ttft["total_response_time"] < stream["total_response_time"]  # first chunk before the end
    # 2 tokens, the server sleeps 10 ms between the chunks: ttft + itl is (about) the whole stream.
    itl = stats["GenerateStream[dense]/itl"]
    assert itl["min_response_time"] > 0 and itl["total_response_time"] < stream["total_response_time"]
    assert itl["total_response_time"] + ttft["total_response_time"] <= stream["total_response_time"] * 1.01
    # response_length is the bytes of the generated text (" Paris.").
    assert stream["total_content_length"] == 7 * stream["num_requests"]
    assert stats["Generate[dense]"]["total_content_length"] == 7 * stats["Generate[dense]"]["num_requests"]
    sent = [r for r in recorder.seen if r[3] not in (BROKEN, MANY)]
    assert sent and all(
        tokens == 7 and temp == 0.0 and variant == "" and ignore_eos
        for _, tokens, temp, variant, ignore_eos in sent
    )
    assert not any(r[4] for r in recorder.seen if r[3] in (BROKEN, MANY))  # off unless asked
    assert any(prompt.startswith("The capital of") for prompt, *_ in sent)

    code, stats, output = broken
    assert code == 1, output  # locust exits 1 when any request failed
    assert set(stats) == {f"Generate[{BROKEN}]", f"GenerateStream[{BROKEN}]"}, output  # the pinned variant
    for s in stats.values():
        assert s["num_failures"] == s["num_requests"] > 0, output
    assert "UNAVAILABLE: variant broken is down" in output  # failures are grouped by code: details

    code, stats, output = many  # a new variant name in every answer: the entries stay bounded
    assert code == 0, output
    labels = {name.split("[")[1].split("]")[0] for name in stats}
    assert "other" in labels and len(labels - {"other"}) <= 16, sorted(stats)

    code, stats, output = remote  # any host may be targeted: this one does not answer
    assert code == 1, output
    assert stats["Generate[?]"]["num_failures"] == stats["Generate[?]"]["num_requests"] > 0, output

    code, stats, output = bad
    assert code == 2 and not stats, output
    assert "mTLS needs both a client certificate and its key" in output


@pytest.mark.asyncio(loop_scope="session")
async def test_locust_over_mutual_tls_with_an_api_key(tmp_path: Path) -> None:
    """A real gateway (fake engine) with API keys and mTLS on both doors: locust gets through with
    the CA, a client certificate and the key; a wrong key gets UNAUTHENTICATED / HTTP 401."""
    pki = make_pki(tmp_path)
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: load, scope: user, sha256: {hash_key(KEY)}}}\n")
    config = Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=0, drain_timeout_s=2.0),
        auth=AuthConfig(keys_file=str(keys)),
        tls=TlsConfig(
            cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file=str(pki.ca)
        ),
        variants=[VariantConfig(name="dense")],
    )
    app = await start_app(config, engines={"dense": FakeEngine("dense", text="Paris")})  # type: ignore[dict-item]
    tls = (
        "--dg-tls-ca",
        str(pki.ca),
        "--dg-tls-cert",
        str(pki.client_cert),
        "--dg-tls-key",
        str(pki.client_key),
    )
    https: dict[str, Any] = {"DRIFTGATE_TLS_CA": str(pki.ca), "DRIFTGATE_TLS_CERT": str(pki.client_cert)}
    https |= {"DRIFTGATE_TLS_KEY": str(pki.client_key), "DRIFTGATE_PROTOCOL": "http"}
    try:
        grpc_host, http_host = f"localhost:{app.grpc.port}", f"https://localhost:{app.http_port}"
        runs = await asyncio.gather(
            run_locust(grpc_host, args=tls, DRIFTGATE_API_KEY=KEY),
            run_locust(grpc_host, args=(*tls, "--dg-api-key", "wrong")),
            run_locust(http_host, DRIFTGATE_API_KEY=KEY, **https),
            run_locust(http_host, DRIFTGATE_API_KEY="wrong", **https),
        )
    finally:
        await app.stop()
    (code, stats, output), (bad_code, bad_stats, bad_output) = runs[0], runs[1]
    assert code == 0 and stats["Generate[dense]"]["num_requests"] > 0, output
    assert bad_code == 1 and bad_stats["Generate[?]"]["num_failures"] > 0, bad_output
    assert "UNAUTHENTICATED" in bad_output
    (code, stats, output), (bad_code, bad_stats, bad_output) = runs[2], runs[3]
    assert code == 0 and stats["chat/stream[dense]"]["num_requests"] > 0, output
    assert bad_code == 1 and bad_stats["completions[?]"]["num_failures"] > 0, bad_output
    assert "HTTP 401" in bad_output


WHOLE = ("completions", "chat")
STREAMS = ("completions/stream", "chat/stream")
HTTP_NAMES = {
    *(f"{n}[dense]" for n in (*WHOLE, *STREAMS)),
    *(f"{n}[dense]{suffix}" for n in STREAMS for suffix in ("/ttft", "/itl")),
}


@pytest.mark.asyncio(loop_scope="session")
async def test_locust_http_user_records_requests_and_failures() -> None:
    config = Config(server=ServerConfig(http_port=0), variants=[VariantConfig(name="dense")])
    gateway = Gateway(config, ListSink())
    engine = FakeEngine("dense", text="Paris is nice")
    gateway.attach("dense", engine)
    server = await start_http(gateway, "127.0.0.1", 0)
    try:
        host = f"127.0.0.1:{server.port}"
        ok, missing = await asyncio.gather(
            run_locust(
                f"http://{host}/",
                DRIFTGATE_PROTOCOL="http",
                DRIFTGATE_MAX_TOKENS="7",
                DRIFTGATE_IGNORE_EOS="1",
            ),
            run_locust(host, DRIFTGATE_PROTOCOL="http", DRIFTGATE_VARIANT="nope"),
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
    for name in (*WHOLE, *STREAMS):
        entry = stats[f"{name}[dense]"]
        assert entry["total_content_length"] == len("Paris is nice") * entry["num_requests"]
    for suffix in ("/ttft", "/itl"):  # 3 tokens per answer: every stream has both
        assert (
            stats[f"chat/stream[dense]{suffix}"]["num_requests"]
            == stats["chat/stream[dense]"]["num_requests"]
        )
    assert any(prompt.startswith("The capital of") for prompt in engine.prompts)
    assert engine.samplings and all(s.ignore_eos and s.max_tokens == 7 for s in engine.samplings)

    code, stats, output = missing
    assert code == 1, output
    assert set(stats) == {f"{name}[nope]" for name in (*WHOLE, *STREAMS)}, output
    for s in stats.values():
        assert s["num_failures"] == s["num_requests"] > 0, output
    assert "HTTP 404: The model 'nope' does not exist" in output


def test_options_read_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(LOCUSTFILE.parent))  # as locust imports it: next to the locustfile
    from dgload.options import options_of

    monkeypatch.setenv("DRIFTGATE_IGNORE_EOS", "Yes")
    assert options_of(None).ignore_eos
    flags = argparse.Namespace(dg_ignore_eos="off", dg_max_tokens="9")  # a flag wins over its variable
    assert options_of(flags) == replace(options_of(None), ignore_eos=False, max_tokens=9)
    monkeypatch.setenv("DRIFTGATE_IGNORE_EOS", "maybe")
    with pytest.raises(ValueError, match=r"DRIFTGATE_IGNORE_EOS \(--dg-ignore-eos\): not a boolean: 'maybe'"):
        options_of(None)
