"""Pure functions that measure how far a shadow model's answer drifts from the primary's.

Nothing here does I/O or imports vLLM/gRPC; the gateway feeds in plain texts, token ids and
logprob mappings and gets back plain numbers.

Teacher-forced scores follow Dutta et al. 2024 ("Accuracy is not all you need"): the primary's
completion is scored under both models with vLLM ``prompt_logprobs=k`` on prompt + completion, so
for every completion position ``t`` each model gives a mapping ``{token_id: logprob}`` holding its
top-k tokens plus the primary's actual token at ``t``. A *scores* sequence is one such mapping per
completion position, aligned with the primary's completion token ids (the *targets*).

A comparison's :class:`DriftResult` and its running totals (:class:`DriftBook`) live in
``serving.drift_book``; they are re-exported here.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from serving.drift_book import OUTCOMES, DriftBook, DriftResult, DriftStats, DriftSummary

__all__ = [
    "OUTCOMES",
    "Answer",
    "DriftBook",
    "DriftResult",
    "DriftStats",
    "DriftSummary",
    "Scores",
    "compare",
    "exact_match",
    "first_divergence",
    "kl_topk",
    "normalize_text",
    "teacher_forced_agreement",
    "token_agreement",
]

Scores = Sequence[Mapping[int, float]]
"""One ``{token_id: logprob}`` mapping per completion position."""

_EPS = 1e-12  # floor for q inside logs: a KL term is at most p * log(1 / _EPS) ~ 27.6 * p
_MASS_SLACK = 1e-6  # floor for the shadow's unlisted mass (float32 logprobs can sum past 1)


# --------------------------------------------------------------------------- text & token ids


def normalize_text(text: str) -> str:
    """Unicode-NFC-normalize, strip, and collapse every run of whitespace to a single space.

    Case is kept on purpose: a compressed model that changes capitalisation has changed its
    answer, and the drift metrics should see it.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def exact_match(primary_text: str, shadow_text: str) -> bool:
    """True when both texts are equal after :func:`normalize_text`."""
    return normalize_text(primary_text) == normalize_text(shadow_text)


def token_agreement(primary_ids: Sequence[int], shadow_ids: Sequence[int]) -> float:
    """Fraction of positions ``0 .. min_len - 1`` where both sequences hold the same token.

    Only the overlap is compared, so a shadow answer that is a prefix of the primary's (or
    the reverse) scores 1.0; length differences show up in :func:`first_divergence`.
    Edge cases: both empty -> 1.0 (nothing disagrees); exactly one empty -> 0.0.
    """
    n = min(len(primary_ids), len(shadow_ids))
    if n == 0:
        return 1.0 if len(primary_ids) == len(shadow_ids) else 0.0
    same = sum(1 for a, b in zip(primary_ids[:n], shadow_ids[:n], strict=True) if a == b)
    return same / n


def first_divergence(primary_ids: Sequence[int], shadow_ids: Sequence[int]) -> int:
    """Index of the first position where the sequences differ.

    If one is a prefix of the other this is the shorter length; for identical sequences it is
    their (common) length. Both empty -> 0.
    """
    n = min(len(primary_ids), len(shadow_ids))
    for i in range(n):
        if primary_ids[i] != shadow_ids[i]:
            return i
    return n


# --------------------------------------------------------------------------- teacher-forced scores


def _check_aligned(name: str, n_targets: int, scores: Scores) -> None:
    if len(scores) != n_targets:
        raise ValueError(f"{name} has {len(scores)} positions, expected {n_targets} (one per target token)")


def _top1(logprobs: Mapping[int, float]) -> int | None:
    """Argmax token id; ties go to the lowest token id. None for an empty mapping."""
    best: int | None = None
    best_lp = -math.inf
    for tok, lp in logprobs.items():
        if best is None or lp > best_lp or (lp == best_lp and tok < best):
            best, best_lp = tok, lp
    return best


