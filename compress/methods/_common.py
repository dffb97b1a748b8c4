"""Shared worker-side helpers of the compression methods (llm-compressor glue)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from compress.groups import pick_group_size
from compress.recipes import AWQParams, GPTQParams


@dataclass
class MethodResult:
    """What a method did: the modules it compressed and the choices it resolved at run time."""

    modules: list[str]
    resolved: dict[str, Any] = field(default_factory=dict)


def _linear(model: torch.nn.Module, name: str) -> torch.nn.Linear:
    module = model.get_submodule(name)
    if not isinstance(module, torch.nn.Linear):
        raise TypeError(f"{name} is a {type(module).__name__}, not a Linear layer")
    return module


def linear_weight(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The weight tensor (``.data``) of the Linear module ``name``."""
    return _linear(model, name).weight.data


def linear_modules(model: torch.nn.Module, ignore: list[str]) -> list[str]:
    """Names of the Linear modules llm-compressor targets with ``targets=["Linear"]`` and ``ignore``."""
    from compressed_tensors.utils import match_named_modules

    return [name for name, _ in match_named_modules(model, ["Linear"], ignore)]


def resolve_group_size(model: torch.nn.Module, requested: int | str, modules: list[str]) -> int:
    """``requested`` as is, or for "auto" the largest of 128/64/32 dividing every input width."""
    widths = [_linear(model, name).in_features for name in modules]
    if requested == "auto":
        return pick_group_size(widths)
    size = int(requested)
    bad = sorted({w for w in widths if w % size})
    if bad:
        raise ValueError(f"group_size {size} does not divide the input widths {bad}; use group_size: auto")
    return size


def int_weight_scheme(bits: int, group_size: int, symmetric: bool) -> Any:
    """A compressed-tensors scheme: int weights with per-group scales, 16-bit activations."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(
        num_bits=bits, type="int", strategy="group", group_size=group_size, symmetric=symmetric, dynamic=False
    )
    return QuantizationScheme(targets=["Linear"], weights=weights)


def int_weight_groups(
    model: torch.nn.Module, params: GPTQParams | AWQParams
) -> tuple[list[str], int, dict[str, Any]]:
    """What GPTQ and AWQ quantize: the Linear modules, their resolved group size, the ``config_groups``."""
    modules = linear_modules(model, params.ignore)
    group_size = resolve_group_size(model, params.group_size, modules)
    config_groups = {"group_0": int_weight_scheme(params.bits, group_size, params.symmetric)}
    return modules, group_size, config_groups


def run_oneshot(model: torch.nn.Module, modifiers: list[Any], calib: Any, params: Any = None) -> None:
    """Run llm-compressor's oneshot in place on ``model`` (calibration data optional)."""
    from llmcompressor import oneshot

    kwargs: dict[str, Any] = {}
    if calib is not None:
        kwargs.update(
            dataset=calib,
            num_calibration_samples=len(calib),
            max_seq_length=params.max_seq_length,
            shuffle_calibration_samples=False,
        )
    oneshot(model=model, recipe=modifiers, **kwargs)
