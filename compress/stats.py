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
from serving.home import checkpoint_sha256

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


def _source_info(source_dir: Path, num_params: int) -> dict[str, Any]:
    """The dense source: where it is, its hash, its bytes on disk and as fp32, its parameter count."""
    return {
        "path": str(Path(source_dir).resolve()),
        "sha256": checkpoint_sha256(source_dir),
        "weights_bytes": checkpoint.weights_bytes(source_dir),
        "fp32_bytes": 4 * num_params,
        "num_params": num_params,
    }


def _size_report(out_dir: Path, source: dict[str, Any]) -> dict[str, Any]:
    """Bytes of the checkpoint in ``out_dir`` and their ratios to the source and to an fp32 copy."""
    out_bytes = checkpoint.weights_bytes(out_dir)
    return {
        "weights_bytes": out_bytes,
        "dir_bytes": checkpoint.dir_bytes(out_dir),
        "source_weights_bytes": source["weights_bytes"],
        "fp32_dense_bytes": source["fp32_bytes"],
        "ratio_vs_source": out_bytes / source["weights_bytes"],
        "ratio_vs_fp32": out_bytes / source["fp32_bytes"],
    }


def _bits_report(
    src_tensors: dict[str, checkpoint.TensorInfo],
    out_tensors: dict[str, checkpoint.TensorInfo],
    modules: list[str],
) -> dict[str, float]:
    """Stored bits per weight of the compressed layers, and of the whole checkpoint per source parameter."""
    src_params = sum(t.numel for t in src_tensors.values())
    stored_bytes = sum(t.nbytes for t in out_tensors.values())
    bits = {
        "compressed_layers": checkpoint.layer_bits_per_weight(src_tensors, out_tensors, modules),
        "overall": 8 * stored_bytes / src_params,
    }
    return {k: round(v, 4) for k, v in bits.items()}


def _storage(out_dir: Path) -> dict[str, str]:
    """The checkpoint's storage format (from its quantization config) and dtype."""
    config = json.loads((out_dir / "config.json").read_text())
    qconfig = config.get("quantization_config") or {}
    return {"format": qconfig.get("format", "dense"), "dtype": str(config.get("dtype", "bfloat16"))}


def _checks(
    recipe: Recipe, out_tensors: dict[str, checkpoint.TensorInfo], size: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The checks every checkpoint gets: bf16 embeddings and, at 4 bits or fewer, the size vs fp32."""
    embed_dtypes = sorted({t.dtype for name, t in out_tensors.items() if "embed" in name})
    checks = {
        "embeddings_bf16": _check(
            embed_dtypes == ["BF16"], embed_dtypes, ["BF16"], "embedding tables stored bf16"
        )
    }
    if recipe.weight_bits <= 4:
        checks["bytes_vs_fp32"] = _check(
            size["ratio_vs_fp32"] < FOUR_BIT_FP32_RATIO_LIMIT,
            round(size["ratio_vs_fp32"], 4),
            FOUR_BIT_FP32_RATIO_LIMIT,
            "4-bit checkpoint bytes / bytes of an fp32 dense copy < limit",
        )
    return checks


def _sparsity_checks(
    recipe: Recipe, out_dir: Path, modules: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A pruned checkpoint's measured sparsity, and its checks against the recipe's target (and N:M)."""
    nm = recipe.params.structured if isinstance(recipe.params, SparseGPTParams) else None
    sparsity = sparsity_report(out_dir, modules, nm)
    target = float(getattr(recipe.params, "sparsity", 0.0))
    checks = {
        "sparsity": _check(
            sparsity["overall"] >= target - SPARSITY_TOLERANCE,
            round(sparsity["overall"], 6),
            target - SPARSITY_TOLERANCE,
            "fraction of exact zeros over the pruned layers >= target - 0.01",
        )
    }
    if nm is not None:
        checks["nm_pattern"] = _check(
            sparsity["pattern_exact"],
            sparsity["pattern_violations"],
            0,
            f"every group of {nm[1]} consecutive input weights holds >= {nm[0]} zeros",
        )
    return sparsity, checks


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
    source = _source_info(source_dir, sum(t.numel for t in src_tensors.values()))
    size = _size_report(out_dir, source)
    checks = _checks(recipe, out_tensors, size)
    sparsity = None
    notes = list(notes)
    if recipe.prunes:
        sparsity, pruning_checks = _sparsity_checks(recipe, out_dir, modules)
        checks.update(pruning_checks)
        notes.append(STORED_DENSE_NOTE)
    return Manifest(
        recipe=recipe.to_dict(),
        description=recipe.description,
        source=source,
        calibration=calibration,
        versions=library_versions(),
        resolved={**resolved, "num_modules": len(modules), "modules": modules},
        timing={k: round(v, 3) for k, v in timing.items()},
        size=size,
        bits_per_weight=_bits_report(src_tensors, out_tensors, modules),
        storage=_storage(out_dir),
        sparsity=sparsity,
        checks=checks,
        notes=notes,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
