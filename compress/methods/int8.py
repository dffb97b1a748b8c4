"""W8A8 int8 through llm-compressor's QuantizationModifier (data-free round to nearest)."""

from __future__ import annotations

from typing import Any

import torch

from compress.methods._common import MethodResult, linear_modules, run_oneshot
from compress.recipes import Int8Params


def apply(model: torch.nn.Module, tokenizer: Any, params: Int8Params, calib: Any) -> MethodResult:
    from llmcompressor.modifiers.quantization import QuantizationModifier

    # "W8A8": int8 per-channel symmetric weights, dynamic per-token int8 activations.
    modifier = QuantizationModifier(targets=["Linear"], scheme="W8A8", ignore=params.ignore)
    run_oneshot(model, [modifier], None)
    return MethodResult(modules=linear_modules(model, params.ignore), resolved={"scheme": "W8A8"})
