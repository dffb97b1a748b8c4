"""Tests for serving/gate/sequential.py: known cases and vectorised simulations of repeated looks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from serving.gate import sequential as sq
from serving.gate.sequential import Interval, Verdict

ALPHA = 0.05
STREAMS = 1000
LOOKS = 2000


def log_wealth_paths(counts: np.ndarray, values: list[float], mu: float, lo: float, hi: float, upward: bool):
    """The library's mixture wealth for every stream and look at once.

    counts[s, t, j] = weight of values[j] after t + 1 observations of stream s. The bets and
    their log factors come from `sq.bet_log_factors`; each bet's log wealth is linear in the
    counts, so a matrix product plus a log-sum-exp over the weighted bets gives every path.
    """
    log_w, rows = sq.bet_log_factors(values, mu, lo, hi, upward)
    factors, log_weights = np.asarray(rows).T, np.asarray(log_w)
    out = np.empty(counts.shape[:2])
    for start in range(0, counts.shape[1], 100):
        a = counts[:, start : start + 100] @ factors + log_weights
        top = a.max(axis=-1)
        out[:, start : start + 100] = top + np.log(np.exp(a - top[..., None]).sum(axis=-1))
    return out


def ever_rejects(counts, values, mu, lo, hi, upward, alpha=ALPHA) -> float:
    """Share of streams whose wealth ever reaches 1/alpha: the false-decision rate over all looks.

    The mixture wealth never exceeds its best bet, so only looks where some bet alone reaches
    1/alpha need the full mixture (rare under the null, which keeps this fast).
    """
    factors = np.asarray(sq.bet_log_factors(values, mu, lo, hi, upward)[1]).T
    target = math.log(1 / alpha)
    ever = np.zeros(counts.shape[0], dtype=bool)
    for start in range(0, counts.shape[1], 250):
        chunk = counts[:, start : start + 250]
        streams, looks = np.nonzero((chunk @ factors).max(axis=-1) >= target)
        if streams.size:
            full = log_wealth_paths(chunk[streams, looks][None], values, mu, lo, hi, upward)[0] >= target
            ever[streams[full]] = True
    return float(ever.mean())


def bernoulli_counts(p: float, seed: int, streams: int = STREAMS, looks: int = LOOKS) -> np.ndarray:
    ones = np.cumsum(np.random.default_rng(seed).random((streams, looks)) < p, axis=1).astype(float)
    n = np.arange(1, looks + 1, dtype=float)
    return np.stack([n - ones, ones], axis=-1)


# ----------------------------------------------------------------------------- known cases


def test_interval_contains():
    assert Interval(0.2, 0.4).contains(0.2) and Interval(0.2, 0.4).contains(0.4)
    assert not Interval(0.2, 0.4).contains(0.41)


def test_vectorised_wealth_matches_scalar():
    counts = np.array([[[3.0, 5.0], [10.0, 2.5]]])
    paths = log_wealth_paths(counts, [0.0, 1.0], 0.3, 0.0, 1.0, True)
    assert paths[0, 0] == pytest.approx(sq.log_wealth([(0.0, 3.0), (1.0, 5.0)], 0.3, 0.0, 1.0, True))
    assert paths[0, 1] == pytest.approx(sq.log_wealth([(0.0, 10.0), (1.0, 2.5)], 0.3, 0.0, 1.0, True))


def test_bets_are_a_probability_mixture_of_valid_bets():
    assert math.fsum(w for _, w in sq.BETS) == pytest.approx(1.0)
    assert all(0 < c < 1 for c, _ in sq.BETS)
    assert min(c for c, _ in sq.BETS) < 1e-5  # small bets: the CS keeps shrinking at large n


def test_all_zero_upper_bound_matches_the_continuous_uniform_mixture():
    # Downward bets c ~ U(0, 1) are the likelihood ratios of q = u (1 - c) ~ U(0, u) against u, so
    # with no successes in n the wealth is (1 - (1 - u)^(n + 1)) / ((n + 1) u (1 - u)^n).
    n = 16

    def wealth(u: float) -> float:
        return (1 - (1 - u) ** (n + 1)) / ((n + 1) * u * (1 - u) ** n)

    lo, hi = 1e-9, 0.999
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if wealth(mid) >= 1 / ALPHA else (mid, hi)
    cs = sq.bernoulli_cs(n, 0, ALPHA)
    assert cs.lo == 0.0
    assert cs.hi == pytest.approx(hi, rel=0.01)


@pytest.mark.parametrize(("n", "s"), [(10, 3), (16, 12), (120, 60), (1000, 990), (50, 0), (50, 50)])
def test_bernoulli_cs_contains_estimate_and_matches_its_test(n, s):
    cs = sq.bernoulli_cs(n, s, ALPHA)
    assert 0 <= cs.lo <= s / n <= cs.hi <= 1
    target = math.log(1 / ALPHA)
    for thr in (0.05, 0.2, 0.5, 0.7, 0.9, 0.97):
        points = [(0.0, n - s), (1.0, s)]
        assert (cs.lo >= thr) == (sq.log_wealth(points, thr, 0.0, 1.0, True) >= target)
        assert (cs.hi <= thr) == (sq.log_wealth(points, thr, 0.0, 1.0, False) >= target)


def test_cs_levels_are_one_sided_and_separate():
    both = sq.bernoulli_cs(100, 70, 0.05)
    strict_hi = sq.bernoulli_cs(100, 70, 0.05, 0.001)
    assert strict_hi.lo == both.lo and strict_hi.hi > both.hi
    assert sq.bernoulli_cs(100, 70, 0.01).lo < both.lo


def test_cs_radius_shrinks_like_sqrt_log_n_over_n():
    ratios, nm_ratios = [], []
    for n in (100, 1_000, 10_000, 100_000, 1_000_000):
        scale = math.sqrt(math.log(n) / n)
        cs = sq.bernoulli_cs(n, n // 2, ALPHA)
        ratios.append((cs.hi - cs.lo) / 2 / scale)
        nm_ratios.append(sq.normal_mixture_radius(n, ALPHA) / scale)
        assert cs.contains(0.5)
    assert max(ratios) / min(ratios) < 1.5
    assert max(nm_ratios) / min(nm_ratios) < 1.5
    assert all(b < a for a, b in itertools.pairwise(ratios))


def test_bounded_mean_cs_scales_and_checks_its_sum():
    unit = sq.bounded_mean_cs(40, 12.0, ALPHA)
    scaled = sq.bounded_mean_cs(40, 12.0 * 5, ALPHA, lo=0.0, hi=5.0)
    assert scaled.lo == pytest.approx(5 * unit.lo, abs=1e-9) and scaled.hi == pytest.approx(
        5 * unit.hi, abs=1e-9
    )
    assert sq.bounded_mean_cs(0, 0.0, ALPHA) == Interval(0.0, 1.0)
    with pytest.raises(ValueError, match="outside"):
        sq.bounded_mean_cs(10, 11.0, ALPHA)
    with pytest.raises(ValueError):
        sq.bernoulli_cs(10, 11, ALPHA)
    with pytest.raises(ValueError):
        sq.bernoulli_cs(10, 3, 1.5)


def test_paired_difference_cs_adapts_to_rare_flips():
    few_flips = sq.paired_difference_cs(3, 2, 115, ALPHA)
    many_flips = sq.paired_difference_cs(40, 39, 41, ALPHA)
    assert few_flips.contains(-1 / 120) and many_flips.contains(-1 / 120)
    assert few_flips.hi - few_flips.lo < 0.5 * (many_flips.hi - many_flips.lo)
    assert sq.paired_difference_cs(60, 1, 59, ALPHA).hi < -0.3


def test_normal_mixture_radius_is_the_mixture_boundary_and_tuned_at_n_opt():
    n, alpha = 100, ALPHA
    rho = sq.normal_mixture_rho(100, alpha)
    v = n / 4
    s = sq.normal_mixture_radius(n, alpha) * n
    mixture = math.sqrt(rho / (v + rho)) * math.exp(s * s / (2 * (v + rho)))
    assert mixture == pytest.approx(1 / alpha)
    best = sq.normal_mixture_radius(100, alpha, n_opt=100)
    assert best < sq.normal_mixture_radius(100, alpha, n_opt=70)
    assert best < sq.normal_mixture_radius(100, alpha, n_opt=140)
    assert sq.normal_mixture_cs(100, 50, alpha) == Interval(0.5 - best, 0.5 + best)
    assert sq.normal_mixture_cs(10, 10, alpha).hi == 1.0


def test_betting_cs_is_tighter_than_the_normal_mixture_near_the_edges():
    assert sq.bernoulli_cs(200, 190, ALPHA).lo > sq.normal_mixture_cs(200, 190, ALPHA).lo


def test_sign_test_pvalues_by_hand():
    assert sq.sign_test_pvalue(8, 1) == 2 * (math.comb(9, 8) + 1) / 2**9 == 0.0390625
    assert sq.sign_test_pvalue(8, 1, "less") == 10 / 512
    assert sq.sign_test_pvalue(8, 1, "greater") == 511 / 512
    assert sq.sign_test_pvalue(0, 0) == 1.0
    assert sq.sign_test_pvalue(5, 5) == 1.0
    assert sq.sign_test_pvalue(36, 24) == pytest.approx(0.1550, abs=5e-4)  # docs/results.md, int8
    with pytest.raises(ValueError):
        sq.sign_test_pvalue(1, 2, "sideways")


def _brute_force_score(lost: int, gained: int, n: int, t: float) -> float:
    """Tango's score statistic with the restricted MLE found by a grid search (no closed form)."""
    rest = n - lost - gained

    def loglik(p: float) -> float:
        q, r = p + t, 1 - 2 * p - t
        if min(p, q, r) <= 0:
            return -math.inf
        return lost * math.log(p) + gained * math.log(q) + rest * math.log(r)

    p = max((i / 200_000 for i in range(1, 200_000)), key=loglik)
    return (gained - lost - n * t) / math.sqrt(n * (2 * p + t - t * t))


