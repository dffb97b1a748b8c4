"""Concurrent engine start-up: bounded builds, the primary first, failures, and the spawn scope that
keeps each engine's process-global environment its own until its engine-core process is started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from serving.app import start_app, start_concurrency
from serving.config import Config, Role, ServerConfig, VariantConfig
from serving.engines.base import Engine
from serving.engines.vllm_engine import _SPAWN_LOCK, _SpawnScope
from tests.fakes import OwnedFake


def _config(n_shadows: int, concurrency: int) -> Config:
    return Config(
        server=ServerConfig(
            grpc_port=0,
            metrics_port=-1,
            http_port=-1,
            drain_timeout_s=1.0,
            engine_start_concurrency=concurrency,
        ),
        variants=[VariantConfig(name=f"s{i}", role=Role.SHADOW) for i in range(n_shadows)]
        + [VariantConfig(name="dense")],
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_builds_run_at_once_up_to_the_bound_primary_first() -> None:
    running, most, begun = 0, 0, []

    async def factory(variant: VariantConfig) -> Engine:
        nonlocal running, most
        begun.append(variant.name)
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return OwnedFake(variant.name)

    app = await start_app(_config(5, 2), factory=factory)
    try:
        assert most == 2 and begun[0] == "dense" and len(begun) == 6
        assert set(app.gateway.engines) == {"dense", *(f"s{i}" for i in range(5))}
        assert app.gateway.is_ready()
    finally:
        await app.stop()
    assert start_concurrency(_config(1, 0)) == len(os.sched_getaffinity(0))


@pytest.mark.asyncio(loop_scope="session")
async def test_a_failed_build_skips_the_rest_and_shuts_down_the_built_ones() -> None:
    built: list[OwnedFake] = []
    begun: list[str] = []

    async def factory(variant: VariantConfig) -> Engine:
        begun.append(variant.name)
        if variant.name == "s0":
            await asyncio.sleep(0.01)
            raise RuntimeError("engine core died")
        await asyncio.sleep(0.05)  # s1 is under way when s0 fails: it is awaited, then shut down
        built.append(OwnedFake(variant.name))
        return built[-1]

    with pytest.raises(RuntimeError, match="engine core died"):
        await start_app(_config(4, 3), factory=factory)
    assert begun == ["dense", "s0", "s1"]  # s2 and s3 never began
    assert [e.name for e in built] == ["dense", "s1"] and all(e.shut for e in built)


def _child_sees(key: str) -> str:
    """What a process started now sees of `key` in its environment."""
    code = f"import os; print(os.environ.get({key!r}, '-'))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_spawn_scope_holds_the_lock_and_the_environment_until_released() -> None:
    key = "DRIFTGATE_TEST_SPAWN_SCOPE"
    assert key not in os.environ
    second_entered = threading.Event()
    seen_by_second: list[str] = []
    seen_preload: list[str] = []

    def second() -> None:
        with _SpawnScope(lambda: {key: "second", "LD_PRELOAD": os.environ.get("LD_PRELOAD", "") + ":b"}):
            second_entered.set()
            seen_by_second.append(_child_sees(key))
            seen_preload.append(os.environ["LD_PRELOAD"])

    preload = os.environ.get("LD_PRELOAD")
    with _SpawnScope(lambda: {key: "first", "LD_PRELOAD": "a"}) as scope:
        other = threading.Thread(target=second)
        other.start()
        assert _child_sees(key) == "first"  # a process started in the scope inherits its values
        assert not second_entered.wait(0.2)  # the other build waits for the lock
        scope.release()  # the engine-core process has been started
        assert second_entered.wait(5)
        other.join(5)
        scope.release()  # idempotent; the scope's exit releases nothing twice
    assert seen_by_second == ["second"]
    assert key not in os.environ and not _SPAWN_LOCK.locked()
    assert os.environ.get("LD_PRELOAD") == preload
    # the second build computed its environment after the first had restored LD_PRELOAD, not "a:b"
    assert seen_preload == [(preload or "") + ":b"]
