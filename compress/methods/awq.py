"""AWQ: llm-compressor's AWQModifier (activation-aware scales) + QuantizationModifier (int weights)."""

from __future__ import annotations

from typing import Any

import torch

from compress.methods._common import MethodResult, int_weight_groups, run_oneshot
from compress.recipes import AWQParams


def apply(model: torch.nn.Module, tokenizer: Any, params: AWQParams, calib: Any) -> MethodResult:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    modules, group_size, config_groups = int_weight_groups(model, params)
    modifiers = [
        AWQModifier(n_grid=params.n_grid, duo_scaling=params.duo_scaling),
        QuantizationModifier(config_groups=config_groups, ignore=params.ignore),
    ]
    run_oneshot(model, modifiers, calib, params)
    return MethodResult(modules=modules, resolved={"group_size": group_size})
