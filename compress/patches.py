"""Every patch driftgate applies to llm-compressor, in one place (worker side only).

Why: llm-compressor 0.14 assumes an accelerator in one spot that CPU-only compression reaches.

* ``IntermediatesCache.pin_memory``: AWQ pins cached activations before each grid search so that
  host-to-device copies can be non-blocking. ``Tensor.pin_memory()`` raises "Cannot access accelerator
  device" when there is none. Pinning only helps copies to an accelerator, so without one it is a
  no-op by design here; with an accelerator the original method is left untouched.

Patches are applied explicitly by ``compress.worker`` (never at import time) and are idempotent.
"""

from __future__ import annotations

from typing import Any

_MARK = "_driftgate_patch"


def _pin_memory_noop(self: Any, batch_index: int, input_names: list[str] | None = None) -> None:
    """CPU-only replacement of ``IntermediatesCache.pin_memory``: pinning needs an accelerator."""
    return None


setattr(_pin_memory_noop, _MARK, "pin_memory")


def apply_patches(accelerator_available: bool | None = None) -> list[str]:
    """Apply the patches this machine needs; return their names (empty when none were needed)."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if accelerator_available is None:
        accelerator_available = bool(torch.accelerator.is_available())
    applied: list[str] = []
    if not accelerator_available:
        if not getattr(IntermediatesCache.pin_memory, _MARK, None):
            IntermediatesCache.pin_memory = _pin_memory_noop  # type: ignore[method-assign]
        applied.append("IntermediatesCache.pin_memory: no-op without an accelerator")
    return applied
