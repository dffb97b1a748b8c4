"""The single-stream decode roofline: memory bandwidth over the bytes read per decoded token.

A decode step of a small dense model at batch 1 reads every weight once, so tokens/s cannot beat
bandwidth / weight bytes. Bandwidth is measured here as vLLM's CPU worker would see it: torch
summing a 1 GiB fp32 tensor with the engine's thread count (best of 5), on an otherwise idle box.
Weight bytes come from the checkpoint's safetensors headers: a floating-point tensor counts the
bytes of the dtype the engine serves it in (`engine.dtype` auto: bf16, or float32 on a CPU without
AVX-512), a tensor stored as integers (int8 weights, packed 4-bit words) its stored bytes, which
vLLM keeps whatever the dtype. A tied embedding is counted once, as the LM head reads it (the
input lookup reads one row).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any


def tensor_sizes(model_dir: str | Path) -> list[tuple[str, int]]:
    """(safetensors dtype, elements) of every tensor in the checkpoint, from the file headers (no
    weights loaded)."""
    out: list[tuple[str, int]] = []
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for dim in entry["shape"]:
                n *= int(dim)
            out.append((str(entry["dtype"]), n))
    return out


def parameter_count(model_dir: str | Path) -> int:
    """Elements in the checkpoint's safetensors files (a packed 4-bit word counts as one)."""
    return sum(n for _, n in tensor_sizes(model_dir))


FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
STORED_BYTES = {"I8": 1, "U8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8, "BOOL": 1}


def split_bytes(sizes: list[tuple[str, int]]) -> tuple[int, int]:
    """(floating-point elements, bytes of the integer tensors) of a checkpoint (pure)."""
    floats = sum(n for dtype, n in sizes if dtype in FLOAT_DTYPES)
    fixed = sum(n * STORED_BYTES.get(dtype, 1) for dtype, n in sizes if dtype not in FLOAT_DTYPES)
    return floats, fixed


def weight_bytes(float_elements: int, fixed_bytes: int, dtype: str) -> int:
    """Bytes a decode step reads when the floating-point tensors are served in `dtype` (pure)."""
    return float_elements * DTYPE_BYTES[dtype] + fixed_bytes


def read_bandwidth(threads: int, gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s torch reads (a sum over `gib` GiB of fp32) with `threads` threads, best of `repeats`."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32)
        x.sum()  # touch every page first
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            x.sum()
            best = min(best, time.perf_counter() - t0)
        return x.numel() * 4 / best
    finally:
        torch.set_num_threads(saved)


DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def served_dtype(model_dir: str | Path) -> str:
    """The dtype `engine.dtype: auto` serves the checkpoint in on this CPU (what the bench's engines
    run, unless a suite sets one)."""
    from serving.engines.cpu import cpu_flags, resolve_dtype

    dtype = resolve_dtype("auto", model_dir, cpu_flags())
    if dtype == "auto":  # vLLM's own choice: the checkpoint's torch_dtype
        config = json.loads((Path(model_dir) / "config.json").read_text())
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return dtype


def roofline(model_dir: str | Path, threads: int = 2) -> dict[str, Any]:
    sizes = tensor_sizes(model_dir)
    floats, fixed = split_bytes(sizes)
    dtype = served_dtype(model_dir)
    read = weight_bytes(floats, fixed, dtype)
    bandwidth = read_bandwidth(threads)
    return {
        "model": Path(model_dir).name,
        "threads": threads,
        "bandwidth_gb_s": bandwidth / 1e9,
        "parameters": sum(n for _, n in sizes),
        "float_parameters": floats,
        "fixed_bytes": fixed,
        "dtype": dtype,
        "weight_bytes": read,
        "roofline_tok_s": bandwidth / read,
        "how": f"torch fp32 sum over 1 GiB, best of 5, with the engine's thread count; floating-point "
        f"tensors x {DTYPE_BYTES[dtype]} bytes ({dtype}), integer tensors as stored",
    }
