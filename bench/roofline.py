"""The single-stream decode roofline: memory bandwidth over the bytes read per decoded token.

A decode step of a small dense model at batch 1 reads every weight once, so tokens/s cannot beat
bandwidth / weight bytes. Bandwidth is measured here as vLLM's CPU worker would see it: torch
summing a 1 GiB fp32 tensor with the engine's thread count (best of 5), on an otherwise idle box.
Weight bytes come from the checkpoint's safetensors headers (parameters × the bytes of the dtype the
bench's engines are served in: `engine.dtype` auto, bf16, or float32 on a CPU without AVX-512); a tied
embedding is counted once, as the LM head reads it (the input lookup reads one row).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any


def parameter_count(model_dir: str | Path) -> int:
    """Parameters in the checkpoint's safetensors files (from the headers; no weights loaded)."""
    total = 0
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
            total += n
    return total


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
    params = parameter_count(model_dir)
    dtype = served_dtype(model_dir)
    weight_bytes = params * DTYPE_BYTES[dtype]
    bandwidth = read_bandwidth(threads)
    return {
        "threads": threads,
        "bandwidth_gb_s": bandwidth / 1e9,
        "parameters": params,
        "dtype": dtype,
        "weight_bytes": weight_bytes,
        "roofline_tok_s": bandwidth / weight_bytes,
        "how": f"torch fp32 sum over 1 GiB, best of 5, with the engine's thread count; "
        f"params x {DTYPE_BYTES[dtype]} bytes ({dtype})",
    }
