"""PNG plots of a knowledge-probe report (see :mod:`serving.probes.report`).

Drawn with matplotlib's object API on an Agg canvas created inside each function: nothing is
imported or configured at import time and pyplot's global state / backend is never touched, so
this is safe to call from a server process or a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_PRIMARY_COLOR = "#4d4d4d"
_DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _variant_names(report: Mapping[str, Any]) -> list[str]:
    return list(report["variants"])


def _relations(report: Mapping[str, Any]) -> list[str]:
    rels: dict[str, None] = {}
    for entry in report["variants"].values():
        rels.update(dict.fromkeys(entry["by_relation"]))
    return list(rels)


def _colors(names: list[str], primary: str) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    others = [n for n in names if n != primary]
    colors: dict[str, Any] = {name: cmap(i % 10) for i, name in enumerate(others)}
    colors[primary] = _PRIMARY_COLOR
    return colors


def plot_accuracy_by_relation(report: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars: P@1 of every variant, per relation and overall ("all")."""
    names = _variant_names(report)
    rels = _relations(report)
    groups = [*rels, "all"]
    colors = _colors(names, report["primary"])
    fig = _new_figure(min(16.0, max(6.0, 1.2 * len(groups) + 2)), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        entry = report["variants"][name]
        values = [entry["by_relation"].get(rel, {}).get("p_at_1", 0.0) for rel in rels] + [entry["p_at_1"]]
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        label = f"{name} (primary)" if name == report["primary"] else name
        ax.bar(xs, values, width=width, label=label, color=colors[name])
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("P@1")
    ax.set_title("Knowledge probes: P@1 by relation")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_flips(report: Mapping[str, Any], path: str | Path) -> Path:
    """Diverging bars per relation and variant: facts lost (below 0) and gained (above 0) vs primary."""
    primary = report["primary"]
    names = [n for n in _variant_names(report) if n != primary]
    rels = _relations(report)
    colors = _colors(_variant_names(report), primary)
    fig = _new_figure(min(16.0, max(6.0, 1.2 * len(rels) + 2)), 4.5)
    ax = fig.add_subplot()
    if not names:
        ax.text(0.5, 0.5, "no variants besides the primary", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        by_rel = report["variants"][name]["by_relation"]
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(rels))]
        lost = [-by_rel.get(rel, {}).get("flips_lost", 0) for rel in rels]
        gained = [by_rel.get(rel, {}).get("flips_gained", 0) for rel in rels]
        entry = report["variants"][name]
        label = f"{name} (lost {entry['flips_lost']}, gained {entry['flips_gained']})"
        ax.bar(xs, gained, width=width, color=colors[name], label=label)
        ax.bar(xs, lost, width=width, color=colors[name], alpha=0.55, hatch="//", edgecolor="white")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rels)), rels, rotation=20, ha="right")
    ax.set_ylabel("facts  (↓ lost  /  gained ↑)")
    ax.set_title(f"Knowledge flips vs primary {primary!r}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_p1_vs_cost(
    report: Mapping[str, Any], costs: Mapping[str, Mapping[str, float]], path: str | Path
) -> Path:
    """Two panels: P@1 against weight bytes on disk, and P@1 against decode tokens/s.

    ``costs`` maps variant name -> ``{"bytes": int, "tokens_per_s": float}`` (bytes of weights on
    disk, decode throughput); variants without an entry, or an entry without a key, are left out.
    """
    primary = report["primary"]
    names = [n for n in _variant_names(report) if n in costs]
    colors = _colors(_variant_names(report), primary)
    fig = _new_figure(10.0, 4.2)
    ax_bytes, ax_speed = fig.subplots(1, 2, sharey=True)
    panels = (
        (ax_bytes, "bytes", 1 / 2**30, "weights on disk (GiB)"),
        (ax_speed, "tokens_per_s", 1.0, "decode throughput (tokens/s)"),
    )
    for ax, key, scale, xlabel in panels:
        for name in names:
            if key not in costs[name]:
                continue
            x = float(costs[name][key]) * scale
            y = report["variants"][name]["p_at_1"]
            marker = "*" if name == primary else "o"
            ax.scatter(
                [x], [y], s=140 if name == primary else 60, marker=marker, color=colors[name], zorder=3
            )
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize="small")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.margins(x=0.2, y=0.15)
    ax_bytes.set_ylabel("P@1")
    ax_bytes.set_ylim(0, 1.05)
    if not names:
        ax_bytes.text(0.5, 0.5, "no cost data", ha="center", va="center", transform=ax_bytes.transAxes)
    fig.suptitle("Knowledge (P@1) vs cost  (★ = primary)")
    return _save(fig, path)


def write_plots(
    report: Mapping[str, Any],
    out_dir: str | Path,
    costs: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Path]:
    """Write ``accuracy_by_relation.png``, ``flips.png`` and, with ``costs``, ``p1_vs_cost.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_accuracy_by_relation(report, out / "accuracy_by_relation.png"),
        plot_flips(report, out / "flips.png"),
    ]
    if costs:
        paths.append(plot_p1_vs_cost(report, costs, out / "p1_vs_cost.png"))
    return paths
