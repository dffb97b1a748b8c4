"""The magnitude-pruning maths (pure torch, serving venv)."""

from __future__ import annotations

import pytest
import torch

from compress.pruning import (
    global_masks,
    global_threshold,
    local_masks,
    local_thresholds,
    magnitude_masks,
    nm_violations,
    select_scope,
    smallest_k_mask,
    zero_fraction,
)

LLAMA_LINEARS = [
    f"model.layers.{i}.{part}"
    for i in range(2)
    for part in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
] + ["lm_head"]


def test_scope_attn_is_exactly_qkvo() -> None:
    got = select_scope(LLAMA_LINEARS, "attn")
    assert got == [n for n in LLAMA_LINEARS if n.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj")]
    assert len(got) == 8


def test_scope_ffn_is_exactly_gate_up_down() -> None:
    got = select_scope(LLAMA_LINEARS, "ffn")
    assert got == [n for n in LLAMA_LINEARS if ".mlp." in n]
    assert len(got) == 6


def test_scope_all_excludes_only_lm_head() -> None:
    assert select_scope(LLAMA_LINEARS, "all") == LLAMA_LINEARS[:-1]
    with pytest.raises(ValueError, match="unknown magnitude scope"):
        select_scope(LLAMA_LINEARS, "mlp")


def test_smallest_k_mask_is_exact_with_ties() -> None:
    scores = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.5, 2.0]])
    mask = smallest_k_mask(scores, 3)
    assert int(mask.sum()) == 3
    assert bool(mask[1, 1])  # the strict minimum is always pruned
    assert not bool(mask[1, 2])  # the maximum never is
    assert int(smallest_k_mask(scores, 0).sum()) == 0 and bool(smallest_k_mask(scores, 6).all())


def _two_layers() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "small": torch.randn(64, 128, generator=gen),
        "large": 10 * torch.randn(64, 128, generator=gen),
    }


def test_local_prunes_every_layer_equally() -> None:
    weights = _two_layers()
    masks = local_masks(weights, 0.5)
    for name, weight in weights.items():
        assert int(masks[name].sum()) == weight.numel() // 2
        # within a layer, every pruned magnitude is <= every kept magnitude
        assert weight.abs()[masks[name]].max() <= weight.abs()[~masks[name]].min()


def test_global_prunes_small_scale_layers_more() -> None:
    weights = _two_layers()
    masks = global_masks(weights, 0.5)
    total = sum(int(m.sum()) for m in masks.values())
    assert total == sum(w.numel() for w in weights.values()) // 2
    small = float(masks["small"].float().mean())
    large = float(masks["large"].float().mean())
    assert small > 0.85 and large < 0.15
    # one threshold: every pruned magnitude anywhere is <= every kept magnitude anywhere
    pruned = torch.cat([weights[n].abs()[masks[n]] for n in weights])
    kept = torch.cat([weights[n].abs()[~masks[n]] for n in weights])
    assert pruned.max() <= kept.min()


def test_thresholds_global_vs_local() -> None:
    weights = _two_layers()
    local = local_thresholds(weights, 0.5)
    assert local["large"] == pytest.approx(10 * local["small"], rel=0.2)
    cut = global_threshold(weights, 0.5)
    assert local["small"] < cut < local["large"]
    masks = magnitude_masks(weights, 0.5, "global")
    assert all(bool((weights[n].abs()[masks[n]] <= cut).all()) for n in weights)


def test_equal_scales_give_equal_answers() -> None:
    gen = torch.Generator().manual_seed(1)
    weights = {"a": torch.randn(32, 64, generator=gen), "b": torch.randn(32, 64, generator=gen)}
    glob = magnitude_masks(weights, 0.3, "global")
    for name in weights:
        assert float(glob[name].float().mean()) == pytest.approx(0.3, abs=0.05)
    with pytest.raises(ValueError, match="unknown selection"):
        magnitude_masks(weights, 0.3, "row")


def test_bf16_weights_and_exact_count() -> None:
    weight = torch.randn(256, 256).to(torch.bfloat16)  # bf16 has many tied magnitudes
    mask = local_masks({"w": weight}, 0.5)["w"]
    assert int(mask.sum()) == weight.numel() // 2
    assert zero_fraction(weight.masked_fill(mask, 0)) >= 0.5


def test_nm_violations() -> None:
    row = torch.tensor([[0.0, 1.0, 0.0, 2.0, 3.0, 0.0, 0.0, 4.0]])
    assert nm_violations(row, 2, 4) == 0
    row[0, 0] = 5.0
    assert nm_violations(row, 2, 4) == 1
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_violations(torch.zeros(2, 6), 2, 4)
