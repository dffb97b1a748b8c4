"""What the host CPU gives vLLM's CPU kernels.

vLLM 0.32 runs a bf16 linear layer through oneDNN, which needs AVX-512; on a CPU with AVX2 only
it logs "Failed to create oneDNN linear, fallback to torch linear" and every matmul takes
torch's slower path. On such a CPU (one "AMD EPYC" development box had AVX2 only), torch's bf16
linear at the model's shapes took 2-3x as long as float32's, and the dense model decoded about
45 tok/s at concurrency 16 where an AVX-512 box of the same name gave about 300.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def dtype_advice(dtype: str, flags: frozenset[str]) -> str | None:
    """A warning for an engine that will run bf16 without AVX-512, else None (also when the
    flags are unknown)."""
    if dtype not in ("bfloat16", "bf16") or not flags or "avx512f" in flags:
        return None
    return (
        "this CPU has no AVX-512, so vLLM runs bfloat16 matmuls through torch's fallback, "
        "2-3x slower than float32 here: set engine.dtype: auto (float32 for an unquantized "
        "checkpoint on such a CPU; the 4-bit kernels need bfloat16)"
    )


def is_quantized(model_dir: str | Path) -> bool:
    """Whether the checkpoint's config.json declares quantized weights (GPTQ, AWQ, compressed-tensors
    quantization groups); a compressed-tensors config with only a sparsity section is not."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        return False
    return q.get("quant_method") != "compressed-tensors" or bool(q.get("config_groups"))


def resolve_dtype(dtype: str, model_dir: str | Path, flags: frozenset[str]) -> str:
    """The dtype an engine is started with. `auto` is vLLM's own choice (the checkpoint's dtype),
    except float32 for an unquantized checkpoint on a CPU known to lack AVX-512, where vLLM's bf16
    matmuls take torch's slow fallback; any other value is passed as it is."""
    if dtype != "auto" or not flags or "avx512f" in flags or is_quantized(model_dir):
        return dtype
    return "float32"
