"""Scoring knowledge probes: P@1 on greedy continuations, LAMA-style P@k, per-variant reports.

Everything here is pure (no I/O, no model calls). The caller (engine/gateway side) produces:

* for P@1: the greedy continuation of ``fact.prompt`` with ``max_tokens=8``
  -> :func:`is_correct`;
* for P@k (optional): for each string ``c`` of :func:`candidates_for`, the log-likelihood the model
  assigns to ``" " + c`` after ``fact.prompt`` (sum of token logprobs) -> :func:`rank_of_object` /
  :func:`hit_at_k`. The cost is bounded by ``max_candidates`` scorings per fact.

then aggregates per variant with :func:`score_variant` / :func:`build_report`
(the report schema lives in :mod:`serving.probes.report`).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.probes.facts import Fact, facts_sha256, relations
from serving.probes.report import (
    REPORT_OPTIONAL_KEYS,
    ReportSchemaError,
    format_table,
    validate_report,
)

__all__ = [
    "REPORT_OPTIONAL_KEYS",
    "RelationScore",
    "ReportSchemaError",
    "VariantResult",
    "VariantScore",
    "build_report",
    "candidate_set",
    "candidates_for",
    "flips",
    "flips_by_relation",
    "format_table",
    "hit_at_k",
    "is_correct",
    "normalize",
    "rank_of_object",
    "recovery",
    "score_variant",
    "validate_report",
]

_LEADING_ARTICLE = re.compile(r"(?:a|an|the)(?=\s|$)")
# Curly quotes made straight, and Latin letters that Unicode decomposition does not fold to ASCII.
_FOLD = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "ʼ": "'",
        "`": "'",
        "“": '"',
        "”": '"',
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ı": "i",
    }
)


# --------------------------------------------------------------------------- P@1


def _strip_leading(text: str) -> str:
    """Drop leading whitespace, punctuation (Unicode category P*) and control/format characters (C*)."""
    i = 0
    while i < len(text) and (text[i].isspace() or unicodedata.category(text[i])[0] in "PC"):
        i += 1
    return text[i:]


def normalize(text: str) -> str:
    """Canonical form used to compare a continuation with an answer.

    Lowercased; diacritics folded ("Bogotá" -> "bogota", "złoty" -> "zloty") and curly quotes made
    straight; leading whitespace and punctuation removed; then one leading article "a"/"an"/"the"
    removed when it is a whole word (followed by whitespace or the end; "theatre" keeps its "the"),
    and any whitespace or punctuation after it; finally runs of whitespace collapsed to one space and
    the ends stripped. Inner punctuation is kept ("u.s.", "n'djamena").
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    folded = _strip_leading(folded)
    article = _LEADING_ARTICLE.match(folded)
    if article:
        folded = _strip_leading(folded[article.end() :])
    return " ".join(folded.split())


def _ends_at_word_boundary(text: str, end: int) -> bool:
    """True if a match ``text[:end]`` is a whole word: ``text[end]`` can't continue the word.

    A letter or digit continues it ("paris" in "parisian"), and so does a hyphen followed by one
    ("guinea" in "guinea-bissau"); anything else (space, ".", ",", "'", end of text) ends it.
    """
    if end >= len(text):
        return True
    nxt = text[end]
    if nxt.isalnum():
        return False
    return not (nxt == "-" and end + 1 < len(text) and text[end + 1].isalnum())


def is_correct(continuation: str, fact: Fact) -> bool:
    """P@1 for one fact: does the greedy continuation start with an accepted answer?

    Both sides go through :func:`normalize`; the continuation must start with the normalised object
    or one of its aliases, and the match must end at a word boundary (see
    :func:`_ends_at_word_boundary`), so "Paris." and " the Euro" count but "Parisian" does not.
    Only the start counts: " the city of Paris" is wrong. The caller generates greedily with
    ``max_tokens=8``, which fits every built-in answer (or a short alias of it).
    """
    text = normalize(continuation)
    for answer in fact.answers:
        target = normalize(answer)
        if target and text.startswith(target) and _ends_at_word_boundary(text, len(target)):
            return True
    return False


# --------------------------------------------------------------------------- P@k


