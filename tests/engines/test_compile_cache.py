"""vLLM's AOT compile cache on CPU: driftgate's vLLM plugin (`serving.engines.vllm_plugin`) lets a
restarted engine load its compiled model instead of compiling it again, and the loaded model answers
as the compiled one does. The plugin's logic is also tested on its own, without vLLM."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from serving.config import load_config
from serving.engines import vllm_plugin
from serving.engines.base import Engine
from serving.engines.vllm_engine import VllmEngine, compile_cache_env, engine_env
from tests.conftest import assert_same_greedy_answer, dense_variant

LOADED = "Directly load AOT compilation"
RECOMPILED = "Compiling model again due to a load failure"


class _Artifacts:
    def __init__(self, compiled_fn: Any) -> None:
        self.compiled_fn = compiled_fn


class _Loaded:
    def __init__(self, compiled_fn: Any) -> None:
        self._artifacts = _Artifacts(compiled_fn)


def test_the_loader_gives_a_plain_compiled_function_a_no_op_finalize() -> None:
    def compiled(*args: Any) -> str:
        return "ran"

    calls: list[tuple[Any, ...]] = []

    def load(*args: Any, **kwargs: Any) -> _Loaded:
        calls.append(args)
        return _Loaded(compiled)

    loaded = vllm_plugin.wrap_loader(load)("file", f_globals={})
    assert calls == [("file",)]
    assert loaded._artifacts.compiled_fn is compiled
    assert compiled.finalize_loading(object()) is None  # type: ignore[attr-defined]
    assert compiled() == "ran"


def test_the_loader_leaves_vllms_own_finalize_and_wraps_once() -> None:
    class Serializable:
        def __init__(self) -> None:
            self.finalized: list[Any] = []

        def finalize_loading(self, vllm_config: Any) -> None:
            self.finalized.append(vllm_config)

    own = Serializable()
    wrapped = vllm_plugin.wrap_loader(lambda *a, **k: _Loaded(own))
    assert vllm_plugin.wrap_loader(wrapped) is wrapped
    wrapped("file")._artifacts.compiled_fn.finalize_loading("config")
    assert own.finalized == ["config"]
    assert vllm_plugin.wrap_loader(lambda: None)() is None  # nothing to patch: passed through


def test_register_is_inert_unless_driftgate_started_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.compiler

    original = torch.compiler.load_compiled_function
    monkeypatch.setattr(torch.compiler, "load_compiled_function", original)  # restored after the test
    monkeypatch.delenv(vllm_plugin.ENV, raising=False)
    vllm_plugin.register()
    assert torch.compiler.load_compiled_function is original
    monkeypatch.setenv(vllm_plugin.ENV, "1")
    vllm_plugin.register()
    vllm_plugin.register()  # vLLM may load plugins more than once per process
    patched = torch.compiler.load_compiled_function
    assert patched is not original and getattr(patched, "_driftgate", False)


def test_vllm_finds_the_plugin_and_driftgates_engines_turn_it_on() -> None:
    found = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert found.get("driftgate_aot_load") == "serving.engines.vllm_plugin:register"
    env = engine_env(dense_variant())
    assert env[vllm_plugin.ENV] == "1" and env["VLLM_USE_AOT_COMPILE"] == "1"


def test_aot_compile_false_uses_the_shared_fx_graph_cache(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("variants: [{name: a, engine: {aot_compile: false}}]")
    variant = load_config(path).variants[0]
    assert variant.engine.aot_compile is False
    env = engine_env(variant)
    assert env["VLLM_USE_AOT_COMPILE"] == "0" and env[vllm_plugin.ENV] == "0"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == compile_cache_env(aot=False)["TORCHINDUCTOR_CACHE_DIR"]


@pytest.mark.engine
@pytest.mark.asyncio(loop_scope="session")
async def test_a_restarted_engine_loads_its_compiled_model_and_answers_the_same(
    dense_engine: Engine, capfd: pytest.CaptureFixture[str]
) -> None:
    """The session's engine has compiled (or loaded) the model with these settings, so a second
    engine with the same settings finds the artifact: it must load it, not compile again."""
    capfd.readouterr()
    again = await VllmEngine.start(dense_variant("again"))
    try:
        log = "".join(capfd.readouterr())
        assert LOADED in log and RECOMPILED not in log, log[-3000:]
        await assert_same_greedy_answer(dense_engine, again)
    finally:
        await again.shutdown()
