"""`engine.executor`: with `uni` (the default) driftgate's vLLM plugin runs the model in vLLM's
engine-core process, its OpenMP team bound as vLLM binds a worker's; `mp` is vLLM's CPU default, a
worker process of its own. Tested on the config logic alone, on vLLM's config builder, and on real
engines: the process tree, the threads' binding, and the same greedy answers both ways."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from serving.config import Executor, load_config
from serving.engines import vllm_plugin
from serving.engines.base import Engine
from serving.engines.vllm_engine import VllmEngine, engine_env
from serving.engines.vllm_server import server_env, variant_env
from tests.conftest import assert_same_greedy_answer, dense_variant, model_dir


def _config(world_size: int, backend: str = "mp", data_parallel: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        parallel_config=SimpleNamespace(
            world_size=world_size, data_parallel_size=data_parallel, distributed_executor_backend=backend
        )
    )


def test_uni_only_where_asked_and_one_worker_runs_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vllm_plugin.EXECUTOR_ENV, raising=False)
    config = _config(1)
    assert (
        not vllm_plugin.inline_executor(config)
        and config.parallel_config.distributed_executor_backend == "mp"
    )
    monkeypatch.setenv(vllm_plugin.EXECUTOR_ENV, "mp")
    assert not vllm_plugin.inline_executor(config)
    monkeypatch.setenv(vllm_plugin.EXECUTOR_ENV, "uni")
    for other in (_config(2), _config(1, data_parallel=2), _config(1, backend="external_launcher")):
        assert not vllm_plugin.inline_executor(other)
        assert other.parallel_config.distributed_executor_backend in ("mp", "external_launcher")
    assert (
        vllm_plugin.inline_executor(config) and config.parallel_config.distributed_executor_backend == "uni"
    )


def test_no_openmp_environment_for_an_engine_core_that_does_not_run_the_model() -> None:
    before = dict(os.environ)
    for config in (None, _config(1, "mp")):
        with vllm_plugin.omp_env_for(config):
            assert dict(os.environ) == before


def test_the_setting_loads_from_yaml_and_reaches_every_engine_env(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("variants: [{name: a, engine: {executor: mp}}, {name: b, role: shadow}]")
    mp, default = load_config(path).variants
    assert (mp.engine.executor, default.engine.executor) == (Executor.MP, Executor.UNI)
    assert (engine_env(mp)[vllm_plugin.EXECUTOR_ENV], engine_env(default)[vllm_plugin.EXECUTOR_ENV]) == (
        "mp",
        "uni",
    )
    inherited = {"PATH": "/bin", vllm_plugin.EXECUTOR_ENV: "uni"}
    assert variant_env(mp, base=inherited)[vllm_plugin.EXECUTOR_ENV] == "mp"
    assert vllm_plugin.EXECUTOR_ENV not in server_env("0", inherited)  # a bare `vllm serve`: vLLM's own


def test_vllms_config_builder_applies_it(monkeypatch: pytest.MonkeyPatch, restored_environ: None) -> None:
    """vLLM's own `create_engine_config` (plugins loaded, CPU platform checked), no engine started."""
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(model_dir()), max_model_len=512, kv_cache_memory_bytes=1 << 28)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    built = {}
    for choice in Executor:
        monkeypatch.setenv(vllm_plugin.EXECUTOR_ENV, choice.value)
        built[choice] = args.create_engine_config()
    assert {c: b.parallel_config.distributed_executor_backend for c, b in built.items()} == {
        Executor.UNI: "uni",
        Executor.MP: "mp",
    }
    # The engine core that runs the model is spawned with the OpenMP binding vLLM gives a worker.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with vllm_plugin.omp_env_for(built[Executor.UNI]):
        assert os.environ["OMP_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in os.environ
    with vllm_plugin.omp_env_for(built[Executor.MP]):
        assert "OMP_NUM_THREADS" not in os.environ


def _engine_processes(engine: Engine) -> list[psutil.Process]:
    """The engine-core process of an in-process engine and everything under it."""
    llm: Any = engine._llm  # type: ignore[attr-defined]
    (core,) = llm.engine_core.resources.engine_manager.processes
    root = psutil.Process(core.pid)
    return [root, *root.children(recursive=True)]


def _thread_cores(process: psutil.Process) -> list[set[int]]:
    out = []
    for thread in process.threads():
        try:
            out.append(os.sched_getaffinity(thread.id))
        except OSError:  # the thread ended meanwhile
            continue
    return out


@pytest.mark.engine
@pytest.mark.asyncio(loop_scope="session")
async def test_uni_runs_the_model_in_the_engine_core_bound_as_vllm_binds_a_worker(
    dense_engine: Engine,
) -> None:
    """The session's engine (default settings, cores 0-1): one process, no worker, and an OpenMP
    team of two threads, one on each of its cores."""
    (core,) = _engine_processes(dense_engine)
    assert "EngineCore" in " ".join(core.cmdline())
    bound = _thread_cores(core)
    assert {0} in bound and {1} in bound, bound


@pytest.mark.engine
@pytest.mark.asyncio(loop_scope="session")
async def test_mp_runs_a_worker_process_and_answers_as_uni_does(dense_engine: Engine) -> None:
    variant = dense_variant("mp")
    variant.engine.executor = Executor.MP
    mp = await VllmEngine.start(variant)
    try:
        processes = _engine_processes(mp)
        assert any("Worker" in " ".join(p.cmdline()) for p in processes[1:]), [p.cmdline() for p in processes]
        await assert_same_greedy_answer(dense_engine, mp)
    finally:
        await mp.shutdown()
