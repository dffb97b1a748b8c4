"""serving.engines.cpu: the host's feature flags, the bf16-without-AVX-512 warning and `dtype: auto`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.config import EngineConfig, VariantConfig
from serving.engines.cpu import cpu_fields, cpu_flags, dtype_advice, is_quantized, resolve_dtype
from serving.engines.vllm_server import variant_command

AVX2_ONLY = (
    "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx fma avx2\n\n"
    "processor\t: 1\nmodel name\t: other\n"
)
AVX512 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


def test_flags_of_the_first_processor(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_ONLY)
    assert cpu_flags(info) == frozenset({"fpu", "sse4_2", "avx", "fma", "avx2"})
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu_fields(info)["model name"] == "AMD EPYC"  # the first processor's block only
    assert cpu_fields(tmp_path / "missing") == {}


def test_bf16_without_avx512_is_warned_about_and_nothing_else(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_ONLY)
    advice = dtype_advice("bfloat16", cpu_flags(info))
    assert advice is not None and "engine.dtype: auto" in advice
    assert dtype_advice("float32", cpu_flags(info)) is None
    info.write_text(AVX512)
    assert dtype_advice("bfloat16", cpu_flags(info)) is None
    assert dtype_advice("bfloat16", frozenset()) is None  # flags unknown: no guess


def _checkpoint(path: Path, quantization: dict[str, object] | None) -> Path:
    path.mkdir()
    config: dict[str, object] = {"model_type": "llama", "torch_dtype": "bfloat16"}
    if quantization is not None:
        config["quantization_config"] = quantization
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_auto_dtype_is_float32_only_for_an_unquantized_checkpoint_without_avx512(tmp_path: Path) -> None:
    avx2 = frozenset({"avx", "avx2", "fma"})
    dense = _checkpoint(tmp_path / "dense", None)
    sparse = _checkpoint(tmp_path / "sparse", {"quant_method": "compressed-tensors", "sparsity_config": {}})
    int8 = _checkpoint(
        tmp_path / "int8", {"quant_method": "compressed-tensors", "config_groups": {"group_0": {}}}
    )
    gptq = _checkpoint(tmp_path / "gptq", {"quant_method": "gptq", "bits": 4})
    assert not is_quantized(dense) and not is_quantized(sparse) and not is_quantized(tmp_path / "missing")
    assert is_quantized(int8) and is_quantized(gptq)
    assert resolve_dtype("auto", dense, avx2) == resolve_dtype("auto", sparse, avx2) == "float32"
    assert resolve_dtype("auto", int8, avx2) == resolve_dtype("auto", gptq, avx2) == "auto"  # vLLM's own
    assert resolve_dtype("auto", dense, avx2 | {"avx512f"}) == "auto"
    assert resolve_dtype("auto", dense, frozenset()) == "auto"  # flags unknown: no guess
    assert resolve_dtype("bfloat16", dense, avx2) == "bfloat16"  # an explicit dtype is kept
    assert dtype_advice("auto", avx2) is None


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_a_remote_variants_server_gets_the_resolved_dtype(tmp_path: Path, dtype: str) -> None:
    """`driftgate variant serve` and local remote servers start vLLM with the dtype resolved here,
    never with driftgate's own meaning of `auto` left for vLLM to read as its own."""
    dense = _checkpoint(tmp_path / "dense", None)
    variant = VariantConfig(name="v", model=str(dense), engine=EngineConfig(dtype=dtype))
    command = variant_command(variant, 8000)
    assert command[command.index("--dtype") + 1] == resolve_dtype(dtype, dense, cpu_flags())
