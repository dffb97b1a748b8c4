"""Tests for serving/drift.py: hand-built token ids and logprob mappings, no engines."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from serving.drift import (
    Answer,
    compare,
    exact_match,
    first_divergence,
    kl_topk,
    normalize_text,
    teacher_forced_agreement,
    token_agreement,
)
from serving.drift_book import OUTCOMES, DriftBook, DriftResult, DriftStats

L = math.log


def lps(probs: dict[int, float]) -> dict[int, float]:
    """{token: prob} -> {token: logprob}."""
    return {tok: L(p) for tok, p in probs.items()}


def true_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * L(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def random_dist(rng: random.Random, n: int) -> list[float]:
    temp = rng.choice([0.3, 1.0, 3.0])
    w = [rng.expovariate(1.0) ** (1.0 / temp) for _ in range(n)]
    s = sum(w)
    return [x / s for x in w]


def topk_mapping(dist: list[float], k: int, target: int) -> dict[int, float]:
    """What vLLM prompt_logprobs=k gives: the top-k tokens plus the actual token."""
    top = sorted(range(len(dist)), key=lambda t: -dist[t])[:k]
    return {t: L(dist[t]) for t in {*top, target}}


# --------------------------------------------------------------------------- text & token ids


def test_normalize_text_strips_collapses_whitespace_nfc_and_keeps_case() -> None:
    assert normalize_text("  Hello\t\n  World \u00a0 ") == "Hello World"
    assert normalize_text("cafe\u0301") == "caf\u00e9"  # NFD -> NFC
    assert normalize_text("ABC") != normalize_text("abc")
    assert normalize_text("") == ""


def test_exact_match() -> None:
    assert exact_match(" The answer  is 4.\n", "The answer is 4.")
    assert exact_match("caf\u00e9", "cafe\u0301")
    assert not exact_match("The answer is 4.", "the answer is 4.")
    assert not exact_match("The answer is 4.", "The answer is 5.")


def test_identical_answers() -> None:
    ids = (11, 12, 13, 14)
    scores = [
        lps({11: 0.7, 3: 0.2}),
        lps({12: 0.5, 13: 0.25, 99: 0.05}),
        lps({13: 1.0}),
        lps({14: 0.4, 7: 0.35, 8: 0.1}),
    ]
    a = Answer("four tokens", ids, "stop")
    r = compare(a, Answer("four  tokens", ids, "stop"), scores, [dict(m) for m in scores])
    assert r == DriftResult(True, 1.0, 4, 1.0, 0.0)
    assert r.kl == 0.0


def test_partial_token_agreement_and_divergence() -> None:
    assert token_agreement([1, 2, 3, 4], [1, 9, 3, 5]) == 0.5
    assert first_divergence([1, 2, 3, 4], [1, 9, 3, 5]) == 1


def test_prefix_of_different_length() -> None:
    short, long = [5, 6, 7], [5, 6, 7, 8, 9]
    for a, b in ((short, long), (long, short)):
        assert token_agreement(a, b) == 1.0
        assert first_divergence(a, b) == 3
    r = compare(Answer("a b c", tuple(short), "length"), Answer("a b c d e", tuple(long), "stop"))
    assert (r.exact_match, r.token_agreement, r.first_divergence) == (False, 1.0, 3)
    assert r.teacher_forced_agreement is None and r.kl is None


def test_empty_completions() -> None:
    assert token_agreement([], []) == 1.0
    assert first_divergence([], []) == 0
    assert token_agreement([], [1, 2]) == 0.0
    assert token_agreement([1, 2], []) == 0.0
    assert first_divergence([1, 2], []) == 0
    assert first_divergence([], [1]) == 0
    both = compare(Answer("", (), "stop"), Answer("", (), "stop"), [], [])
    assert both == DriftResult(True, 1.0, 0, 1.0, 0.0)
    one = compare(Answer("", (), "stop"), Answer("x", (4,), "stop"), [], [])
    assert (one.exact_match, one.token_agreement, one.first_divergence) == (False, 0.0, 0)


def test_divergence_at_position_zero() -> None:
    assert first_divergence([1, 2, 3], [9, 2, 3]) == 0
    assert token_agreement([1, 2, 3], [9, 2, 3]) == pytest.approx(2 / 3)
    assert token_agreement([1], [2]) == 0.0


# --------------------------------------------------------------------------- teacher-forced agreement


def test_teacher_forced_agreement_fraction() -> None:
    targets = [1, 2, 3, 4]
    shadow = [lps({1: 0.9, 5: 0.1}), lps({7: 0.6, 2: 0.3}), lps({3: 0.5, 8: 0.2}), {}]
    assert teacher_forced_agreement(targets, shadow) == 0.5  # positions 0 and 2; empty map misses
    assert teacher_forced_agreement([], []) == 1.0


def test_teacher_forced_agreement_tie_breaks_by_lowest_token_id() -> None:
    tie = {9: L(0.4), 4: L(0.4), 6: L(0.2)}
    assert teacher_forced_agreement([4], [tie]) == 1.0
    assert teacher_forced_agreement([9], [tie]) == 0.0
    assert teacher_forced_agreement([9], [dict(reversed(tie.items()))]) == 0.0  # not insertion order


def test_teacher_forced_agreement_length_mismatch() -> None:
    with pytest.raises(ValueError):
        teacher_forced_agreement([1, 2], [lps({1: 1.0})])


# --------------------------------------------------------------------------- KL


def test_kl_identical_mappings_is_zero() -> None:
    rng = random.Random(7)
    for _ in range(100):
        dist = random_dist(rng, 12)
        target = rng.randrange(12)
        m = topk_mapping(dist, rng.randint(1, 12), target)
        assert kl_topk([m], [dict(m)], [target]) == 0.0
        assert kl_topk([m], [dict(m)]) == 0.0


def test_kl_hand_computed_two_positions() -> None:
    # Position 0 (target 1): all primary tokens listed by the shadow; rest buckets .1 vs .2.
    # Position 1 (target 6): token 5 unlisted by the shadow. Listed shadow mass .9, so U = .1;
    # cap = min(smallest non-target listed = .6, U) = .1. Listed shadow mass outside S = .6
    # (token 7) floors q_rest. Minimum: q_5 = .1 (capped), q_rest = .6.
    primary = [lps({1: 0.6, 2: 0.3}), lps({5: 0.5, 6: 0.4})]
    shadow = [lps({1: 0.5, 2: 0.3}), lps({7: 0.6, 6: 0.3})]
    kl0 = 0.6 * L(0.6 / 0.5) + 0.3 * L(0.3 / 0.3) + 0.1 * L(0.1 / 0.2)
    kl1 = 0.5 * L(0.5 / 0.1) + 0.4 * L(0.4 / 0.3) + 0.1 * L(0.1 / 0.6)
    assert kl_topk(primary, shadow, [1, 6]) == pytest.approx((kl0 + kl1) / 2, abs=1e-9)


def test_kl_hand_computed_interior_fill() -> None:
    # Tokens 4, 5 unlisted: U = .2, cap = min(.5, .2) = .2, q_rest >= .5 (token 7).
    # Minimum splits U proportionally to p: q_4 = q_5 = .1 (below the cap), q_rest = .5.
    kl = kl_topk([lps({4: 0.2, 5: 0.2, 6: 0.3})], [lps({6: 0.3, 7: 0.5})], [6])
    assert kl == pytest.approx(2 * 0.2 * L(0.2 / 0.1) + 0.3 * L(0.3 / 0.5), abs=1e-9)


def test_kl_hand_computed_no_primary_rest_mass() -> None:
    # p_rest = 0, so the rest bucket costs nothing and q_2 takes its cap min(.1, U = .4).
    kl = kl_topk([lps({1: 0.5, 2: 0.5})], [lps({1: 0.5, 3: 0.1})], [1])
    assert kl == pytest.approx(0.5 * L(0.5 / 0.1), abs=1e-9)


def test_kl_cap_ignores_the_target_token() -> None:
    # The target (6) is listed only because it is the actual token, so its tiny q does not bound
    # token 5: cap = min(.6, U = .38) = .38 and q_5 = .38, q_rest = .6.
    kl = kl_topk([lps({5: 0.5, 6: 0.3})], [lps({6: 0.02, 7: 0.6})], [6])
    expected = 0.5 * L(0.5 / 0.38) + 0.3 * L(0.3 / 0.02) + 0.2 * L(0.2 / 0.6)
    assert kl == pytest.approx(expected, abs=1e-9)


def test_kl_without_targets_is_a_looser_bound() -> None:
    primary, shadow = [lps({5: 0.5, 6: 0.3})], [lps({6: 0.3, 7: 0.1, 8: 0.1})]
    with_target, without = kl_topk(primary, shadow, [6]), kl_topk(primary, shadow)
    assert 0.0 <= without < with_target


def test_kl_nonnegative_and_finite_on_random_mappings() -> None:
    rng = random.Random(1234)
    for _ in range(500):
        n = rng.randint(1, 4)
        targets = [rng.randrange(10) for _ in range(n)]
        primary: list[dict[int, float]] = []
        shadow: list[dict[int, float]] = []
        for t in targets:
            for side in (primary, shadow):
                toks = set(rng.sample(range(10), rng.randint(0, 6))) | {t}
                mass = rng.uniform(0.0, 1.0)
                w = {tok: rng.expovariate(1.0) for tok in toks}
                s = sum(w.values())
                side.append({tok: L(max(mass * x / s, 1e-300)) for tok, x in w.items()})
        for tgt in (targets, None):
            kl = kl_topk(primary, shadow, tgt)
            assert math.isfinite(kl)
            assert kl >= 0.0


def test_kl_is_a_lower_bound_on_the_full_vocabulary_kl() -> None:
    rng = random.Random(99)
    vocab = 12
    checked_full = 0
    for _ in range(300):
        p, q = random_dist(rng, vocab), random_dist(rng, vocab)
        target = rng.choices(range(vocab), weights=p)[0]
        k_p, k_q = rng.randint(1, vocab), rng.randint(1, vocab)
        est = kl_topk([topk_mapping(p, k_p, target)], [topk_mapping(q, k_q, target)], [target])
        assert 0.0 <= est <= true_kl(p, q) + 1e-9
        full = kl_topk([topk_mapping(p, vocab, target)], [topk_mapping(q, vocab, target)], [target])
        if min(q) > 1e-9:  # (below 1e-12 the estimator floors q, which lowers it further)
            assert full == pytest.approx(true_kl(p, q), abs=1e-9)
            checked_full += 1
    assert checked_full > 250


def test_kl_grows_as_shadow_moves_away() -> None:
    p = {1: 0.5, 2: 0.3, 3: 0.1}  # rest .1
    far = {1: 0.05, 2: 0.05, 3: 0.6}  # rest .3
    values = []
    for lam in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        q = {tok: (1 - lam) * p[tok] + lam * far[tok] for tok in p}
        values.append(kl_topk([lps(p)], [lps(q)], [1]))
    assert values[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(values))

    # Shadow mass drains from the primary's top token into a token the primary does not list.
    drained = []
    for m in (0.45, 0.3, 0.1, 0.01):
        drained.append(kl_topk([lps({1: 0.5, 2: 0.5})], [lps({1: m, 2: 0.5, 9: 0.5 - m})], [2]))
    assert all(a < b for a, b in itertools.pairwise(drained))


def test_kl_finite_with_disjoint_supports() -> None:
    primary, shadow = [{1: 0.0}], [{2: 0.0}]  # each certain of a different token
    for tgt in ([1], None):
        kl = kl_topk(primary, shadow, tgt)
        assert math.isfinite(kl) and kl > 5.0
    # Disjoint apart from the target, with -inf logprobs.
    kl = kl_topk([lps({1: 0.9, 2: 0.1})], [{3: L(0.95), 2: -math.inf}], [2])
    assert math.isfinite(kl) and kl > 1.0


def test_kl_edge_cases_and_validation() -> None:
    assert kl_topk([], []) == 0.0
    assert kl_topk([], [], []) == 0.0
    with pytest.raises(ValueError):
        kl_topk([{1: 0.0}], [])
    with pytest.raises(ValueError):
        kl_topk([{1: 0.0}], [{1: 0.0}], [1, 2])
    with pytest.raises(ValueError):
        kl_topk([{1: math.nan}], [{1: 0.0}], [1])


def test_compare_scores_optional_and_aligned() -> None:
    a = Answer("x y", (1, 2), "stop")
    b = Answer("x z", (1, 3), "stop")
    p_scores = [lps({1: 0.9}), lps({2: 0.6, 3: 0.3})]
    s_scores = [lps({1: 0.8}), lps({3: 0.6, 2: 0.3})]
    only_shadow = compare(a, b, None, s_scores)
    assert only_shadow.teacher_forced_agreement == 0.5 and only_shadow.kl is None
    full = compare(a, b, p_scores, s_scores)
    assert full.teacher_forced_agreement == 0.5
    assert full.kl is not None and full.kl > 0.0
    assert compare(a, b, p_scores, None).teacher_forced_agreement is None
    with pytest.raises(ValueError):
        compare(a, b, p_scores[:1], s_scores[:1])


# --------------------------------------------------------------------------- aggregation


def test_drift_stats_means_and_outcomes() -> None:
    empty = DriftStats().summary()
    assert empty.compared == 0 and empty.total == 0
    assert empty.mean_token_agreement is None and empty.mean_kl is None and empty.exact_match_rate is None

    st = DriftStats()
    st.add(DriftResult(True, 1.0, 10, 1.0, 0.0))
    st.add(DriftResult(False, 0.5, 2, 0.5, 0.3))
    st.add(DriftResult(False, 0.0, 0, None, None))
    st.count_outcome("dropped")
    st.count_outcome("timeout")
    st.count_outcome("timeout")
    s = st.summary()
    assert (s.compared, s.exact_matches, s.tf_scored, s.kl_scored) == (3, 1, 2, 2)
    assert s.exact_match_rate == pytest.approx(1 / 3)
    assert s.mean_token_agreement == pytest.approx(0.5)
    assert s.mean_first_divergence == pytest.approx(4.0)
    assert s.mean_teacher_forced_agreement == pytest.approx(0.75)
    assert s.mean_kl == pytest.approx(0.15)
    assert (s.dropped, s.error, s.timeout, s.total) == (1, 0, 2, 6)


def test_drift_stats_rejects_bad_outcomes() -> None:
    st = DriftStats()
    for bad in ("Dropped", "ok", "", "compared"):  # "compared" must go through add()
        with pytest.raises(ValueError):
            st.count_outcome(bad)
    assert st.summary().total == 0
    for good in OUTCOMES - {"compared"}:
        st.count_outcome(good)
    assert st.summary().total == 3


def test_drift_book_per_variant_and_reset() -> None:
    book = DriftBook()
    book.add("int4", DriftResult(True, 1.0, 5, None, None))
    book.add("int8", DriftResult(False, 0.25, 1, 0.5, 0.2))
    book.count_outcome("int8", "error")
    with pytest.raises(ValueError):
        book.count_outcome("fp8", "exploded")
    assert book.variants() == ("int4", "int8")  # the bad outcome did not create "fp8"
    sums = book.summaries()
    assert list(sums) == ["int4", "int8"]
    assert sums["int4"].exact_matches == 1 and sums["int4"].mean_kl is None
    assert sums["int8"].mean_kl == pytest.approx(0.2) and sums["int8"].error == 1
    assert book.summary("unknown").compared == 0

    book.reset("int4")
    assert book.variants() == ("int8",)
    book.reset()
    assert book.variants() == ()
    assert book.summary("int8").total == 0
