"""The bench's result as Markdown tables and a PNG (from the JSON the run wrote; no measuring)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.load import ANSWER_TOKENS, Cell, Spread, by_cell, paired_differences, paired_ratios, spread
from bench.roofline import weight_bytes

RATIOS = (
    ("driftgate-grpc", "asyncllm-direct"),
    ("driftgate-http", "asyncllm-direct"),
    ("driftgate-grpc", "vllm-serve-http"),
    ("driftgate-http", "vllm-serve-http"),
    ("driftgate-remote-grpc", "vllm-serve-http"),
    ("driftgate-remote-http", "vllm-serve-http"),
    ("driftgate-remote-grpc-uvloop", "vllm-serve-http"),
    ("driftgate-remote-grpc-uvloop", "driftgate-remote-grpc"),
    ("variant-serve-http", "vllm-serve-http"),
    ("driftgate-remote-variant-grpc", "vllm-serve-http"),
    ("driftgate-remote-variant-grpc", "variant-serve-http"),
)
ADDED = (
    ("driftgate-grpc", "asyncllm-direct"),
    ("driftgate-http", "asyncllm-direct"),
    ("driftgate-remote-grpc", "vllm-serve-http"),
    ("driftgate-remote-http", "vllm-serve-http"),
    ("driftgate-remote-grpc-uvloop", "vllm-serve-http"),
    ("driftgate-remote-variant-grpc", "variant-serve-http"),
)


def cells_of(result: dict[str, Any]) -> list[Cell]:
    return [Cell(**c) for c in result["cells"]]


def _s(x: Spread, scale: float = 1.0, digits: int = 1) -> str:
    return f"{x.median * scale:.{digits}f} [{x.low * scale:.{digits}f}–{x.high * scale:.{digits}f}]"


def figures_table(cells: Sequence[Cell]) -> list[str]:
    tps, ttft = by_cell(cells, "tokens_per_s"), by_cell(cells, "ttft_p50_s")
    p50, p99 = by_cell(cells, "latency_p50_s"), by_cell(cells, "latency_p99_s")
    errors = by_cell(cells, "errors")
    lines = [
        "| system | c | tok/s | TTFT p50 ms | e2e p50 ms | e2e p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in sorted(tps, key=lambda k: (k[1], k[0])):
        lines.append(
            f"| {key[0]} | {key[1]} | {_s(tps[key])} | {_s(ttft[key], 1e3)} | {_s(p50[key], 1e3, 0)} "
            f"| {_s(p99[key], 1e3, 0)} | {errors[key].median:.0f} |"
        )
    return lines


def ratio_table(cells: Sequence[Cell], pairs: Sequence[tuple[str, str]] = RATIOS) -> list[str]:
    concs = sorted({c.concurrency for c in cells})
    lines = [
        "| throughput ratio | " + " | ".join(f"c={c}" for c in concs) + " |",
        "| --- |" + " --- |" * len(concs),
    ]
    for system, base in pairs:
        r = paired_ratios(cells, "tokens_per_s", system, base)
        if r:
            row = " | ".join(_s(r[c], 1, 3) if c in r else "–" for c in concs)
            lines.append(f"| {system} / {base} | {row} |")
    return lines


def added_table(cells: Sequence[Cell], pairs: Sequence[tuple[str, str]] = ADDED) -> list[str]:
    lines = [
        "| added latency, ms (paired by repeat) | c | TTFT p50 | e2e p50 | e2e p99 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for system, base in pairs:
        ttft = paired_differences(cells, "ttft_p50_s", system, base)
        p50 = paired_differences(cells, "latency_p50_s", system, base)
        p99 = paired_differences(cells, "latency_p99_s", system, base)
        for c in sorted(p50):
            lines.append(
                f"| {system} − {base} | {c} | {_s(ttft[c], 1e3)} | {_s(p50[c], 1e3)} | {_s(p99[c], 1e3)} |"
            )
    return lines


def added_server_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """The gateway's own span minus the engine's (`driftgate_gateway_added_seconds`), per cell."""
    from bench.added import medians

    if not records:
        return ["(no gateway-added latency recorded)"]
    lines = [
        "| gateway-added (server side), medians of repeats | c | first p50 ms | first p99 ms "
        "| first ≤ 1 ms | first ≤ 5 ms | last p50 ms | last p99 ms | last ≤ 5 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    figures = {
        (phase, field): medians(records, phase, field)
        for phase in ("first", "total")
        for field in ("p50_s", "p99_s", "share_le_1ms", "share_le_5ms")
    }
    for key in sorted(figures[("first", "p50_s")], key=lambda k: (k[1], k[0])):
        ms = [
            figures[(ph, f)].get(key, float("nan")) * 1e3
            for ph, f in (("first", "p50_s"), ("first", "p99_s"))
        ]
        last = [figures[("total", f)].get(key, float("nan")) * 1e3 for f in ("p50_s", "p99_s")]
        shares = [
            figures[(ph, f)].get(key, float("nan"))
            for ph, f in (("first", "share_le_1ms"), ("first", "share_le_5ms"), ("total", "share_le_5ms"))
        ]
        lines.append(
            f"| {key[0]} | {key[1]} | {ms[0]:.2f} | {ms[1]:.2f} | {shares[0]:.0%} | {shares[1]:.0%} "
            f"| {last[0]:.2f} | {last[1]:.2f} | {shares[2]:.0%} |"
        )
    return lines


def mirror_tables(result: dict[str, Any]) -> list[str]:
    cells = cells_of(result)
    lines = [*figures_table(cells), ""]
    lines.append("| primary, system / mirroring-off (paired) | c | TTFT p50 | e2e p50 | tok/s |")
    lines.append("| --- | --- | --- | --- | --- |")
    systems = sorted({cell.system for cell in cells} - {"mirroring-off"}, key=_mirror_order)
    for system in systems:
        ttft, p50, tps = (
            paired_ratios(cells, figure, system, "mirroring-off")
            for figure in ("ttft_p50_s", "latency_p50_s", "tokens_per_s")
        )
        for c in sorted(ttft):
            lines.append(
                f"| {system} | {c} | {_s(ttft[c], 1, 3)} | {_s(p50[c], 1, 3)} | {_s(tps[c], 1, 3)} |"
            )
    lines += neighbour_lines(result.get("neighbours", []))
    lines += [
        "",
        "| CPU (median) | c | gateway cores | engine cores | gateway ms/request, net of idle |",
        "| --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in result["cpu"]:
        groups.setdefault((row["system"], row["concurrency"]), []).append(row)
    for (system, c), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {
            k: spread([float(r[k]) for r in rows]).median for k in rows[0] if isinstance(rows[0][k], float)
        }
        lines.append(
            f"| {system} | {c} | {med['gateway_cores']:.3f} | {med['engines_cores']:.2f} "
            f"| {med['gateway_cpu_s_per_request'] * 1e3:.1f} |"
        )
    idle = result.get("idle_cores")
    if idle:
        lines += [
            "",
            f"Idle (no load): gateway {idle['gateway']:.3f} cores, engines {idle['engines']:.3f} cores.",
        ]
    return lines


MIRROR_SYSTEMS = (
    "mirroring-on",
    "mirroring-unscored",
    "neighbour-read",
    "neighbour-asyncllm",
    "neighbour-twin",
)
"""The mirror suite's systems besides its baseline, mirroring-off, in the order its tables list them."""


