"""Measurements of a written checkpoint, and the manifest built from them (worker side)."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from compress import checkpoint
from compress.manifest import Manifest
from compress.pruning import nm_violations, zero_fraction
from compress.recipes import Recipe, SparseGPTParams

FOUR_BIT_FP32_RATIO_LIMIT = 0.35
SPARSITY_TOLERANCE = 0.01
STORED_DENSE_NOTE = (
    "Pruned weights are stored dense (bf16): vLLM 0.32 removed the compressed sparse formats, so this "
    "checkpoint is as large as the dense source and runs no faster; only its zeros differ."
)
VERSIONED = ("llmcompressor", "compressed-tensors", "transformers", "torch", "safetensors", "datasets")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def load_weights(model_dir: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of a checkpoint, read from its safetensors shards."""
    from safetensors import safe_open

    wanted = set(names)
    out: dict[str, torch.Tensor] = {}
    for path in checkpoint.safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                if key in wanted:
                    out[key] = fh.get_tensor(key)
    missing = wanted - set(out)
    if missing:
        raise KeyError(f"tensors missing from {model_dir}: {sorted(missing)[:5]}")
    return out


def sparsity_report(model_dir: Path, modules: list[str], nm: tuple[int, int] | None) -> dict[str, Any]:
    """Measured exact-zero fractions of ``modules`` (per layer and overall) and, for N:M, the pattern."""
    weights = load_weights(model_dir, [f"{m}.weight" for m in modules])
    layers: dict[str, float] = {}
    zeros = total = violations = 0
    for module in modules:
        weight = weights[f"{module}.weight"]
        layers[module] = round(zero_fraction(weight), 6)
        zeros += int((weight == 0).sum())
        total += weight.numel()
        if nm is not None:
            violations += nm_violations(weight, *nm)
    report: dict[str, Any] = {"overall": zeros / total if total else 0.0, "layers": layers}
    if nm is not None:
        report.update(
            pattern=f"{nm[0]}:{nm[1]}", pattern_violations=violations, pattern_exact=violations == 0
        )
    return report


def _check(passed: bool, value: Any, limit: Any, what: str) -> dict[str, Any]:
    return {"passed": bool(passed), "value": value, "limit": limit, "what": what}


def build_manifest(
    recipe: Recipe,
    source_dir: Path,
    out_dir: Path,
    modules: list[str],
    resolved: dict[str, Any],
    timing: dict[str, float],
    calibration: dict[str, Any] | None,
    notes: list[str],
) -> Manifest:
    """Measure the checkpoint in ``out_dir`` against its dense source and describe it."""
    src_tensors = checkpoint.read_tensors(source_dir)
    out_tensors = checkpoint.read_tensors(out_dir)
    src_params = sum(t.numel for t in src_tensors.values())
    fp32 = 4 * src_params
    src_bytes = checkpoint.weights_bytes(source_dir)
    out_bytes = checkpoint.weights_bytes(out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    qconfig = config.get("quantization_config") or {}
    size = {
        "weights_bytes": out_bytes,
        "dir_bytes": checkpoint.dir_bytes(out_dir),
        "source_weights_bytes": src_bytes,
        "fp32_dense_bytes": fp32,
        "ratio_vs_source": out_bytes / src_bytes,
        "ratio_vs_fp32": out_bytes / fp32,
    }
    stored_bytes = sum(t.nbytes for t in out_tensors.values())
    bits = {
        "compressed_layers": checkpoint.layer_bits_per_weight(src_tensors, out_tensors, modules),
        "overall": 8 * stored_bytes / src_params,
    }
    embed_dtypes = sorted({t.dtype for name, t in out_tensors.items() if "embed" in name})
    checks = {
        "embeddings_bf16": _check(
            embed_dtypes == ["BF16"], embed_dtypes, ["BF16"], "embedding tables stored bf16"
        )
    }
    sparsity = None
    notes = list(notes)
    if recipe.weight_bits <= 4:
        checks["bytes_vs_fp32"] = _check(
            size["ratio_vs_fp32"] < FOUR_BIT_FP32_RATIO_LIMIT,
            round(size["ratio_vs_fp32"], 4),
            FOUR_BIT_FP32_RATIO_LIMIT,
            "4-bit checkpoint bytes / bytes of an fp32 dense copy < limit",
        )
    if recipe.prunes:
        nm = recipe.params.structured if isinstance(recipe.params, SparseGPTParams) else None
        sparsity = sparsity_report(out_dir, modules, nm)
        target = float(getattr(recipe.params, "sparsity", 0.0))
        checks["sparsity"] = _check(
            sparsity["overall"] >= target - SPARSITY_TOLERANCE,
            round(sparsity["overall"], 6),
            target - SPARSITY_TOLERANCE,
            "fraction of exact zeros over the pruned layers >= target - 0.01",
        )
        if nm is not None:
            checks["nm_pattern"] = _check(
                sparsity["pattern_exact"],
                sparsity["pattern_violations"],
                0,
                f"every group of {nm[1]} consecutive input weights holds >= {nm[0]} zeros",
            )
        notes.append(STORED_DENSE_NOTE)
    resolved = {**resolved, "num_modules": len(modules), "modules": modules}
    return Manifest(
        recipe=recipe.to_dict(),
        description=recipe.description,
        source={
            "path": str(Path(source_dir).resolve()),
            "sha256": checkpoint.checkpoint_sha256(source_dir),
            "weights_bytes": src_bytes,
            "fp32_bytes": fp32,
            "num_params": src_params,
        },
        calibration=calibration,
        versions=library_versions(),
        resolved=resolved,
        timing={k: round(v, 3) for k, v in timing.items()},
        size=size,
        bits_per_weight={k: round(v, 4) for k, v in bits.items()},
        storage={"format": qconfig.get("format", "dense"), "dtype": str(config.get("dtype", "bfloat16"))},
        sparsity=sparsity,
        checks=checks,
        notes=notes,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
