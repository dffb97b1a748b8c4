"""``driftgate compress``: the command of the compress stage.

driftgate compress --model DIR --recipe NAME_OR_YAML --out DIR [--force]
driftgate compress --model DIR --all --out-dir DIR
driftgate compress --list
driftgate compress --show-recipe NAME
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compress.api import DEMO_RECIPES, CompressError, build_recipes, compress
from compress.manifest import Manifest
from compress.paths import variant_dir
from compress.recipes import MAGNITUDE_PATTERN, RecipeError, builtin_recipe_names, load_recipe, recipe_yaml
from serving.home import default_model_dir, variants_dir


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Register the ``compress`` subcommand on a ``driftgate`` subparsers object; returns its parser.

    Its default ``func`` is ``run``; callers may override it with ``set_defaults(func=...)``.
    """
    parser = subparsers.add_parser(
        "compress",
        help="compress a dense model into vLLM-servable variants (GPTQ, AWQ, SparseGPT, int8, magnitude)",
        description="Compress a dense Hugging Face model with a recipe. The work runs in the compress venv "
        "(.venv-compress, `make setup-compress`); outputs appear atomically with driftgate-manifest.json.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=None, help=f"dense model directory (default: {default_model_dir()})"
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--recipe", help="built-in recipe name, magnitude family name, or a recipe YAML path")
    what.add_argument("--all", action="store_true", help=f"build the demo set: {', '.join(DEMO_RECIPES)}")
    what.add_argument("--list", action="store_true", help="list the built-in recipes and exit")
    what.add_argument("--show-recipe", metavar="NAME", help="print a recipe's YAML (all parameters) and exit")
    parser.add_argument(
        "--out", type=Path, help="output directory for --recipe (default: <variants>/<recipe>)"
    )
    parser.add_argument(
        "--out-dir", type=Path, help=f"parent directory for --all (default: {variants_dir()})"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="show llm-compressor's INFO logs")


def _summary(manifest: Manifest, out: Path) -> str:
    size = manifest.size
    line = (
        f"{manifest.name}: {out}  wall {manifest.wall_s:.1f}s  "
        f"{size['weights_bytes'] / 1e6:.1f} MB ({size['ratio_vs_source']:.3f}x source, "
        f"{size['ratio_vs_fp32']:.3f}x fp32)  {manifest.bits_per_weight['compressed_layers']:.2f} bits/weight"
    )
    if manifest.sparsity is not None:
        line += f"  sparsity {manifest.sparsity['overall']:.4f}"
    failed = manifest.failed_checks
    return line + (f"  CHECKS FAILED: {', '.join(failed)}" if failed else "  checks ok")


def _list() -> int:
    for name in builtin_recipe_names():
        recipe = load_recipe(name)
        print(f"{name:18s} {recipe.description}")
    print(f"{MAGNITUDE_PATTERN:18s} L1 magnitude pruning, e.g. magnitude-global-all-50")
    print(f"demo set (--all): {', '.join(DEMO_RECIPES)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``driftgate compress``; returns the process exit code."""
    try:
        if args.list:
            return _list()
        if args.show_recipe:
            print(recipe_yaml(load_recipe(args.show_recipe)), end="")
            return 0
        if args.all:
            if args.out is not None:
                raise RecipeError("--out is for --recipe; use --out-dir with --all")
            built = build_recipes(args.model, DEMO_RECIPES, args.out_dir, verbose=args.verbose)
            failed = False
            for out in built.values():
                manifest = Manifest.read(out)
                failed |= bool(manifest.failed_checks)
                print(_summary(manifest, out))
            return 1 if failed else 0
        if not args.recipe:
            print(
                "driftgate compress: error: give --recipe NAME, --all, --list or --show-recipe",
                file=sys.stderr,
            )
            return 2
        recipe = load_recipe(args.recipe)
        out = args.out if args.out is not None else variant_dir(recipe.name, args.out_dir)
        model = args.model if args.model is not None else default_model_dir()
        manifest = compress(model, recipe, out, overwrite=args.force, verbose=args.verbose)
        print(_summary(manifest, out))
        return 1 if manifest.failed_checks else 0
    except RecipeError as exc:
        print(f"driftgate compress: error: {exc}", file=sys.stderr)
        return 2
    except CompressError as exc:
        print(f"driftgate compress: error: {exc}", file=sys.stderr)
        return 1
