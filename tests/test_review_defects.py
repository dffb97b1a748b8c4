"""Defects found in review, each pinned by a test that fails on the code before its fix (5485f00):

* `driftgate probe` on a config with a missing checkpoint exited 1 with the config error wrapped
  as an engine failure ("its engine did not start"), after starting the engines before it;
* `driftgate demo` ended in a traceback when a compression failed;
* `start_app` left the gRPC port it had opened listening when the metrics port could not be bound.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.app import start_app
from serving.config import Config, Role, ServerConfig, VariantConfig
from tests.conftest import model_dir
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[1]
DRIFTGATE = ROOT / ".venv" / "bin" / "driftgate"


def _driftgate(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DRIFTGATE), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_probe_with_a_missing_checkpoint_is_a_config_error_before_any_engine(tmp_path: Path) -> None:
    missing = tmp_path / "variants" / "never-built"
    config = tmp_path / "probe.yaml"
    config.write_text(
        "variants:\n"
        f"  - {{name: dense, model: {model_dir()}}}\n"
        f"  - {{name: never-built, role: shadow, model: {missing}}}\n"
    )
    done = _driftgate(
        "probe", "--config", str(config), "--probes", "builtin:capitals-small", "--out", str(tmp_path / "out")
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("driftgate: config error: variant never-built: no checkpoint at "), (
        done.stderr
    )
    assert str(missing) in done.stderr
    assert "starting variant" not in done.stderr  # no engine was started (the primary's neither)
    assert "engine did not start" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_demo_with_a_failing_compression_says_so_without_a_traceback(tmp_path: Path) -> None:
    """The compression fails at once (its interpreter does not exist); the model pull before it
    is a no-op (the pulled model is linked into a fresh DRIFTGATE_HOME)."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / model_dir().name).symlink_to(model_dir(), target_is_directory=True)
    python = tmp_path / "no-such-venv" / "bin" / "python"
    done = _driftgate(
        "demo", env={"DRIFTGATE_HOME": str(home), "DRIFTGATE_COMPRESS_PYTHON": str(python)}, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    failed = [
        line for line in done.stdout.splitlines() if line.startswith("driftgate demo: compression failed: ")
    ]
    assert failed, done.stdout[-3000:]
    assert f"compress environment not found: {python} does not exist" in failed[0]
    assert "DRIFTGATE_COMPRESS_PYTHON" in failed[0]
    assert not list((home / "variants").glob("*/config.json"))  # no half-built variant left


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(grpc_port: int, metrics_port: int) -> Config:
    return Config(
        server=ServerConfig(
            grpc_port=grpc_port, metrics_port=metrics_port, http_port=-1, drain_timeout_s=1.0
        ),
        variants=[VariantConfig(name="dense"), VariantConfig(name="shadow", role=Role.SHADOW)],
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_metrics_port_in_use_fails_start_and_closes_the_grpc_port() -> None:
    grpc_port = _free_port()
    engines = {n: FakeEngine(n) for n in ("dense", "shadow")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError) as info:
            await start_app(_config(grpc_port, taken.getsockname()[1]), engines=dict(engines))  # type: ignore[arg-type]
        assert info.value.errno == errno.EADDRINUSE
    # Nothing listens on the gRPC port any more. (gRPC binds with SO_REUSEPORT, so a second server
    # on the same port would start even beside a leaked one: a refused connection is the proof.)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", grpc_port), timeout=5):
        pass
    app = await start_app(_config(grpc_port, -1), engines=dict(engines))  # type: ignore[arg-type]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop()