def candidate_set(facts: Iterable[Fact], relation: str) -> list[str]:
    """Distinct objects of ``relation``, sorted case-insensitively.

    Objects equal after :func:`normalize` count once (as the smallest spelling, so the result does
    not depend on the order of ``facts``).
    """
    seen: dict[str, str] = {}
    for fact in facts:
        if fact.relation == relation:
            key = normalize(fact.object)
            seen[key] = min(seen.get(key, fact.object), fact.object)
    return sorted(seen.values(), key=lambda s: (normalize(s), s))


def _fact_seed(fact: Fact, seed: int) -> int:
    key = f"{seed}\x00{fact.relation}\x00{fact.subject}\x00{fact.object}\x00{fact.template}"
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def candidates_for(fact: Fact, facts: Sequence[Fact], max_candidates: int = 10, seed: int = 0) -> list[str]:
    """The strings to score for P@k of ``fact``: its object plus up to ``max_candidates - 1`` others.

    Distractors are drawn from :func:`candidate_set` of the fact's relation, leaving out any string
    equal (after :func:`normalize`) to one of the fact's accepted answers, so a second true answer
    is never counted against the model. The draw depends only on ``seed`` and the fact itself (not on
    the order of ``facts``), so it is reproducible across runs and variants. Returned sorted
    case-insensitively, the object included, so the position does not reveal the answer.
    """
    if max_candidates < 1:
        raise ValueError("max_candidates must be >= 1")
    accepted = {normalize(answer) for answer in fact.answers}
    pool = [c for c in candidate_set(facts, fact.relation) if normalize(c) not in accepted]
    rng = random.Random(_fact_seed(fact, seed))
    chosen = rng.sample(pool, min(max_candidates - 1, len(pool)))
    return sorted([fact.object, *chosen], key=lambda s: (normalize(s), s))


def rank_of_object(fact: Fact, logliks: Mapping[str, float]) -> int:
    """1-based rank of ``fact.object`` among the scored candidates (1 = the model's top choice).

    ``logliks`` maps each candidate (as returned by :func:`candidates_for`) to its log-likelihood.
    Ties count against the object (rank = 1 + number of competitors scoring >= the object) and a NaN
    score counts as -inf. Keys equal (after normalisation) to another accepted answer of the fact are
    not competitors.
    """
    if fact.object not in logliks:
        raise KeyError(f"no log-likelihood for the object {fact.object!r} of {fact.prompt!r}")

    def score(value: float) -> float:
        return -math.inf if math.isnan(value) else float(value)

    target = score(logliks[fact.object])
    accepted = {normalize(answer) for answer in fact.answers}
    competitors = [
        score(ll) for cand, ll in logliks.items() if cand != fact.object and normalize(cand) not in accepted
    ]
    return 1 + sum(1 for ll in competitors if ll >= target)


def hit_at_k(fact: Fact, logliks: Mapping[str, float], k: int) -> bool:
    """P@k for one fact: is the object ranked within the top ``k`` candidates?"""
    if k < 1:
        raise ValueError("k must be >= 1")
    return rank_of_object(fact, logliks) <= k


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class RelationScore:
    n: int
    p_at_1: float
    p_at_k: float | None


@dataclass(frozen=True)
class VariantScore:
    n: int
    p_at_1: float
    p_at_k: float | None
    by_relation: Mapping[str, RelationScore] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantResult:
    """Per-fact outcomes of one variant, aligned with the probe facts."""

    correct: Sequence[bool]
    hits_at_k: Sequence[bool] | None = None


def _check_aligned(facts: Sequence[Fact], values: Sequence[bool], what: str) -> None:
    if len(values) != len(facts):
        raise ValueError(f"{what} has {len(values)} entries for {len(facts)} facts")


def _mean(values: Sequence[bool]) -> float:
    return sum(1 for v in values if v) / len(values)


def score_variant(
    facts: Sequence[Fact], correct: Sequence[bool], hits_at_k: Sequence[bool] | None = None
) -> VariantScore:
    """P@1 (and P@k when ``hits_at_k`` is given) overall and per relation."""
    if not facts:
        raise ValueError("no facts to score")
    _check_aligned(facts, correct, "correct")
    if hits_at_k is not None:
        _check_aligned(facts, hits_at_k, "hits_at_k")
    by_relation: dict[str, RelationScore] = {}
    for relation in relations(facts):
        idx = [i for i, fact in enumerate(facts) if fact.relation == relation]
        by_relation[relation] = RelationScore(
            n=len(idx),
            p_at_1=_mean([correct[i] for i in idx]),
            p_at_k=None if hits_at_k is None else _mean([hits_at_k[i] for i in idx]),
        )
    return VariantScore(
        n=len(facts),
        p_at_1=_mean(correct),
        p_at_k=None if hits_at_k is None else _mean(hits_at_k),
        by_relation=by_relation,
    )