def teacher_forced_agreement(target_ids: Sequence[int], shadow_scores: Scores) -> float:
    """Fraction of positions where the shadow's top-1 token equals the primary's token.

    ``shadow_scores[t]`` is the shadow's logprob mapping at completion position ``t`` (teacher
    forced on the primary's completion). The top-1 is the argmax of the mapping with ties broken
    by the lowest token id; an empty mapping counts as a disagreement. Empty completion -> 1.0.
    This measures flips of the greedy choice: if the primary sampled a token that is not its own
    argmax, even an identical shadow scores below 1.0 at that position.
    Raises ValueError when the lengths differ.
    """
    _check_aligned("shadow_scores", len(target_ids), shadow_scores)
    if not target_ids:
        return 1.0
    hits = sum(1 for tok, lps in zip(target_ids, shadow_scores, strict=True) if _top1(lps) == tok)
    return hits / len(target_ids)


def _prob(logprob: float) -> float:
    if math.isnan(logprob):
        raise ValueError("NaN logprob")
    return min(1.0, math.exp(logprob))


def _kl_term(p: float, q: float) -> float:
    return 0.0 if p <= 0.0 else p * math.log(p / max(q, _EPS))


def _min_kl_fill(
    ps: Sequence[float], cap: float, p_rest: float, floor: float, total: float
) -> tuple[list[float], float]:
    """Shadow masses for the unlisted tokens and the rest bucket that minimise the KL.

    Minimises ``sum_i p_i log(p_i / q_i) + p_rest log(p_rest / q_rest)`` subject to
    ``0 <= q_i <= cap``, ``q_rest >= floor`` and ``sum_i q_i + q_rest = total``. By the KKT
    conditions the optimum is ``q_i = min(cap, s p_i)``, ``q_rest = max(floor, s p_rest)`` for a
    scale ``s >= 0`` found on the piecewise-linear, non-decreasing ``h(s) = sum of those``.
    """

    def h(s: float) -> float:
        return math.fsum(min(cap, p * s) for p in ps) + max(floor, p_rest * s)

    breaks = {cap / p for p in ps if p > 0.0}
    if p_rest > 0.0:
        breaks.add(floor / p_rest)
    lo, h_lo = 0.0, h(0.0)
    for b in sorted(breaks):
        h_b = h(b)
        if h_b >= total:
            s = lo if h_b == h_lo else lo + (total - h_lo) * (b - lo) / (h_b - h_lo)
            break
        lo, h_lo = b, h_b
    else:  # every unlisted token is capped; only the rest bucket can still grow
        s = lo + (total - h_lo) / p_rest if p_rest > 0.0 else lo
    qs = [min(cap, p * s) for p in ps]
    return qs, max(total - math.fsum(qs), 0.0)


def _position_kl(p_lps: Mapping[int, float], q_lps: Mapping[int, float], target: int | None) -> float:
    p = {tok: _prob(lp) for tok, lp in p_lps.items()}
    q = {tok: _prob(lp) for tok, lp in q_lps.items()}
    p_rest = max(0.0, 1.0 - math.fsum(p.values()))
    unlisted = max(0.0, 1.0 - math.fsum(q.values()))  # shadow mass on tokens it did not list
    kl = 0.0
    missing: list[float] = []
    for tok, pt in p.items():
        if tok in q:
            kl += _kl_term(pt, q[tok])
        else:
            missing.append(pt)
    floor = math.fsum(qt for tok, qt in q.items() if tok not in p)  # listed shadow mass outside S_t
    if missing:
        budget = max(unlisted, _MASS_SLACK)
        # Every listed non-target token is in the shadow's top-k, so it bounds any unlisted one.
        cap = budget
        if target is not None:
            cap = min([budget, *(qt for tok, qt in q.items() if tok != target)])
        q_missing, q_rest = _min_kl_fill(missing, cap, p_rest, floor, floor + budget)
        kl += math.fsum(_kl_term(pt, qt) for pt, qt in zip(missing, q_missing, strict=True))
    else:
        q_rest = floor + unlisted
    kl += _kl_term(p_rest, q_rest)
    return max(kl, 0.0)


