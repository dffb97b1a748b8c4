"""L1 magnitude pruning maths: pure functions on tensors (no model, no llm-compressor).

*The Cost of Compression* (Namburi et al. 2023) compares two ways to pick the weights to prune:

* global: rank |w| of every weight in the chosen layers together and prune the smallest
  ``sparsity`` fraction of them all (one threshold; layers with small weights lose more);
* local: rank each layer on its own and prune the smallest ``sparsity`` fraction of every
  layer (one threshold per layer; every layer ends at the same sparsity).

Exactly ``round(sparsity * n)`` weights are pruned: ties at the threshold are broken by position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

ATTN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
EXCLUDED = ("lm_head",)


def select_scope(linear_names: Iterable[str], scope: str) -> list[str]:
    """The Linear module names a magnitude scope covers, in the given order.

    "attn": q/k/v/o projections; "ffn": gate/up/down projections; "all": every Linear but lm_head.
    """
    names = [n for n in linear_names if n.rsplit(".", 1)[-1] not in EXCLUDED]
    if scope == "all":
        return names
    suffixes = {"attn": ATTN_PROJECTIONS, "ffn": FFN_PROJECTIONS}.get(scope)
    if suffixes is None:
        raise ValueError(f"unknown magnitude scope {scope!r} (expected attn, ffn or all)")
    return [n for n in names if n.rsplit(".", 1)[-1] in suffixes]


def num_to_prune(numel: int, sparsity: float) -> int:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be within [0, 1], got {sparsity}")
    return round(sparsity * numel)


def smallest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A bool mask, shaped like ``scores``, that is True at exactly the ``k`` smallest scores.

    Ties at the k-th smallest value are taken in flattened order, so the count is exact.
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(flat, dtype=torch.bool).view_as(scores)
    if k >= n:
        return torch.ones_like(flat, dtype=torch.bool).view_as(scores)
    kth = torch.kthvalue(flat, k).values
    mask = flat < kth
    missing = k - int(mask.sum())
    if missing > 0:
        ties = torch.nonzero(flat == kth).squeeze(1)[:missing]
        mask[ties] = True
    return mask.view_as(scores)


def _scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float()


def global_masks(weights: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Prune masks (True = prune) from one |w| ranking across all ``weights``."""
    if not weights:
        return {}
    flat = torch.cat([_scores(w).reshape(-1) for w in weights.values()])
    mask = smallest_k_mask(flat, num_to_prune(flat.numel(), sparsity))
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, weight in weights.items():
        out[name] = mask[offset : offset + weight.numel()].view(weight.shape)
        offset += weight.numel()
    return out


def local_masks(weights: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Prune masks (True = prune) from a separate |w| ranking in each layer."""
    return {
        name: smallest_k_mask(_scores(w), num_to_prune(w.numel(), sparsity)) for name, w in weights.items()
    }


def magnitude_masks(
    weights: Mapping[str, torch.Tensor], sparsity: float, selection: str
) -> dict[str, torch.Tensor]:
    """Global or local L1 magnitude prune masks (True = prune)."""
    if selection == "global":
        return global_masks(weights, sparsity)
    if selection == "local":
        return local_masks(weights, sparsity)
    raise ValueError(f"unknown selection {selection!r} (expected global or local)")


def global_threshold(weights: Mapping[str, torch.Tensor], sparsity: float) -> float:
    """The |w| cut of global selection: the k-th smallest magnitude over all layers (0.0 when k = 0)."""
    flat = torch.cat([_scores(w).reshape(-1) for w in weights.values()])
    k = num_to_prune(flat.numel(), sparsity)
    return float(torch.kthvalue(flat, k).values) if k > 0 else 0.0


def local_thresholds(weights: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, float]:
    """The |w| cut of each layer under local selection (0.0 where nothing is pruned)."""
    out: dict[str, float] = {}
    for name, weight in weights.items():
        k = num_to_prune(weight.numel(), sparsity)
        out[name] = float(torch.kthvalue(_scores(weight).reshape(-1), k).values) if k > 0 else 0.0
    return out


def zero_fraction(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in a tensor."""
    return float((weight == 0).sum()) / max(weight.numel(), 1)


def nm_violations(weight: torch.Tensor, n: int, m: int) -> int:
    """Groups of ``m`` consecutive input weights (last dim) holding fewer than ``n`` zeros.

    0 means the N:M pattern (n pruned of every m) holds exactly. The last dim must divide by m.
    """
    if weight.shape[-1] % m:
        raise ValueError(f"input width {weight.shape[-1]} is not a multiple of {m}")
    zeros = (weight.reshape(-1, m) == 0).sum(dim=1)
    return int((zeros < n).sum())
