"""The knowledge-probe report: its schema, a validator and a text table. Pure functions.

Schema (built by :func:`serving.probes.scoring.build_report`)::

    {
      "primary": str,                       # name of the reference variant
      "variants": {                         # primary first; every variant scored on the same facts
        name: {
          "n": int,                         # facts scored
          "p_at_1": float,                  # in [0, 1]
          "p_at_k": float | null,           # null when P@k was not measured
          "recovery": float | null,         # p_at_1 / primary p_at_1; null when primary p_at_1 == 0
          "flips_lost": int,                # primary right, variant wrong
          "flips_gained": int,              # primary wrong, variant right
          "by_relation": {
            relation: {"n": int, "p_at_1": float, "p_at_k": float | null,
                       "flips_lost": int, "flips_gained": int}
          }
        }
      },
      # optional, documented extra keys:
      "probes_sha256": str,                 # sha256 of the canonical probe file (facts_sha256)
      "k": int,                             # the k of P@k
      "created": str                        # timestamp supplied by the caller
    }

The primary's own entry has ``flips_lost == flips_gained == 0`` and recovery 1.0 (null if its
P@1 is 0). No other keys are allowed anywhere; numbers are finite (no NaN: JSON has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

REPORT_REQUIRED_KEYS = ("primary", "variants")
REPORT_OPTIONAL_KEYS = ("probes_sha256", "k", "created")
VARIANT_KEYS = ("n", "p_at_1", "p_at_k", "recovery", "flips_lost", "flips_gained", "by_relation")
RELATION_KEYS = ("n", "p_at_1", "p_at_k", "flips_lost", "flips_gained")


class ReportSchemaError(ValueError):
    """A report does not match the schema; ``problems`` lists what is wrong, with JSON paths."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid probe report:\n  " + "\n  ".join(problems))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, float) and math.isfinite(value)) or _is_int(value)