def kl_topk(primary_scores: Scores, shadow_scores: Scores, target_ids: Sequence[int] | None = None) -> float:
    """Mean per-token lower-bound estimate of KL(primary || shadow) from top-k logprobs.

    At position t let S_t be the tokens in the primary's mapping, p_i their probabilities and
    p_rest = 1 - sum(p_i) (clipped at 0); both models are coarsened to S_t + {rest}. Shadow
    probabilities of tokens it listed are used as given. For a token of S_t the shadow did not
    list, q_i is unknown: since the shadow's mapping is its top-k plus the target token, q_i is at
    most the smallest listed non-target shadow probability, and the unlisted tokens together hold
    U = 1 - sum(listed q). q_rest is the listed shadow mass outside S_t plus whatever part of U the
    unlisted S_t tokens do not take. The position's value is the *smallest* coarsened
    KL = sum_{i in S_t} p_i log(p_i/q_i) + p_rest log(p_rest/q_rest) over every completion of the
    unknown q_i consistent with those constraints (solved exactly by water-filling).

    Bias: by the data-processing inequality the coarsened KL never exceeds the full-vocabulary
    KL, and minimising over consistent completions lowers it further, so the estimate is a lower
    bound on the true mean KL (biased low; tight when the top-k lists cover nearly all mass).
    Plugging in q_i = the bound instead would under-count those tokens but over-count the rest
    bucket, with no definite direction. Numerics: q is floored at 1e-12 inside logs and U at 1e-6
    (float32 logprobs can sum past 1); both only lower the value. Result: exactly 0 for identical
    mappings, >= 0 (rounding negatives clipped), always finite, growing as the shadow moves away.
    Without ``target_ids`` only the U bound is used (still a lower bound, looser). If a mapping is
    not really top-k + target the bound may fail, but the value stays finite and >= 0.

    Empty completion -> 0.0. Raises ValueError on length mismatch or NaN logprobs.
    """
    _check_aligned("shadow_scores", len(primary_scores), shadow_scores)
    if target_ids is not None:
        _check_aligned("primary_scores", len(target_ids), primary_scores)
    if not primary_scores:
        return 0.0
    targets: Sequence[int | None] = target_ids if target_ids is not None else [None] * len(primary_scores)
    total = math.fsum(
        _position_kl(p, q, t) for p, q, t in zip(primary_scores, shadow_scores, targets, strict=True)
    )
    return total / len(primary_scores)


# --------------------------------------------------------------------------- one comparison


@dataclass(frozen=True)
class Answer:
    """One model's completion."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None = None


def compare(
    primary: Answer,
    shadow: Answer,
    primary_scores: Scores | None = None,
    shadow_scores: Scores | None = None,
) -> DriftResult:
    """Compare a shadow's answer with the primary's.

    ``*_scores`` are the models' logprob mappings over the *primary's* completion, one per token of
    ``primary.token_ids``. ``teacher_forced_agreement`` needs ``shadow_scores``; ``kl`` needs both
    (otherwise they are None). Raises ValueError if scores are not aligned with the primary tokens.
    """
    tf: float | None = None
    kl: float | None = None
    if shadow_scores is not None:
        tf = teacher_forced_agreement(primary.token_ids, shadow_scores)
        if primary_scores is not None:
            kl = kl_topk(primary_scores, shadow_scores, primary.token_ids)
    return DriftResult(
        exact_match=exact_match(primary.text, shadow.text),
        token_agreement=token_agreement(primary.token_ids, shadow.token_ids),
        first_divergence=first_divergence(primary.token_ids, shadow.token_ids),
        teacher_forced_agreement=tf,
        kl=kl,
    )
