"""Every recipe end to end on a tiny random llama, through the compress venv (slow: ~1-2 minutes)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compress.api import DEMO_RECIPES, CompressError, build_recipes, compress, worker_env
from compress.bench import compress_times
from compress.manifest import Manifest
from compress.paths import CALIBRATION_FILE, MANIFEST_NAME, REPO_ROOT
from compress.recipes import load_recipe
from serving.commands.main import main as driftgate
from serving.home import checkpoint_sha256

pytestmark = pytest.mark.compress

EXTRA = ("magnitude-global-attn-50", "magnitude-local-ffn-50", "magnitude-local-all-50")
RECIPES = (*DEMO_RECIPES, *EXTRA)
PRUNED = ("sparsegpt-50", "sparsegpt-2of4", "magnitude-global-all-50", *EXTRA)
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
FFN = ("gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def variants(
    tiny_model: Path, compress_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    return build_recipes(tiny_model, RECIPES, tmp_path_factory.mktemp("variants"), log=False)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def _linear_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[: -len(".weight")]: v for k, v in tensors.items() if k.endswith("_proj.weight")}


def _zeros(weight: torch.Tensor) -> float:
    return float((weight == 0).float().mean())


@pytest.mark.parametrize("name", RECIPES)
def test_output_and_manifest(variants: dict[str, Path], tiny_model: Path, name: str) -> None:
    out = variants[name]
    assert out.name == name
    for needed in ("config.json", "tokenizer.json", MANIFEST_NAME):
        assert (out / needed).is_file(), needed
    assert list(out.glob("*.safetensors"))
    manifest = Manifest.read(out)
    recipe = load_recipe(name)
    assert manifest.recipe == recipe.to_dict()
    assert manifest.source["sha256"] == checkpoint_sha256(tiny_model)
    assert manifest.source["path"] == str(tiny_model.resolve())
    assert set(manifest.versions) >= {"llmcompressor", "compressed-tensors", "transformers", "torch"}
    assert manifest.versions["llmcompressor"].startswith("0.14")
    assert 0 < manifest.timing["compress_s"] <= manifest.timing["wall_s"]  # a part of the whole run
    assert manifest.size["weights_bytes"] == sum(p.stat().st_size for p in out.glob("*.safetensors"))
    assert manifest.size["ratio_vs_fp32"] == pytest.approx(
        manifest.size["weights_bytes"] / manifest.source["fp32_bytes"]
    )
    assert manifest.failed_checks == []
    assert "embeddings_bf16" in manifest.checks
    if recipe.uses_calibration:
        assert manifest.calibration is not None
        assert manifest.calibration["num_samples"] == 64
        import hashlib

        assert manifest.calibration["sha256"] == hashlib.sha256(CALIBRATION_FILE.read_bytes()).hexdigest()
    else:
        assert manifest.calibration is None
    assert not list(out.parent.glob(".*partial*"))


@pytest.mark.parametrize(("name", "symmetric"), [("gptq-w4a16", True), ("awq-w4a16", False)])
def test_four_bit_checkpoints(variants: dict[str, Path], name: str, symmetric: bool) -> None:
    out = variants[name]
    qconfig = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qconfig["format"] == "pack-quantized" and "lm_head" in qconfig["ignore"]
    weights = qconfig["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 64, symmetric)
    tensors = _weights(out)
    assert tensors["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert "model.layers.0.mlp.down_proj.weight_packed" in tensors
    assert ("model.layers.0.mlp.down_proj.weight_zero_point" in tensors) is not symmetric
    manifest = Manifest.read(out)
    assert manifest.resolved["group_size"] == 64
    assert manifest.size["ratio_vs_fp32"] < 0.35 and manifest.checks["bytes_vs_fp32"]["passed"]
    assert 4.2 < manifest.bits_per_weight["compressed_layers"] < 4.6


def test_int8_checkpoint(variants: dict[str, Path]) -> None:
    out = variants["int8-w8a8"]
    qconfig = json.loads((out / "config.json").read_text())["quantization_config"]
    group = qconfig["config_groups"]["group_0"]
    assert group["weights"]["num_bits"] == 8 and group["weights"]["strategy"] == "channel"
    assert group["input_activations"]["dynamic"] is True and group["input_activations"]["strategy"] == "token"
    assert _weights(out)["model.layers.1.self_attn.q_proj.weight"].dtype == torch.int8
    assert 8.0 <= Manifest.read(out).bits_per_weight["compressed_layers"] < 8.2


@pytest.mark.parametrize("name", PRUNED)
def test_pruned_sparsity_measured(variants: dict[str, Path], tiny_model: Path, name: str) -> None:
    out = variants[name]
    manifest = Manifest.read(out)
    assert manifest.sparsity is not None and manifest.storage["format"] == "dense"
    assert any("stored dense" in note for note in manifest.notes)
    source, pruned = _weights(tiny_model), _weights(out)
    layers = _linear_weights(pruned)
    assert set(manifest.sparsity["layers"]) <= set(layers)
    for module, fraction in manifest.sparsity["layers"].items():
        assert _zeros(layers[module]) == pytest.approx(fraction, abs=1e-6)
    touched = torch.cat([layers[m].reshape(-1) for m in manifest.sparsity["layers"]])
    assert _zeros(touched) >= 0.49 and manifest.checks["sparsity"]["passed"]
    assert torch.equal(pruned["model.embed_tokens.weight"], source["model.embed_tokens.weight"])
    assert pruned["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert manifest.size["ratio_vs_source"] == pytest.approx(1.0, abs=0.01)


def test_two_four_pattern_exact(variants: dict[str, Path]) -> None:
    layers = _linear_weights(_weights(variants["sparsegpt-2of4"]))
    assert len(layers) == 14
    for module, weight in layers.items():
        zeros_per_group = (weight.reshape(-1, 4) == 0).sum(dim=1)
        assert bool((zeros_per_group >= 2).all()), module
    manifest = Manifest.read(variants["sparsegpt-2of4"])
    assert manifest.sparsity is not None and manifest.sparsity["pattern_exact"] is True
    assert manifest.checks["nm_pattern"]["passed"]


@pytest.mark.parametrize(
    ("name", "pruned_kind", "kept_kind"),
    [("magnitude-global-attn-50", ATTN, FFN), ("magnitude-local-ffn-50", FFN, ATTN)],
)
def test_magnitude_scope_touches_exactly(
    variants: dict[str, Path],
    tiny_model: Path,
    name: str,
    pruned_kind: tuple[str, ...],
    kept_kind: tuple[str, ...],
) -> None:
    source = _linear_weights(_weights(tiny_model))
    layers = _linear_weights(_weights(variants[name]))
    touched = {m for m in layers if m.rsplit(".", 1)[-1] in pruned_kind}
    assert set(Manifest.read(variants[name]).resolved["modules"]) == touched
    for module, weight in layers.items():
        if module in touched:
            assert _zeros(weight) > 0.05, module
        else:
            assert module.rsplit(".", 1)[-1] in kept_kind
            assert torch.equal(weight, source[module]), module


def test_global_vs_local_thresholds(variants: dict[str, Path]) -> None:
    local = Manifest.read(variants["magnitude-local-all-50"]).sparsity
    glob = Manifest.read(variants["magnitude-global-all-50"]).sparsity
    assert local is not None and glob is not None
    for fraction in local["layers"].values():
        assert fraction == pytest.approx(0.5, abs=1e-3)
    # layer 1's weights are 4x larger: one global threshold prunes layer 0 much more than layer 1
    layer0 = [f for m, f in glob["layers"].items() if ".layers.0." in m]
    layer1 = [f for m, f in glob["layers"].items() if ".layers.1." in m]
    assert min(layer0) > 0.75 and max(layer1) < 0.25
    assert glob["overall"] == pytest.approx(0.5, abs=1e-3)
    assert isinstance(Manifest.read(variants["magnitude-global-all-50"]).resolved["thresholds"], float)


def test_current_outputs_are_skipped_and_stale_rebuilt(variants: dict[str, Path], tiny_model: Path) -> None:
    out = variants["int8-w8a8"]
    manifest_path = out / MANIFEST_NAME
    before = manifest_path.stat().st_mtime_ns
    assert build_recipes(tiny_model, ["int8-w8a8"], out.parent, log=False) == {"int8-w8a8": out}
    assert manifest_path.stat().st_mtime_ns == before
    stale = json.loads(manifest_path.read_text())
    stale["recipe"]["params"]["ignore"] = ["something-else"]
    manifest_path.write_text(json.dumps(stale))
    build_recipes(tiny_model, ["int8-w8a8"], out.parent, log=False)
    assert Manifest.read(out).recipe == load_recipe("int8-w8a8").to_dict()


def test_cli_all_reports_up_to_date(
    variants: dict[str, Path], tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = variants["gptq-w4a16"].parent
    assert driftgate(["compress", "--model", str(tiny_model), "--all", "--out-dir", str(parent)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("up to date") == len(DEMO_RECIPES)
    assert "gptq-w4a16" in captured.out and "checks ok" in captured.out


def test_bench_reads_times(variants: dict[str, Path], tiny_model: Path) -> None:
    times = compress_times(tiny_model, variants["gptq-w4a16"].parent)
    assert list(times) == list(DEMO_RECIPES)
    assert all(t > 0 for t in times.values())


def test_failure_leaves_no_partial_output(
    tiny_model: Path, compress_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTGATE_COMPRESS_FAULT", "after-save")
    fresh = tmp_path / "fresh"
    with pytest.raises(CompressError, match="injected failure at 'after-save'"):
        compress(tiny_model, "int8-w8a8", fresh)
    assert not fresh.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "old.txt").write_text("previous variant")
    with pytest.raises(CompressError, match="injected failure"):
        compress(tiny_model, "int8-w8a8", existing, overwrite=True)
    assert [p.name for p in existing.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_cpu_patch_makes_pin_memory_a_noop(compress_venv: Path) -> None:
    code = """
from llmcompressor.pipelines.cache import IntermediatesCache
original = IntermediatesCache.pin_memory
from compress.patches import apply_patches
assert apply_patches(accelerator_available=True) == []
assert IntermediatesCache.pin_memory is original
applied = apply_patches(accelerator_available=False)
assert applied and "pin_memory" in applied[0], applied
patched = IntermediatesCache.pin_memory
assert patched is not original
assert apply_patches(accelerator_available=False) == applied and IntermediatesCache.pin_memory is patched
assert patched(object(), 0) is None
print("ok")
"""
    env = worker_env()
    proc = subprocess.run(
        [str(compress_venv), "-c", code],
        env=env,
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
    assert os.environ.get("DRIFTGATE_COMPRESS_FAULT") is None