@pytest.mark.parametrize(
    ("lost", "gained", "n", "t"), [(8, 1, 120, -0.05), (3, 2, 120, 0.02), (20, 30, 200, -0.1)]
)
def test_tango_score_matches_brute_force(lost, gained, n, t):
    assert sq._tango_z(lost, gained, n, t) == pytest.approx(_brute_force_score(lost, gained, n, t), abs=2e-3)


def test_score_interval_known_properties():
    iv = sq.paired_difference_score_interval(3, 2, 120, ALPHA)
    assert iv.lo < -1 / 120 < iv.hi
    assert iv.lo > sq.paired_difference_cs(3, 2, 115, ALPHA).lo  # one look is cheaper than many
    z = sq._tango_z(3, 2, 120, iv.lo)
    assert z == pytest.approx(1.6449, abs=1e-3)
    big = sq.paired_difference_score_interval(400, 400, 2000, ALPHA)
    wald = 1.6449 * math.sqrt(800 / 2000 / 2000)
    assert big.lo == pytest.approx(-wald, rel=0.02) and big.hi == pytest.approx(wald, rel=0.02)
    assert sq.paired_difference_score_interval(0, 0, 0, ALPHA) == Interval(-1.0, 1.0)


def test_score_interval_false_pass_rate_at_one_look():
    rng = np.random.default_rng(7)
    draws = rng.multinomial(120, [0.10, 0.05, 0.85], size=4000)  # delta = -0.05 = -margin
    cache: dict[tuple[int, int], bool] = {}
    passes = 0
    for lost, gained, _ in draws:
        key = (int(lost), int(gained))
        if key not in cache:
            cache[key] = sq.paired_difference_score_interval(*key, 120, ALPHA).lo >= -0.05
        passes += cache[key]
    assert passes / 4000 <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 4000)