def _check_keys(
    problems: list[str], obj: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> bool:
    """Record key problems; return False if ``obj`` is not a mapping at all."""
    if not isinstance(obj, Mapping):
        problems.append(f"{where}: expected an object, got {type(obj).__name__}")
        return False
    missing = [key for key in required if key not in obj]
    extra = sorted(str(key) for key in obj if key not in required and key not in optional)
    if missing:
        problems.append(f"{where}: missing key(s) {missing}")
    if extra:
        problems.append(f"{where}: unexpected key(s) {extra}")
    return True


def _check_fraction(problems: list[str], value: Any, where: str, nullable: bool) -> None:
    if value is None and nullable:
        return
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        problems.append(
            f"{where}: expected a number in [0, 1]{' or null' if nullable else ''}, got {value!r}"
        )


def _check_count(problems: list[str], value: Any, where: str) -> None:
    if not _is_int(value) or value < 0:
        problems.append(f"{where}: expected a non-negative integer, got {value!r}")


def _check_scores(problems: list[str], entry: Mapping[str, Any], where: str) -> None:
    _check_count(problems, entry.get("n"), f"{where}.n")
    _check_fraction(problems, entry.get("p_at_1"), f"{where}.p_at_1", nullable=False)
    _check_fraction(problems, entry.get("p_at_k"), f"{where}.p_at_k", nullable=True)
    _check_count(problems, entry.get("flips_lost"), f"{where}.flips_lost")
    _check_count(problems, entry.get("flips_gained"), f"{where}.flips_gained")


def _check_variant(problems: list[str], name: str, entry: Any) -> None:
    where = f"variants.{name}"
    if not _check_keys(problems, entry, where, VARIANT_KEYS):
        return
    _check_scores(problems, entry, where)
    rec = entry.get("recovery")
    if rec is not None and (not _is_number(rec) or rec < 0):
        problems.append(f"{where}.recovery: expected a non-negative number or null, got {rec!r}")
    by_relation = entry.get("by_relation")
    if not isinstance(by_relation, Mapping):
        problems.append(f"{where}.by_relation: expected an object, got {type(by_relation).__name__}")
        return
    if not by_relation:
        problems.append(f"{where}.by_relation: empty")
    for relation, rel in by_relation.items():
        rel_where = f"{where}.by_relation.{relation}"
        if _check_keys(problems, rel, rel_where, RELATION_KEYS):
            _check_scores(problems, rel, rel_where)
    rels = [r for r in by_relation.values() if isinstance(r, Mapping)]
    for key in ("n", "flips_lost", "flips_gained"):
        values: list[Any] = [r.get(key) for r in rels]
        if all(_is_int(v) for v in values) and _is_int(entry.get(key)):
            total = sum(values)
            if total != entry[key]:
                problems.append(f"{where}.{key}: {entry[key]} != sum over relations ({total})")


def validate_report(obj: Any) -> None:
    """Raise :class:`ReportSchemaError` unless ``obj`` matches the report schema (module docstring)."""
    problems: list[str] = []
    if not _check_keys(problems, obj, "report", REPORT_REQUIRED_KEYS, REPORT_OPTIONAL_KEYS):
        raise ReportSchemaError(problems)
    primary = obj.get("primary")
    if not isinstance(primary, str) or not primary:
        problems.append(f"report.primary: expected a non-empty string, got {primary!r}")
    if "probes_sha256" in obj and not isinstance(obj["probes_sha256"], str):
        problems.append("report.probes_sha256: expected a string")
    if "k" in obj and (not _is_int(obj["k"]) or obj["k"] < 1):
        problems.append(f"report.k: expected a positive integer, got {obj['k']!r}")
    if "created" in obj and not isinstance(obj["created"], str):
        problems.append("report.created: expected a string")
    variants = obj.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        problems.append("report.variants: expected a non-empty object")
    else:
        for name, entry in variants.items():
            _check_variant(problems, str(name), entry)
        if isinstance(primary, str) and primary not in variants:
            problems.append(f"report.variants: primary {primary!r} missing")
        elif isinstance(primary, str) and isinstance(variants[primary], Mapping):
            own = variants[primary]
            if own.get("flips_lost") != 0 or own.get("flips_gained") != 0:
                problems.append(f"variants.{primary}: the primary must have 0 flips")
            expected_rec = 1.0 if _is_number(own.get("p_at_1")) and own["p_at_1"] > 0 else None
            if own.get("recovery") != expected_rec:
                problems.append(f"variants.{primary}.recovery: expected {expected_rec}")
        ns = {entry.get("n") for entry in variants.values() if isinstance(entry, Mapping)}
        if len(ns) > 1:
            problems.append(
                f"report.variants: variants scored on different numbers of facts {sorted(map(str, ns))}"
            )
    if problems:
        raise ReportSchemaError(problems)


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table: one block per variant, an "(all)" row then one row per relation.

    Relation rows show recovery relative to the primary's P@1 on that relation.
    """
    primary = report["primary"]
    variants: Mapping[str, Any] = report["variants"]
    primary_rel = variants[primary]["by_relation"]
    width_v = max(7, *(len(name) + 1 for name in variants))  # +1 for the primary's "*"
    relations = [rel for entry in variants.values() for rel in entry["by_relation"]]
    width_r = max(8, *(len(rel) for rel in relations))
    header = (
        f"{'variant':<{width_v}}  {'relation':<{width_r}}  {'n':>5}  {'P@1':>6}  {'P@k':>6}  "
        f"{'recovery':>8}  {'lost':>5}  {'gained':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, entry in variants.items():
        label = f"{name}*" if name == primary else name
        rows = [("(all)", entry, entry["recovery"])]
        for rel, scores in entry["by_relation"].items():
            base = primary_rel.get(rel, {}).get("p_at_1")
            rows.append((rel, scores, scores["p_at_1"] / base if base else None))
        for rel, scores, rec in rows:
            lines.append(
                f"{label:<{width_v}}  {rel:<{width_r}}  {scores['n']:>5}  {_fmt(scores['p_at_1']):>6}  "
                f"{_fmt(scores['p_at_k']):>6}  {_fmt(rec):>8}  {scores['flips_lost']:>5}  "
                f"{scores['flips_gained']:>6}"
            )
            label = ""
        lines.append("")
    k = report.get("k")
    lines.append(f"* primary. P@1: greedy continuation starts with the object; P@k: k={k if k else '-'}.")
    return "\n".join(lines)
