"""L1 magnitude pruning, global or local threshold (the maths live in ``compress.pruning``)."""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from compress.methods._common import MethodResult, linear_weight
from compress.pruning import global_threshold, local_thresholds, magnitude_masks, select_scope
from compress.recipes import MagnitudeParams


def apply(model: torch.nn.Module, tokenizer: Any, params: MagnitudeParams, calib: Any) -> MethodResult:
    linears = [name for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]
    modules = select_scope(linears, params.scope)
    if not modules:
        raise ValueError(f"magnitude scope {params.scope!r} matches no Linear module of this model")
    weights = {name: linear_weight(model, name) for name in modules}
    # Thresholds are recorded before pruning changes the weights they are computed from.
    thresholds: dict[str, float] | float
    if params.selection == "global":
        thresholds = global_threshold(weights, params.sparsity)
    else:
        thresholds = local_thresholds(weights, params.sparsity)
    masks = magnitude_masks(weights, params.sparsity, params.selection)
    with torch.no_grad():
        for name in tqdm(modules, desc=f"Pruning ({params.selection} magnitude)", unit="layer"):
            weights[name].masked_fill_(masks[name], 0)
    resolved = {"selection": params.selection, "scope": params.scope, "thresholds": thresholds}
    return MethodResult(modules=modules, resolved=resolved)