def test_quantile_cs_on_buckets_and_samples():
    edges = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
    counts = [0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0]  # all in (0.25, 0.5]
    assert sq.quantile_cs(edges, counts, 0.5, ALPHA) == Interval(0.25, 0.5)
    assert sq.quantile_cs(edges, counts, 0.99, ALPHA) == Interval(0.25, math.inf)  # 100 samples: too few
    assert sq.quantile_cs(edges, [10 * c for c in counts], 0.99, ALPHA) == Interval(0.25, 0.5)
    assert sq.quantile_cs(edges, [0] * 13 + [30], 0.5, ALPHA) == Interval(80, math.inf)
    assert sq.quantile_cs(edges, [0] * 13 + [3], 0.5, ALPHA) == Interval(0.0, math.inf)  # too few
    assert sq.quantile_cs(edges, [0] * 14, 0.5, ALPHA) == Interval(0.0, math.inf)
    assert sq.quantile_estimate(edges, counts, 0.5) == pytest.approx(0.375)
    samples = [float(i) for i in range(1, 1001)]
    iv = sq.quantile_cs(samples, [1] * 1000 + [0], 0.5, ALPHA)
    assert 420 < iv.lo < 500 < iv.hi < 580
    assert sq.quantile_cs(samples[:20], [1] * 20 + [0], 0.99, ALPHA).hi == math.inf
    with pytest.raises(ValueError):
        sq.quantile_cs(edges, counts[:-1], 0.5, ALPHA)
    with pytest.raises(ValueError):
        sq.quantile_cs((1.0, 0.5), [1, 1, 1], 0.5, ALPHA)