def _mirror_order(system: str) -> tuple[int, str]:
    return (MIRROR_SYSTEMS.index(system) if system in MIRROR_SYSTEMS else len(MIRROR_SYSTEMS), system)


def neighbour_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What each neighbour did on core 1 during the primary's cells (medians over repeats)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["system"], row["concurrency"]), []).append(row)
    if not groups:
        return []
    lines = [
        "",
        "| neighbour on core 1 (median) | c | its load | still loading at the cell's end | failed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (system, c), group in sorted(groups.items(), key=lambda kv: (kv[0][1], _mirror_order(kv[0][0]))):
        ran = [r for r in group if "error" not in r]
        if not ran:
            load = "none"
        elif "read_gb_s" in ran[0]:
            load = f"reads {spread([r['read_gb_s'] for r in ran]).median:.1f} GB/s"
        else:
            load = f"decodes {spread([r['tok_s'] for r in ran]).median:.1f} tok/s"
        known = [r for r in group if "covered" in r]  # runs before bce8a82 did not record it
        covered = f"{sum(1 for r in known if r['covered'])}/{len(known)}" if known else "–"
        lines.append(f"| {system} | {c} | {load} | {covered} | {len(group) - len(ran)} |")
    return lines


def contention_lines(result: dict[str, Any]) -> list[str]:
    """Each core's rate alone and with every core busy, per kind: medians [min–max] over rounds."""
    cores = result["cores"]
    lines = [
        "| kind | core | alone | all cores at once | at once / alone |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, unit in (("read", "GB/s"), ("compute", "Gflop/s")):
        rounds = [r for r in result["rounds"] if r["kind"] == kind]
        for i, core in enumerate(cores):
            alone = spread([r["alone"][i] / 1e9 for r in rounds])
            both = spread([r["both"][i] / 1e9 for r in rounds])
            ratio = spread([r["ratios"][i] for r in rounds])
            lines.append(
                f"| {kind} | {core} | {_s(alone, 1, 1)} {unit} | {_s(both, 1, 1)} {unit} | {_s(ratio, 1, 3)} |"
            )
    return lines


def profile_lines(profile: dict[str, Any]) -> list[str]:
    if "top" not in profile:
        return [f"- profile: {profile.get('error', 'none')}"]
    lines = [
        f"Flame graph: `{Path(profile['flame_graph']).name}`; py-spy samples of the gateway process "
        "(not its engine-core children) under c=8.",
        "",
        "| function | self | inclusive |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{t['function']}` | {t['self']:.1%} | {t['inclusive']:.1%} |" for t in profile["top"]]
    return lines


def variants_table(variants: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | c | AsyncLLM tok/s | gateway tok/s | gateway / AsyncLLM (paired) |",
        "| --- | --- | --- | --- | --- |",
    ]
    skipped = {name: r["skipped"] for name, r in variants.items() if "skipped" in r}
    for name, result in variants.items():
        if name in skipped:
            continue
        cells = cells_of(result)
        tps = by_cell(cells, "tokens_per_s")
        ratio = paired_ratios(cells, "tokens_per_s", "driftgate-grpc", "asyncllm-direct")
        for c in sorted(ratio):
            lines.append(
                f"| {name} | {c} | {_s(tps[('asyncllm-direct', c)])} | {_s(tps[('driftgate-grpc', c)])} "
                f"| {_s(ratio[c], 1, 3)} |"
            )
    return lines + [f"- {name}: not measured on this CPU: {why}" for name, why in skipped.items()]


def _settings_lines(result: dict[str, Any], baseline: str, roofs: dict[str, float]) -> list[str]:
    """A settings suite's start times, figures and ratios to `baseline`, and each system's c=1 decode
    rate against its roofline in tok/s (`roofs`, by system; none shown where missing)."""
    cells = cells_of(result)
    pairs = [(s, baseline) for s in sorted({c.system for c in cells}) if s != baseline]
    lines = [f"Engine start: {', '.join(f'{k} {v:.0f} s' for k, v in result['start_s'].items())}", ""]
    lines += [*figures_table(cells), "", *ratio_table(cells, pairs)]
    tpot = by_cell(cells, "tpot_p50_s")
    for (system, c), t in sorted(tpot.items()):
        if c == 1 and t.median > 0 and system in roofs:
            rate = 1.0 / t.median
            lines.append(
                f"- {system}, c=1: decode {rate:.1f} tok/s = {rate / roofs[system]:.2f} of the roofline"
            )
    return lines


def preload_lines(result: dict[str, Any], roof: dict[str, Any] | None) -> list[str]:
    systems = result["start_s"]
    return _settings_lines(
        result, "preload-none", {s: roof["roofline_tok_s"] for s in systems} if roof else {}
    )


def dtype_lines(result: dict[str, Any], roof: dict[str, Any] | None) -> list[str]:
    """The dtype suite: speed as a settings suite (each dtype against its own roofline: float32 reads
    twice the bytes), then how the greedy answers compare with the baseline dtype's."""
    roofs = {}
    if roof:
        bytes_per_s = roof["bandwidth_gb_s"] * 1e9
        floats, fixed = roof.get("float_parameters", roof["parameters"]), roof.get("fixed_bytes", 0)
        for system in result["start_s"]:
            roofs[system] = bytes_per_s / weight_bytes(floats, fixed, system.removeprefix("dtype-"))
    baseline = result.get("answers_baseline", "dtype-bfloat16")
    return _settings_lines(result, baseline, roofs) + answers_lines(result, baseline)


def answered_settings_lines(result: dict[str, Any], roof: dict[str, Any] | None, baseline: str) -> list[str]:
    """A settings suite with greedy answers against `baseline` (kernels, executor): speed, answers."""
    baseline = result.get("answers_baseline", baseline)
    roofs = {s: roof["roofline_tok_s"] for s in result["start_s"]} if roof else {}
    return _settings_lines(result, baseline, roofs) + answers_lines(result, baseline)


def answers_lines(result: dict[str, Any], baseline: str) -> list[str]:
    """How each system's greedy answers compare with the baseline's (`bench.settings.answer_agreement`)."""
    lines = []
    for system, a in result.get("answers", {}).items():
        agree = a["token_agreement"]
        head = (
            f"- {system} vs {baseline}: greedy answers to the {a['prompts']} bench prompts "
            f"(up to {ANSWER_TOKENS} tokens): {a['identical']} identical"
        )
        if a["identical"] == a["prompts"]:
            lines.append(head)
            continue
        lines.append(
            f"{head}, token agreement mean {sum(agree) / len(agree):.3f}, "
            + (
                f"the others first differ at token {a['divergent_at']}"
                if "divergent_at" in a
                else f"first divergence (an identical answer's length) {sorted(a['first_divergence'])}"
            )
        )
    return lines


def startup_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| start | all SERVING s | engines | slowest engine ready s |", "| --- | --- | --- | --- |"]
    for name, run in result.items():
        ready = run.get("ready_s", {})
        slowest = max(ready.values()) if ready else float("nan")
        lines.append(f"| {name} | {run['all_serving_s']:.0f} | {len(run['variants'])} | {slowest:.0f} |")
    skipped: dict[str, str] = next((run["skipped"] for run in result.values() if run.get("skipped")), {})
    return lines + [f"- {name}: not started on this CPU: {why}" for name, why in skipped.items()]


def roofline_lines(roof: dict[str, Any], doors: dict[str, Any] | None) -> list[str]:
    # runs before the served dtype was recorded counted bf16 bytes whatever the engines ran
    read = roof.get("weight_bytes", roof.get("weight_bytes_bf16", 0))
    fixed = f", {roof['fixed_bytes'] / 1e6:.0f} MB of them integer tensors" if roof.get("fixed_bytes") else ""
    lines = [
        f"- model: {roof.get('model', 'the pulled dense model')}",
        f"- read bandwidth: {roof['bandwidth_gb_s']:.1f} GB/s ({roof['how']})",
        f"- weights read per decoded token: {read / 1e6:.0f} MB "
        f"({roof['parameters'] / 1e6:.1f} M parameters, {roof.get('dtype', 'bfloat16')}{fixed})",
        f"- roofline: {roof['roofline_tok_s']:.0f} tok/s single stream",
    ]
    if doors:
        tpot = by_cell(cells_of(doors), "tpot_p50_s")
        for system in ("asyncllm-direct", "driftgate-grpc", "vllm-serve-http"):
            t = tpot.get((system, 1))
            if t and t.median == t.median and t.median > 0:
                rate = 1.0 / t.median
                lines.append(
                    f"- {system}, c=1: decode {rate:.1f} tok/s (1 / median time per output token) = "
                    f"{rate / roof['roofline_tok_s']:.2f} of the roofline"
                )
    return lines


def plot(cells: Sequence[Cell], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for figure, ax, scale, label in (
        ("tokens_per_s", axes[0], 1.0, "tokens/s"),
        ("ttft_p50_s", axes[1], 1e3, "TTFT p50 (ms)"),
    ):
        spreads = by_cell(cells, figure)
        for system in sorted({k[0] for k in spreads}):
            keys = sorted((k for k in spreads if k[0] == system), key=lambda k: k[1])
            xs = [k[1] for k in keys]
            med = [spreads[k].median * scale for k in keys]
            err = [
                [(spreads[k].median - spreads[k].low) * scale for k in keys],
                [(spreads[k].high - spreads[k].median) * scale for k in keys],
            ]
            ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=system)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