def flips(primary_correct: Sequence[bool], variant_correct: Sequence[bool]) -> tuple[int, int]:
    """``(lost, gained)``: facts the primary got right and the variant wrong, and vice versa."""
    if len(primary_correct) != len(variant_correct):
        raise ValueError(f"length mismatch: {len(primary_correct)} vs {len(variant_correct)}")
    lost = sum(1 for p, v in zip(primary_correct, variant_correct, strict=True) if p and not v)
    gained = sum(1 for p, v in zip(primary_correct, variant_correct, strict=True) if v and not p)
    return lost, gained


def flips_by_relation(
    facts: Sequence[Fact], primary_correct: Sequence[bool], variant_correct: Sequence[bool]
) -> dict[str, tuple[int, int]]:
    """:func:`flips` per relation, relations in order of first appearance."""
    _check_aligned(facts, primary_correct, "primary_correct")
    _check_aligned(facts, variant_correct, "variant_correct")
    out: dict[str, tuple[int, int]] = {}
    for relation in relations(facts):
        idx = [i for i, fact in enumerate(facts) if fact.relation == relation]
        out[relation] = flips([primary_correct[i] for i in idx], [variant_correct[i] for i in idx])
    return out


def recovery(variant_p_at_1: float, primary_p_at_1: float) -> float | None:
    """Variant P@1 / primary P@1; ``None`` (JSON null) when the primary's P@1 is 0 (undefined)."""
    if primary_p_at_1 <= 0 or math.isnan(primary_p_at_1) or math.isnan(variant_p_at_1):
        return None
    return variant_p_at_1 / primary_p_at_1


def build_report(
    primary: str,
    per_variant: Mapping[str, VariantResult],
    facts: Sequence[Fact],
    *,
    k: int | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """The knowledge-probe report (schema: :mod:`serving.probes.report`), JSON-serialisable.

    ``per_variant`` must contain ``primary``; it is listed first, then the others in the given
    order. The primary's flips are 0 and its recovery 1.0 (``None`` if its P@1 is 0). Top-level
    ``probes_sha256`` (:func:`facts_sha256` of ``facts``) is always present; ``k`` (the k of P@k) and
    ``created`` (a timestamp string, supplied by the caller to keep this pure) only when given.
    """
    if primary not in per_variant:
        raise ValueError(f"primary {primary!r} is not among the variants {sorted(per_variant)}")
    if k is not None and k < 1:
        raise ValueError("k must be >= 1")
    primary_result = per_variant[primary]
    primary_score = score_variant(facts, primary_result.correct, primary_result.hits_at_k)
    variants: dict[str, Any] = {}
    for name in [primary, *(n for n in per_variant if n != primary)]:
        result = per_variant[name]
        score = score_variant(facts, result.correct, result.hits_at_k)
        lost, gained = flips(primary_result.correct, result.correct)
        rel_flips = flips_by_relation(facts, primary_result.correct, result.correct)
        variants[name] = {
            "n": score.n,
            "p_at_1": score.p_at_1,
            "p_at_k": score.p_at_k,
            "recovery": recovery(score.p_at_1, primary_score.p_at_1),
            "flips_lost": lost,
            "flips_gained": gained,
            "by_relation": {
                relation: {
                    "n": rel.n,
                    "p_at_1": rel.p_at_1,
                    "p_at_k": rel.p_at_k,
                    "flips_lost": rel_flips[relation][0],
                    "flips_gained": rel_flips[relation][1],
                }
                for relation, rel in score.by_relation.items()
            },
        }
    report: dict[str, Any] = {"primary": primary, "variants": variants}
    report["probes_sha256"] = facts_sha256(facts)
    if k is not None:
        report["k"] = k
    if created is not None:
        report["created"] = created
    return report
