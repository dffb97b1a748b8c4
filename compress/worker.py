"""The compress worker: runs one recipe in the compress venv (``python -m compress.worker``).

Started by ``compress.api.compress`` as a subprocess. It writes the checkpoint, the tokenizer and
``driftgate-manifest.json`` into ``--out`` (a temporary directory that the caller renames into place),
and on failure writes ``{"error", "type"}`` as JSON to ``--error-file`` and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from compress.manifest import Manifest
from compress.recipes import Recipe, recipe_from_dict

FAULT_ENV = "DRIFTGATE_COMPRESS_FAULT"


def _fault_point(name: str) -> None:
    """Fail on purpose at a named point when ``$DRIFTGATE_COMPRESS_FAULT`` names it (tests use this)."""
    if os.environ.get(FAULT_ENV) == name:
        raise RuntimeError(f"injected failure at {name!r} ({FAULT_ENV})")


def save_checkpoint(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Save with llm-compressor's compressed-tensors writer (dense weights when nothing is quantized)."""
    from llmcompressor.transformers.compression.compressed_tensors_utils import modify_save_pretrained

    modify_save_pretrained(model)
    model.save_pretrained(str(out_dir), save_compressed=True)
    tokenizer.save_pretrained(str(out_dir))


def run(recipe: Recipe, model_dir: Path, out_dir: Path) -> Manifest:
    """Compress ``model_dir`` with ``recipe`` into ``out_dir`` (which must exist and be empty)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compress.calibration import calibration_info, tokenized_calibration
    from compress.methods import METHODS
    from compress.patches import apply_patches
    from compress.stats import build_manifest

    start = time.perf_counter()
    # transformers warns about "offloaded modules" on every llm-compressor save; nothing is offloaded.
    warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
    notes = [f"patched: {p}" for p in apply_patches()]
    print(f"[driftgate] {recipe.name}: loading {model_dir}", file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # bf16 is the checkpoint's native dtype: embeddings and any dense tensor are stored bf16.
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16)
    model.eval()
    calib = calibration = None
    params: Any = recipe.params
    if recipe.uses_calibration:
        calib = tokenized_calibration(tokenizer, params.num_calibration_samples, params.max_seq_length)
        calibration = calibration_info(params.num_calibration_samples, params.max_seq_length)
    loaded = time.perf_counter()
    print(f"[driftgate] {recipe.name}: running {recipe.method}", file=sys.stderr, flush=True)
    result = METHODS[recipe.method](model, tokenizer, recipe.params, calib)
    compressed = time.perf_counter()
    _fault_point("before-save")
    print(f"[driftgate] {recipe.name}: saving", file=sys.stderr, flush=True)
    save_checkpoint(model, tokenizer, out_dir)
    saved = time.perf_counter()
    _fault_point("after-save")
    timing = {
        "load_s": loaded - start,
        "compress_s": compressed - loaded,
        "save_s": saved - compressed,
        "wall_s": saved - start,
    }
    manifest = build_manifest(
        recipe, model_dir, out_dir, result.modules, result.resolved, timing, calibration, notes
    )
    manifest.write(out_dir)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.worker", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="dense HF model directory")
    parser.add_argument("--recipe", required=True, help="recipe as JSON (Recipe.to_dict() + description)")
    parser.add_argument("--out", type=Path, required=True, help="empty output directory")
    parser.add_argument("--error-file", type=Path, help="where to write the error as JSON on failure")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.recipe)
        recipe = recipe_from_dict(str(data.get("name", "custom")), data)
        manifest = run(recipe, args.model, args.out)
    except BaseException as exc:
        traceback.print_exc()
        if args.error_file is not None:
            message = str(exc) or type(exc).__name__
            args.error_file.write_text(json.dumps({"error": message, "type": type(exc).__name__}))
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    failed = manifest.failed_checks
    status = f"checks FAILED: {', '.join(failed)}" if failed else "all checks passed"
    print(f"[driftgate] {recipe.name}: done in {manifest.wall_s:.1f}s, {status}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
