"""Recipes, manifests, checkpoint facts and the CLI surface (fast: no compression runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compress.api import DEMO_RECIPES, CompressError, compress
from compress.checkpoint import TensorInfo, layer_bits_per_weight, read_header
from compress.groups import pick_group_size
from compress.manifest import Manifest
from compress.paths import variant_dir
from compress.recipes import (
    AWQParams,
    GPTQParams,
    Int8Params,
    MagnitudeParams,
    RecipeError,
    SparseGPTParams,
    builtin_recipe_names,
    load_recipe,
    recipe_yaml,
)
from serving.commands import compress as cli
from serving.commands.main import main as driftgate


def test_builtin_names_are_exact() -> None:
    assert builtin_recipe_names() == [
        "awq-w4a16",
        "gptq-w4a16",
        "int8-w8a8",
        "sparsegpt-2of4",
        "sparsegpt-50",
    ]
    assert DEMO_RECIPES == (
        "gptq-w4a16",
        "awq-w4a16",
        "sparsegpt-50",
        "sparsegpt-2of4",
        "int8-w8a8",
        "magnitude-global-all-50",
    )


@pytest.mark.parametrize(
    ("name", "cls", "method"),
    [
        ("gptq-w4a16", GPTQParams, "gptq"),
        ("awq-w4a16", AWQParams, "awq"),
        ("sparsegpt-50", SparseGPTParams, "sparsegpt"),
        ("sparsegpt-2of4", SparseGPTParams, "sparsegpt"),
        ("int8-w8a8", Int8Params, "int8"),
        ("magnitude-global-all-50", MagnitudeParams, "magnitude"),
    ],
)
def test_demo_recipes_load(name: str, cls: type, method: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.method == method and isinstance(recipe.params, cls)
    assert recipe.description


def test_builtin_recipe_values() -> None:
    gptq = load_recipe("gptq-w4a16").params
    assert isinstance(gptq, GPTQParams) and (gptq.bits, gptq.group_size, gptq.symmetric) == (4, "auto", True)
    awq = load_recipe("awq-w4a16").params
    assert isinstance(awq, AWQParams) and (awq.bits, awq.symmetric) == (4, False)
    two_four = load_recipe("sparsegpt-2of4").params
    assert isinstance(two_four, SparseGPTParams) and two_four.structured == (2, 4)
    fifty = load_recipe("sparsegpt-50").params
    assert isinstance(fifty, SparseGPTParams) and fifty.structured is None and fifty.sparsity == 0.5


@pytest.mark.parametrize(
    ("name", "selection", "scope", "sparsity"),
    [
        ("magnitude-global-all-50", "global", "all", 0.5),
        ("magnitude-local-ffn-30", "local", "ffn", 0.3),
        ("magnitude-global-attn-5", "global", "attn", 0.05),
        ("magnitude-local-all-99", "local", "all", 0.99),
    ],
)
def test_magnitude_family(name: str, selection: str, scope: str, sparsity: float) -> None:
    params = load_recipe(name).params
    assert params == MagnitudeParams(sparsity=sparsity, selection=selection, scope=scope)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "gptq",
        "magnitude-global-all-0",
        "magnitude-global-all-100",
        "magnitude-middle-all-50",
        "magnitude-global-mlp-50",
    ],
)
def test_unknown_recipe_name_rejected(name: str) -> None:
    with pytest.raises(RecipeError, match=f"unknown recipe '{name}'"):
        load_recipe(name)


def test_bad_param_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("method: gptq\nparams:\n  bits: 4\n  gruop_size: 64\n")
    with pytest.raises(RecipeError, match="unknown key 'gruop_size'"):
        load_recipe(path)


def test_bad_top_level_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("method: int8\nsheme: W8A8\n")
    with pytest.raises(RecipeError, match="unknown key 'sheme'"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: sparsegpt\nparams: {sparsity: 1.5}\n", "sparsity"),
        ("method: sparsegpt\nparams: {mask_structure: '4:2'}\n", "mask_structure"),
        ("method: gptq\nparams: {group_size: 3}\n", "group_size"),
        ("method: gptq\nparams: {bits: 3}\n", "bits"),
        ("method: magnitude\nparams: {selection: row}\n", "selection"),
        ("method: prune-everything\n", "unknown method"),
        ("params: {}\n", "missing key 'method'"),
    ],
)
def test_invalid_values_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_custom_yaml_recipe_and_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "gptq-g32.yaml"
    path.write_text("method: gptq\nparams:\n  group_size: 32\n")
    recipe = load_recipe(path)
    assert recipe.name == "gptq-g32"
    assert recipe.params == GPTQParams(group_size=32)
    again = tmp_path / "gptq-g32-again.yaml"
    again.write_text(recipe_yaml(recipe))
    assert load_recipe(again).to_dict()["params"] == recipe.to_dict()["params"]


def test_pick_group_size() -> None:
    assert pick_group_size([576, 1536]) == 64  # SmolLM2-135M
    assert pick_group_size([128, 256, 4096]) == 128
    assert pick_group_size([96, 192]) == 32
    with pytest.raises(ValueError, match=r"widths: \[100, 128\]"):
        pick_group_size([100, 128])


def test_bits_per_weight_from_headers() -> None:
    source = {"a.weight": TensorInfo("BF16", (64, 128), 64 * 128 * 2)}
    packed = {
        "a.weight_packed": TensorInfo("I32", (64, 16), 64 * 16 * 4),  # 4 bits x 8192 weights
        "a.weight_scale": TensorInfo("BF16", (64, 2), 64 * 2 * 2),  # group 64
        "a.weight_shape": TensorInfo("I64", (2,), 16),
        "ab.weight": TensorInfo("BF16", (10,), 20),  # another module, not counted
    }
    bits = layer_bits_per_weight(source, packed, ["a"])
    assert bits == pytest.approx(8 * (4096 + 256 + 16) / 8192)


def test_read_header(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file(
        {"x": torch.zeros(3, 4, dtype=torch.bfloat16), "y": torch.ones(5, dtype=torch.int8)},
        tmp_path / "m.safetensors",
    )
    header = read_header(tmp_path / "m.safetensors")
    assert header["x"] == TensorInfo("BF16", (3, 4), 24)
    assert header["y"].numel == 5 and header["y"].nbytes == 5


def test_manifest_roundtrip_and_match(tmp_path: Path) -> None:
    recipe = load_recipe("sparsegpt-50").to_dict()
    manifest = Manifest(
        recipe=recipe,
        source={"sha256": "abc"},
        versions={},
        timing={"wall_s": 1.5},
        size={},
        bits_per_weight={},
        storage={},
        checks={"x": {"passed": False}, "y": {"passed": True}},
    )
    manifest.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back == manifest and back.wall_s == 1.5 and back.failed_checks == ["x"]
    assert back.matches(recipe, "abc") and not back.matches(recipe, "other")
    changed = json.loads(json.dumps(recipe))
    changed["params"]["sparsity"] = 0.6
    assert not back.matches(changed)


def test_variant_dir_respects_driftgate_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTGATE_HOME", str(tmp_path))
    assert variant_dir("gptq-w4a16") == tmp_path / "variants" / "gptq-w4a16"


def test_serving_side_imports_no_torch() -> None:
    code = (
        "import sys, serving.commands.compress, compress.api, compress.recipes, compress.manifest, compress.bench;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'llmcompressor', 'transformers')];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_cli_unknown_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        driftgate(
            ["compress", "--model", str(tmp_path), "--recipe", "gptq-w3a16", "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "unknown recipe 'gptq-w3a16'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_bad_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("method: awq\nparams: {n_grids: 10}\n")
    assert (
        driftgate(["compress", "--model", str(tmp_path), "--recipe", str(path), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "unknown key 'n_grids'" in capsys.readouterr().err


def test_cli_missing_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        driftgate(
            [
                "compress",
                "--model",
                str(tmp_path / "nope"),
                "--recipe",
                "int8-w8a8",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "model directory not found" in capsys.readouterr().err


def test_cli_registers_on_subparsers() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="driftgate")
    sub = parser.add_subparsers(dest="command")
    compress_parser = cli.add_parser(sub)
    assert isinstance(compress_parser, argparse.ArgumentParser)
    args = parser.parse_args(["compress", "--recipe", "int8-w8a8", "--out", "x"])
    assert args.func is cli.run and args.recipe == "int8-w8a8" and args.out == Path("x")


def test_existing_output_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CompressError, match="already exists"):
        compress(tiny_model, "int8-w8a8", out)
    assert (out / "keep.txt").read_text() == "mine"