def test_quantile_cs_covers_the_true_median_at_every_look():
    rng = np.random.default_rng(3)
    edges = tuple(float(e) for e in np.quantile(rng.exponential(size=10_000), np.linspace(0.02, 0.98, 25)))
    looks, streams, missed = (10, 30, 100, 300, 1000), 150, 0
    for _ in range(streams):
        x = rng.exponential(size=looks[-1])
        for n in looks:
            counts = np.bincount(np.searchsorted(edges, x[:n], side="left"), minlength=len(edges) + 1)
            if not sq.quantile_cs(edges, counts.tolist(), 0.5, ALPHA).contains(math.log(2)):
                missed += 1
                break
    assert missed / streams <= 2 * ALPHA  # each end at level alpha


def test_ratio_and_difference_intervals():
    assert sq.ratio_interval(Interval(1, 2), Interval(0.5, 4)) == Interval(0.25, 4)
    assert sq.ratio_interval(Interval(1, 2), Interval(0.0, math.inf)) == Interval(0.0, math.inf)
    assert sq.difference_interval(Interval(0.5, 0.7), Interval(0.1, 0.2)) == Interval(0.3, 0.6)


@pytest.mark.parametrize(
    ("interval", "direction", "n", "expected"),
    [
        (Interval(0.81, 0.9), "min", 50, Verdict.PASS),
        (Interval(0.8, 0.9), "min", 50, Verdict.PASS),
        (Interval(0.5, 0.79), "min", 50, Verdict.FAIL),
        (Interval(0.7, 0.9), "min", 50, Verdict.UNDECIDED),
        (Interval(0.81, 0.9), "min", 5, Verdict.UNDECIDED),
        (Interval(0.1, 0.8), "max", 50, Verdict.PASS),
        (Interval(0.81, 0.9), "max", 50, Verdict.FAIL),
        (Interval(0.7, 0.9), "max", 50, Verdict.UNDECIDED),
    ],
)
def test_decide(interval, direction, n, expected):
    assert sq.decide(interval, 0.8, direction, n, min_n=10) is expected


def test_decide_rejects_unknown_direction():
    with pytest.raises(ValueError):
        sq.decide(Interval(0, 1), 0.5, "above", 10, 1)


# ----------------------------------------------------------------------------- simulations


def test_bernoulli_false_pass_and_false_fail_over_2000_looks():
    thr = 0.7  # true rate exactly at the threshold: the boundary of both nulls
    counts = bernoulli_counts(thr, seed=1)
    false_pass = ever_rejects(counts, [0.0, 1.0], thr, 0.0, 1.0, upward=True)
    false_fail = ever_rejects(counts, [0.0, 1.0], thr, 0.0, 1.0, upward=False)
    assert false_pass <= ALPHA and false_fail <= ALPHA
    # A fixed-n one-sided z-test read at every look "passes" far more often: the test can tell.
    n = np.arange(1, LOOKS + 1)
    z = (counts[..., 1] / n - thr) / np.sqrt(thr * (1 - thr) / n)
    naive = float((z[:, 9:] >= 1.6449).any(axis=1).mean())
    assert naive > 4 * ALPHA
    assert false_pass < naive / 4


