"""Compression cost per recipe, read from the variants' manifests (for ``make bench``).

``compress_times(model_dir)`` builds any missing demo variant first (current ones are kept, so their
times are those measured when they were built) and returns ``{recipe: wall seconds}``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compress.api import DEMO_RECIPES, build_recipes
from compress.manifest import Manifest
from compress.paths import variant_dir


def _variants(
    model_dir: str | Path | None, out_dir: str | Path | None, recipes: Sequence[str], build: bool
) -> dict[str, Path]:
    if build:
        return build_recipes(model_dir, list(recipes), out_dir, log=False)
    parent = Path(out_dir).expanduser() if out_dir is not None else None
    return {name: variant_dir(name, parent) for name in recipes}


def compress_report(
    model_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    recipes: Sequence[str] = DEMO_RECIPES,
    build: bool = True,
) -> list[dict[str, Any]]:
    """One row per recipe: wall/compress seconds, size ratios, bits per weight, sparsity, failed checks."""
    rows = []
    for name, path in _variants(model_dir, out_dir, recipes, build).items():
        m = Manifest.read(path)
        rows.append(
            {
                "recipe": name,
                "wall_s": m.wall_s,
                "compress_s": float(m.timing.get("compress_s", 0.0)),
                "weights_mb": m.size["weights_bytes"] / 1e6,
                "ratio_vs_source": m.size["ratio_vs_source"],
                "ratio_vs_fp32": m.size["ratio_vs_fp32"],
                "bits_per_weight": m.bits_per_weight["compressed_layers"],
                "sparsity": m.sparsity["overall"] if m.sparsity else None,
                "failed_checks": m.failed_checks,
            }
        )
    return rows


def compress_times(
    model_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    recipes: Sequence[str] = DEMO_RECIPES,
    build: bool = True,
) -> dict[str, float]:
    """``{recipe: wall seconds}`` of each variant (load + compress + save), from its manifest."""
    return {row["recipe"]: row["wall_s"] for row in compress_report(model_dir, out_dir, recipes, build)}


def format_report(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of ``compress_report`` rows."""
    head = (
        f"{'recipe':26s} {'wall s':>7s} {'algo s':>7s} {'MB':>7s} "
        f"{'x src':>6s} {'x fp32':>6s} {'bits':>6s} {'sparsity':>8s}"
    )
    lines = [head]
    for r in rows:
        sparsity = f"{r['sparsity']:.4f}" if r["sparsity"] is not None else "-"
        failed = f"  FAILED: {', '.join(r['failed_checks'])}" if r["failed_checks"] else ""
        lines.append(
            f"{r['recipe']:26s} {r['wall_s']:7.1f} {r['compress_s']:7.1f} {r['weights_mb']:7.1f} "
            f"{r['ratio_vs_source']:6.3f} {r['ratio_vs_fp32']:6.3f} {r['bits_per_weight']:6.2f} "
            f"{sparsity:>8s}{failed}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.bench", description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--no-build", action="store_true", help="only read existing manifests")
    args = parser.parse_args(argv)
    print(format_report(compress_report(args.model, args.out_dir, build=not args.no_build)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
