"""GPTQ int4 weights through llm-compressor's GPTQModifier."""

from __future__ import annotations

from typing import Any

import torch

from compress.methods._common import MethodResult, int_weight_groups, run_oneshot
from compress.recipes import GPTQParams


def apply(model: torch.nn.Module, tokenizer: Any, params: GPTQParams, calib: Any) -> MethodResult:
    from llmcompressor.modifiers.gptq import GPTQModifier

    modules, group_size, config_groups = int_weight_groups(model, params)
    modifier = GPTQModifier(
        config_groups=config_groups,
        ignore=params.ignore,
        block_size=params.block_size,
        dampening_frac=params.dampening_frac,
    )
    run_oneshot(model, [modifier], calib, params)
    return MethodResult(modules=modules, resolved={"group_size": group_size})
