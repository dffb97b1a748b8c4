"""SparseGPT pruning (unstructured or N:M) through llm-compressor's SparseGPTModifier."""

from __future__ import annotations

from typing import Any

import torch

from compress.methods._common import MethodResult, linear_modules, run_oneshot
from compress.recipes import SparseGPTParams


def apply(model: torch.nn.Module, tokenizer: Any, params: SparseGPTParams, calib: Any) -> MethodResult:
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    modules = linear_modules(model, params.ignore)
    # Explicit module names as targets: SparseGPT then prunes exactly the modules we report.
    modifier = SparseGPTModifier(
        sparsity=params.sparsity,
        mask_structure=params.mask_structure,
        block_size=params.block_size,
        dampening_frac=params.dampening_frac,
        targets=modules,
    )
    run_oneshot(model, [modifier], calib, params)
    return MethodResult(modules=modules, resolved={"mask_structure": params.mask_structure})
