"""`engine.fused_kernels`: driftgate's vLLM plugin compiles inductor's fused element-wise kernels for one
thread when asked (`serving.engines.vllm_plugin`). The config logic is tested on its own, on vLLM's
real config builder (no engine), and on a real engine whose compiled code is read back."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving.config import FusedKernels, load_config
from serving.engines import vllm_plugin
from serving.engines.base import Engine
from serving.engines.vllm_engine import VllmEngine, engine_env
from serving.engines.vllm_server import server_env, variant_env
from serving.errors import ConfigError
from tests.conftest import assert_same_greedy_answer, dense_variant, model_dir

SAVED_OR_LOADED = re.compile(
    r"(?:saved AOT compiled function to|Directly load AOT compilation from path) (\S+)"
)


def _config(backend: str) -> SimpleNamespace:
    return SimpleNamespace(compilation_config=SimpleNamespace(backend=backend, inductor_compile_config={}))


def test_serial_kernels_only_where_asked_and_inductor_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vllm_plugin.KERNELS_ENV, raising=False)
    untouched = _config("inductor")
    assert not vllm_plugin.serial_kernels(untouched)
    assert untouched.compilation_config.inductor_compile_config == {}
    monkeypatch.setenv(vllm_plugin.KERNELS_ENV, "parallel")
    assert not vllm_plugin.serial_kernels(untouched)
    monkeypatch.setenv(vllm_plugin.KERNELS_ENV, "serial")
    eager = _config("eager")
    assert not vllm_plugin.serial_kernels(eager) and eager.compilation_config.inductor_compile_config == {}
    serial = _config("inductor")
    assert vllm_plugin.serial_kernels(serial)
    assert serial.compilation_config.inductor_compile_config == {
        "cpp.dynamic_threads": False,
        "cpp.threads": 1,
    }


def test_the_setting_loads_from_yaml_and_reaches_every_engine_env(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("variants: [{name: a, engine: {fused_kernels: serial}}, {name: b, role: shadow}]")
    serial, default = load_config(path).variants
    assert (serial.engine.fused_kernels, default.engine.fused_kernels) == (
        FusedKernels.SERIAL,
        FusedKernels.PARALLEL,
    )
    assert engine_env(serial)[vllm_plugin.KERNELS_ENV] == "serial"
    assert engine_env(default)[vllm_plugin.KERNELS_ENV] == "parallel"
    inherited = {"PATH": "/bin", vllm_plugin.KERNELS_ENV: "serial"}
    assert variant_env(serial, base=inherited)[vllm_plugin.KERNELS_ENV] == "serial"
    assert variant_env(default, base=inherited)[vllm_plugin.KERNELS_ENV] == "parallel"
    assert vllm_plugin.KERNELS_ENV not in server_env("0", inherited)  # a bare `vllm serve`: vLLM's own
    path.write_text("variants: [{name: a, engine: {fused_kernels: threaded}}]")
    with pytest.raises(ConfigError, match="fused_kernels"):
        load_config(path)


def test_vllms_config_builder_applies_it_and_keys_the_compile_cache_on_it(
    monkeypatch: pytest.MonkeyPatch, restored_environ: None
) -> None:
    """vLLM's own `create_engine_config` (plugins loaded, CPU platform checked), no engine started."""
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(model_dir()), max_model_len=512, kv_cache_memory_bytes=1 << 28)
    built = {}
    for choice in FusedKernels:
        monkeypatch.setenv(vllm_plugin.KERNELS_ENV, choice.value)
        compilation = args.create_engine_config().compilation_config
        built[choice] = (
            compilation.inductor_compile_config["cpp.dynamic_threads"],
            compilation.compute_hash(),
        )
    assert built[FusedKernels.PARALLEL][0] is True  # vLLM's CPU default
    assert built[FusedKernels.SERIAL][0] is False
    assert built[FusedKernels.SERIAL][1] != built[FusedKernels.PARALLEL][1]


def _compiled_kernels(log: str) -> list[str]:
    """The sources of the fused kernels in the AOT artifact an engine's log names."""
    found = SAVED_OR_LOADED.search(log)
    assert found, "the engine neither saved nor loaded an AOT artifact:\n" + log[-3000:]
    path = Path(found.group(1))
    artifact = next(p for p in (path, *path.parents) if p.parent.name == "torch_aot_compile")
    sources = [p.read_text() for p in artifact.rglob("*.py")]
    return [s for s in sources if "cpp_fused_" in s]


@pytest.mark.engine
@pytest.mark.asyncio(loop_scope="session")
async def test_a_serial_engine_runs_single_threaded_kernels_and_answers_the_same(
    dense_engine: Engine, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    variant = dense_variant("serial")
    variant.engine.fused_kernels = FusedKernels.SERIAL
    serial = await VllmEngine.start(variant)
    try:
        kernels = _compiled_kernels("".join(capfd.readouterr()))
        assert kernels, "no fused kernel in the serial engine's artifact"
        assert not [k for k in kernels if "#pragma omp parallel" in k or "omp_get_max_threads" in k]
        await assert_same_greedy_answer(dense_engine, serial)
    finally:
        await serial.shutdown()