def test_bounded_mean_false_pass_and_false_fail_over_2000_looks():
    rng = np.random.default_rng(2)
    x = rng.beta(7.0, 3.0, size=(STREAMS, LOOKS))  # token agreement with mean 0.7 = threshold
    sums = np.cumsum(x, axis=1)
    n = np.arange(1, LOOKS + 1, dtype=float)
    counts = np.stack([n - sums, sums], axis=-1)  # the two-point relaxation of `bounded_mean_cs`
    assert ever_rejects(counts, [0.0, 1.0], 0.7, 0.0, 1.0, upward=True) <= ALPHA
    assert ever_rejects(counts, [0.0, 1.0], 0.7, 0.0, 1.0, upward=False) <= ALPHA


def test_paired_noninferiority_false_pass_over_2000_looks():
    rng = np.random.default_rng(4)
    d = rng.choice([-1, 0, 1], p=[0.10, 0.85, 0.05], size=(STREAMS, LOOKS))  # delta = -0.05 = -margin
    counts = np.stack([np.cumsum(d == v, axis=1) for v in (-1, 0, 1)], axis=-1).astype(float)
    assert ever_rejects(counts, [-1.0, 0.0, 1.0], -0.05, -1.0, 1.0, upward=True) <= ALPHA
    assert ever_rejects(counts, [-1.0, 0.0, 1.0], -0.05, -1.0, 1.0, upward=False) <= ALPHA


def test_normal_mixture_cs_coverage_over_2000_looks():
    counts = bernoulli_counts(0.7, seed=5)
    n = np.arange(1, LOOKS + 1)
    radius = np.array([sq.normal_mixture_radius(int(k), ALPHA) for k in n])
    mean = counts[..., 1] / n
    assert float((np.abs(mean - 0.7) > radius).any(axis=1).mean()) <= ALPHA


def pass_boundary(p0: float, n_max: int, upward: bool) -> list[int]:
    """Per n, the fewest successes (upward) or failures (downward) that decide against p0."""
    target, out, k = math.log(1 / ALPHA), [], 0
    for n in range(1, n_max + 1):  # the boundary never falls and rises by at most one per step
        while k <= n:
            s = k if upward else n - k
            if sq.log_wealth([(0.0, n - s), (1.0, s)], p0, 0.0, 1.0, upward) >= target:
                break
            k += 1
        out.append(k)
    return out


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(Bin(n, p) >= k), exactly."""
    if k > n:
        return 0.0
    log_pmf = (
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
        for i in range(k, n + 1)
    )
    return math.fsum(math.exp(v) for v in log_pmf)


@pytest.mark.parametrize(("truth", "upward"), [(0.8, True), (0.6, False)])
def test_clear_effect_decides_within_the_expected_sample_size(truth, upward):
    thr = 0.7
    boundary = pass_boundary(thr, 1000, upward)
    # Expected n: the first n at which a fixed-n stream is past the boundary with prob >= 95%
    # (a stream that crossed earlier only helps, since decisions are time-uniform).
    hit_p = truth if upward else 1 - truth
    n95 = next(n for n in range(1, 1001) if binomial_tail(n, hit_p, boundary[n - 1]) >= 0.95)
    # The price of validity under continuous monitoring: at most ~2.5x the n of a fixed-n
    # one-sided z-test at level alpha with 95% power, which may be read only once.
    z = 1.6449
    n_fixed = ((z * math.sqrt(thr * (1 - thr)) + z * math.sqrt(truth * (1 - truth))) / abs(truth - thr)) ** 2
    assert n95 <= 2.5 * n_fixed
    counts = bernoulli_counts(truth, seed=6, looks=n95)
    decided = log_wealth_paths(counts, [0.0, 1.0], thr, 0.0, 1.0, upward) >= math.log(1 / ALPHA)
    assert float(decided.any(axis=1).mean()) >= 0.95
    # and each decision is exactly the library's interval crossing the threshold
    ones = int(counts[0, -1, 1])
    cs = sq.bernoulli_cs(n95, ones, ALPHA)
    assert (cs.lo >= thr if upward else cs.hi < thr) == bool(decided[0, -1])


def test_ever_rejects_shortcut_matches_full_mixture():
    counts = bernoulli_counts(0.75, seed=9, streams=50, looks=300)
    full = (
        (log_wealth_paths(counts, [0.0, 1.0], 0.7, 0.0, 1.0, True) >= math.log(1 / ALPHA)).any(axis=1).mean()
    )
    assert ever_rejects(counts, [0.0, 1.0], 0.7, 0.0, 1.0, True) == full
