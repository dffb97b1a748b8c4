"""Group-size choice for grouped int quantization (pure Python)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

GROUP_SIZE_CANDIDATES = (128, 64, 32)


def pick_group_size(input_widths: Iterable[int], candidates: Sequence[int] = GROUP_SIZE_CANDIDATES) -> int:
    """The largest candidate group size dividing every input width, or ValueError naming the widths.

    SmolLM2-135M's hidden size is 576: 128 does not divide it, 64 does.
    """
    widths = sorted(set(input_widths))
    if not widths:
        raise ValueError("no layers to quantize: cannot choose a group size")
    for size in sorted(candidates, reverse=True):
        if all(w % size == 0 for w in widths):
            return size
    raise ValueError(
        f"no group size in {tuple(candidates)} divides every quantized Linear's input width "
        f"(widths: {widths}); set params.group_size explicitly or add the odd layers to params.ignore"
    )
