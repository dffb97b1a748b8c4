"""The compression methods (worker side): one module per method, one signature.

``apply(model, tokenizer, params, calib) -> MethodResult`` compresses ``model`` in place; ``calib``
is the tokenized calibration set (a ``datasets.Dataset``) or None for data-free methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compress.methods import awq, gptq, int8, magnitude, sparsegpt
from compress.methods._common import MethodResult

ApplyFn = Callable[[Any, Any, Any, Any], MethodResult]

METHODS: dict[str, ApplyFn] = {
    "gptq": gptq.apply,
    "awq": awq.apply,
    "sparsegpt": sparsegpt.apply,
    "int8": int8.apply,
    "magnitude": magnitude.apply,
}

__all__ = ["METHODS", "ApplyFn", "MethodResult"]
