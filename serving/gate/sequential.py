"""Anytime-valid confidence sequences and exact tests for the promotion gate (pure, stdlib only).

Why "anytime-valid": a canary controller re-reads the verdict every minute. A fixed-n interval
covers the truth with probability 1 - alpha *at one pre-chosen n*; checked after every request
it eventually excludes the truth with probability -> 1. A confidence sequence (CS) is a sequence
of intervals CS_1, CS_2, ... with P(exists n: mean not in CS_n) <= alpha, so any number of looks,
stopping whenever convenient, keeps the error <= alpha. Each CS here is the set of means that a
nonnegative (super)martingale "wealth" W_n(mu) has not refuted, W_n(mu) < 1/alpha; Ville's
inequality P(exists n: W_n >= 1/alpha) <= alpha gives the time-uniform coverage.

* `mean_cs` (used for every rate and bounded mean): one-sided betting CSs (Waudby-Smith &
  Ramdas 2024, "Estimating means of bounded random variables by betting", JRSS-B), the wealth
  being a fixed mixture of constant bets prod_i (1 + lambda (x_i - mu)); each side at its own
  alpha (no halving). For Bernoulli data this is the uniform-prior likelihood-ratio mixture.
  Data with few distinct values (Bernoulli, paired flips) enter as (value, count); any data in
  [lo, hi] may enter as its sum only (two-point relaxation, see `bounded_mean_cs`).
* `normal_mixture_cs`: Robbins' closed-form normal-mixture CS for sub-Gaussian data (Howard,
  Ramdas, McAuliffe & Sekhon 2021, Ann. Statist.; Robbins 1970); looser, kept as a reference.
* Fixed n (a one-shot probe report judged once): exact sign test (McNemar on the flips) and
  Tango's score interval for a paired difference of proportions (Tango 1998, Stat. Med.).
* Quantiles (latency): each bound of a quantile is a Bernoulli CS on the count of samples at or
  below a bucket edge (Howard & Ramdas 2022, "Sequential estimation of quantiles", Bernoulli).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate, pairwise
from statistics import NormalDist

Point = tuple[float, float]  # (value, weight): an observed value and how often it was seen


@dataclass(frozen=True)
class Interval:
    """A closed interval [lo, hi]; either end may be infinite (unbounded)."""

    lo: float
    hi: float

    def contains(self, x: float) -> bool:
        """True when lo <= x <= hi."""
        return self.lo <= x <= self.hi


class Verdict(StrEnum):
    """Outcome of one check or of a whole variant."""

    PASS = "PASS"
    FAIL = "FAIL"
    UNDECIDED = "UNDECIDED"


def _make_bets() -> tuple[tuple[float, float], ...]:
    """(c, weight) pairs: a quadrature of the uniform prior on the bet fraction c in (0, 1).

    Cells are geometric on (1e-6, 0.1] (small bets, so the CS keeps shrinking like
    sqrt(log n / n) far beyond realistic n) and linear on (0.1, 1) (where small samples bet);
    each bet sits mid-cell with the cell's width as weight. Any fixed weights summing to 1 keep
    validity; these make the mixture close to the continuous uniform prior on c.
    """
    ratio = (0.1 / 1e-6) ** (1 / 44)
    geometric = [1e-6 * ratio**i for i in range(45)]
    linear = [0.1 + 0.025 * i for i in range(37)]
    bets = [(math.sqrt(a * b), b - a) for a, b in pairwise(geometric)]
    bets += [((a + b) / 2, b - a) for a, b in pairwise(linear)]
    bets[0] = (bets[0][0], bets[0][1] + geometric[0])  # the cell (0, 1e-6) joins the first bet
    total = math.fsum(w for _, w in bets)
    return tuple((c, w / total) for c, w in bets)


BETS = _make_bets()


def bet_log_factors(
    values: Sequence[float], mu: float, lo: float, hi: float, upward: bool
) -> tuple[list[float], list[list[float]]]:
    """(log weight of each bet, log(1 + lambda_j (x - mu)) for each bet j and value x).

    Upward bets lambda_j = c_j / (mu - lo) test H0: mean <= mu; downward bets
    lambda_j = -c_j / (hi - mu) test H0: mean >= mu. Under H0 each factor has conditional
    expectation 1 + lambda_j (E x - mu) <= 1, so prod_i (1 + lambda_j (x_i - mu)) is a nonnegative
    supermartingale, and so is any fixed mixture of them. c_j < 1 keeps every factor positive.
    """
    span = (mu - lo) if upward else (hi - mu)
    if span <= 0:
        raise ValueError(f"mu={mu} must lie strictly inside ({lo}, {hi}) for this bet direction")
    sign = 1.0 if upward else -1.0
    rows = [[math.log1p(sign * c / span * (x - mu)) for x in values] for c, _ in BETS]
    return [math.log(w) for _, w in BETS], rows


def log_wealth(points: Sequence[Point], mu: float, lo: float, hi: float, upward: bool) -> float:
    """Log of the mixture wealth after observing `points`; >= log(1/alpha) rejects the null.

    Upward (H0: mean <= mu) wealth falls as mu rises, downward wealth rises with mu, so each
    one-sided CS is an interval found by bisection. At mu on the range's edge the null is a
    point mass: refuted (inf) by any observation past it.
    """
    if (mu <= lo and upward) or (mu >= hi and not upward):
        beyond = any(w > 0 and (x - mu) * (1 if upward else -1) > 0 for x, w in points)
        return math.inf if beyond else 0.0
    log_w, rows = bet_log_factors([x for x, _ in points], mu, lo, hi, upward)
    logs = [
        lw + math.fsum(w * f for (_, w), f in zip(points, row, strict=True))
        for lw, row in zip(log_w, rows, strict=True)
    ]
    top = max(logs)
    return top + math.log(math.fsum(math.exp(v - top) for v in logs))


def _check_alpha(*alphas: float) -> None:
    for a in alphas:
        if not 0 < a < 1:
            raise ValueError(f"alpha must be in (0, 1), got {a}")


def _bound(points: Sequence[Point], mean: float, lo: float, hi: float, alpha: float, upward: bool) -> float:
    """Edge of {mu: wealth(mu) < 1/alpha} on one side; returns the refuted end (conservative)."""
    target = math.log(1 / alpha)
    refuted, kept = (lo, mean) if upward else (hi, mean)
    for _ in range(44):
        mid = (refuted + kept) / 2
        if log_wealth(points, mid, lo, hi, upward) >= target:
            refuted = mid
        else:
            kept = mid
    return refuted


def mean_cs(
    points: Sequence[Point], alpha: float, alpha_hi: float | None = None, lo: float = 0.0, hi: float = 1.0
) -> Interval:
    """Betting CS for the mean of observations in [lo, hi], given as (value, count) points.

    P(exists n: mean < CS_n.lo) <= alpha and P(exists n: mean > CS_n.hi) <= alpha_hi (default
    alpha): two one-sided CSs at their own levels, so the interval is a (1 - alpha - alpha_hi) CS.
    Counts must be the exact multiplicities of the observed values (for sums only, use
    `bounded_mean_cs`). No observations: the whole range.
    """
    a_hi = alpha if alpha_hi is None else alpha_hi
    _check_alpha(alpha, a_hi)
    if lo >= hi or any(w < 0 or not lo <= x <= hi for x, w in points):
        raise ValueError(f"points must lie in [{lo}, {hi}] with nonnegative weights")
    n = math.fsum(w for _, w in points)
    if n <= 0:
        return Interval(lo, hi)
    mean = min(max(math.fsum(x * w for x, w in points) / n, lo), hi)
    return Interval(_bound(points, mean, lo, hi, alpha, True), _bound(points, mean, lo, hi, a_hi, False))


def bounded_mean_cs(
    n: int, total: float, alpha: float, alpha_hi: float | None = None, lo: float = 0.0, hi: float = 1.0
) -> Interval:
    """Betting CS for the mean of n observations in [lo, hi] known only through their sum.

    Two-point relaxation: log(1 + lambda (x - mu)) is concave in x, so it is at least the chord
    between x = lo and x = hi; replacing the data by k = (total - n lo) / (hi - lo) "hi" and n - k
    "lo" observations lowers every bet's wealth, which stays below a true supermartingale, so
    Ville's bound still holds. Exact for Bernoulli data; for others it uses the worst-case variance
    (mean - lo)(hi - mean), which is what a sum alone allows.
    """
    if n < 0 or lo >= hi:
        raise ValueError(f"need n >= 0 and lo < hi (n={n}, lo={lo}, hi={hi})")
    if n == 0:
        return mean_cs([], alpha, alpha_hi, lo, hi)
    k = (total - n * lo) / (hi - lo)
    if not -1e-9 * n <= k <= n * (1 + 1e-9):
        raise ValueError(f"sum {total} of {n} observations is outside [{n * lo}, {n * hi}]")
    k = min(max(k, 0.0), float(n))
    return mean_cs([(lo, n - k), (hi, k)], alpha, alpha_hi, lo, hi)


def bernoulli_cs(n: int, successes: int, alpha: float, alpha_hi: float | None = None) -> Interval:
    """Betting CS for a success rate (a quadrature of the uniform-prior likelihood-ratio mixture)."""
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n (got {successes} of {n})")
    return bounded_mean_cs(n, successes, alpha, alpha_hi)


def paired_difference_cs(
    lost: int, gained: int, ties: int, alpha: float, alpha_hi: float | None = None
) -> Interval:
    """Betting CS for delta = P(variant right) - P(primary right) from paired outcomes.

    Each pair contributes d = -1 (lost), 0 (tie: both right or both wrong) or +1 (gained); the
    counts are exact multiplicities, so the CS adapts to how rarely answers flip.
    """
    if min(lost, gained, ties) < 0:
        raise ValueError("counts must be nonnegative")
    return mean_cs([(-1.0, lost), (0.0, ties), (1.0, gained)], alpha, alpha_hi, -1.0, 1.0)


def normal_mixture_rho(n_opt: float, alpha: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """Mixture precision rho that makes the normal-mixture radius smallest at n = n_opt.

    d/drho of (v + rho) log((v + rho) / (rho alpha^2)) vanishes when r = v / rho solves
    r = log((1 + r) / alpha^2); a fixed-point iteration (a contraction) finds r.
    """
    _check_alpha(alpha)
    r = 2 * math.log(1 / alpha)
    for _ in range(50):
        r = math.log((1 + r) / alpha**2)
    return n_opt * (hi - lo) ** 2 / 4 / r


def normal_mixture_radius(
    n: int, alpha: float, lo: float = 0.0, hi: float = 1.0, n_opt: float = 100.0
) -> float:
    """Half-width for the mean after n observations in [lo, hi] (two-sided, level alpha).

    X - mean is sub-Gaussian with sigma = (hi - lo) / 2 (Hoeffding's lemma), so
    exp(lambda S_n - lambda^2 v / 2), v = n sigma^2, is a supermartingale for every lambda;
    mixing lambda ~ N(0, 1/rho) gives sqrt(rho / (v + rho)) exp(S_n^2 / (2 (v + rho))), and Ville
    gives |S_n| < sqrt((v + rho) log((v + rho) / (rho alpha^2))) for all n with prob >= 1 - alpha.
    rho is tuned by `normal_mixture_rho` to be tightest at n_opt (default 100 observations).
    """
    if n <= 0:
        return math.inf
    rho = normal_mixture_rho(n_opt, alpha, lo, hi)
    v = n * (hi - lo) ** 2 / 4
    return math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha**2))) / n


def normal_mixture_cs(
    n: int, total: float, alpha: float, lo: float = 0.0, hi: float = 1.0, n_opt: float = 100.0
) -> Interval:
    """Two-sided normal-mixture CS (level alpha) for the mean, clipped to [lo, hi]."""
    if n <= 0:
        return Interval(lo, hi)
    r = normal_mixture_radius(n, alpha, lo, hi, n_opt)
    return Interval(max(lo, total / n - r), min(hi, total / n + r))


def sign_test_pvalue(lost: int, gained: int, alternative: str = "two-sided") -> float:
    """Exact sign test on the discordant pairs (= exact McNemar test), fixed n.

    Under H0 (equal accuracy) each flip is lost or gained with probability 1/2.
    "two-sided": 2 * P(Bin(d, 1/2) >= max(lost, gained)) capped at 1; "less" (variant worse):
    P(Bin >= lost); "greater" (variant better): P(Bin >= gained). Computed with exact integers.
    """
    if min(lost, gained) < 0:
        raise ValueError("counts must be nonnegative")
    d = lost + gained

    def tail(k: int) -> float:
        return sum(math.comb(d, i) for i in range(k, d + 1)) / 2**d

    if alternative == "two-sided":
        return min(1.0, 2 * tail(max(lost, gained)))
    if alternative == "less":
        return tail(lost)
    if alternative == "greater":
        return tail(gained)
    raise ValueError(f"alternative must be two-sided, less or greater, got {alternative!r}")


def _tango_z(lost: int, gained: int, n: int, t: float) -> float:
    """Tango's score statistic for H0: delta = t, with the restricted MLE of P(lost) in closed form."""
    a, b, c = 2 * n, -(lost + gained) + t * (2 * n + lost - gained), -lost * t * (1 - t)
    p_lost = (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)
    var = n * (2 * p_lost + t - t * t)
    num = gained - lost - n * t
    if var <= 0:
        return math.copysign(math.inf, num) if num else 0.0
    return num / math.sqrt(var)


def paired_difference_score_interval(
    lost: int, gained: int, n: int, alpha: float, alpha_hi: float | None = None
) -> Interval:
    """Fixed-n score interval for delta = P(variant right) - P(primary right) (Tango 1998).

    Valid for one look at a pre-planned n (e.g. a completed probe run), not for monitoring.
    Lower end at one-sided level alpha, upper at alpha_hi; asymptotic, but Tango's interval keeps
    close to nominal coverage down to small numbers of flips.
    """
    a_hi = alpha if alpha_hi is None else alpha_hi
    _check_alpha(alpha, a_hi)
    if n <= 0:
        return Interval(-1.0, 1.0)
    if min(lost, gained) < 0 or lost + gained > n:
        raise ValueError(f"need 0 <= lost, gained and lost + gained <= n (got {lost}, {gained}, {n})")
    d = (gained - lost) / n
    ends = []
    for side, level in ((1.0, alpha), (-1.0, a_hi)):
        z = NormalDist().inv_cdf(1 - level)
        refuted, kept = -side, d
        for _ in range(44):
            mid = (refuted + kept) / 2
            if side * _tango_z(lost, gained, n, mid) >= z:
                refuted = mid
            else:
                kept = mid
        ends.append(refuted)
    return Interval(ends[0], ends[1])


def check_histogram(edges: Sequence[float], counts: Sequence[float]) -> None:
    """Raises ValueError unless edges increase and counts hold len(edges) + 1 nonnegative entries."""
    if len(counts) != len(edges) + 1 or any(c < 0 for c in counts):
        raise ValueError(
            "counts: one nonnegative count per bucket, len(edges) + 1 (the last is above the last edge)"
        )
    if any(b <= a for a, b in pairwise(edges)):
        raise ValueError("edges must be strictly increasing")


def quantile_cs(
    edges: Sequence[float], counts: Sequence[float], q: float, alpha: float, alpha_hi: float | None = None
) -> Interval:
    """CS for the q-quantile Q from bucket counts (bucket i = (edges[i-1], edges[i]], last overflow).

    Upper end: the first edge x whose count N(x) of samples <= x makes the upward Bernoulli test
    reject "P(X <= x) <= q" at alpha_hi. If that end fell below Q, then N(x) <= #{X_i < Q}, whose
    rate P(X < Q) <= q, would also reject: probability <= alpha_hi at any time. The lower end
    mirrors it at alpha ("P(X <= x) >= q" refuted). Only one Bernoulli process per side matters,
    so no uniformity over x is paid (Howard & Ramdas 2022). Bounds are edges (or 0 / inf):
    bucket width limits precision; pass raw samples as edges for exact order statistics.
    """
    a_hi = alpha if alpha_hi is None else alpha_hi
    _check_alpha(alpha, a_hi)
    check_histogram(edges, counts)
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    n = math.fsum(counts)
    cum = list(accumulate(counts[:-1]))

    def rejects(i: int, upward: bool, level: float) -> bool:
        points = [(0.0, n - cum[i]), (1.0, cum[i])]
        return n > 0 and log_wealth(points, q, 0.0, 1.0, upward) >= math.log(1 / level)

    indices = range(len(edges))  # both predicates are monotone in the edge index
    first_up = bisect_left(indices, True, key=lambda i: rejects(i, True, a_hi))
    first_not_down = bisect_left(indices, True, key=lambda i: not rejects(i, False, alpha))
    hi = edges[first_up] if first_up < len(edges) else math.inf
    lo = edges[first_not_down - 1] if first_not_down > 0 else 0.0
    return Interval(lo, hi)


def quantile_estimate(edges: Sequence[float], counts: Sequence[float], q: float) -> float:
    """Point estimate of the q-quantile, interpolated linearly inside its bucket (like PromQL's
    histogram_quantile); the overflow bucket reports the last edge. NaN without samples."""
    check_histogram(edges, counts)
    n = math.fsum(counts)
    if n <= 0:
        return math.nan
    rank, below = q * n, 0.0
    for i, c in enumerate(counts[:-1]):
        if c > 0 and below + c >= rank:
            left = edges[i - 1] if i > 0 else 0.0
            return left + (edges[i] - left) * (rank - below) / c
        below += c
    return edges[-1]


def ratio_interval(num: Interval, den: Interval) -> Interval:
    """Interval of x / y for x in num, y in den (both nonnegative): [num.lo/den.hi, num.hi/den.lo]."""
    lo = 0.0 if den.hi == math.inf else num.lo / den.hi
    hi = math.inf if den.lo <= 0 or num.hi == math.inf else num.hi / den.lo
    return Interval(lo, hi)


def difference_interval(a: Interval, b: Interval) -> Interval:
    """Interval of x - y for x in a, y in b. With a and b each at level alpha/2 per side, the
    result is at level alpha per side (union bound; no independence needed)."""
    return Interval(a.lo - b.hi, a.hi - b.lo)


def decide(interval: Interval, threshold: float, direction: str, n: int, min_n: int) -> Verdict:
    """One-sided decision for one gate from a confidence sequence.

    "min" gate (figure >= threshold passes): PASS if interval.lo >= threshold, FAIL if
    interval.hi < threshold; "max" mirrored; otherwise UNDECIDED, and always UNDECIDED while
    n < min_n. A false PASS means the CS missed the truth on the PASS side at some look, which
    happens with probability <= that side's alpha over all looks together (time-uniform
    coverage); the same holds for FAIL. The min_n guard only removes decisions.
    """
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
    if n < min_n:
        return Verdict.UNDECIDED
    if direction == "min":
        passed, failed = interval.lo >= threshold, interval.hi < threshold
    else:
        passed, failed = interval.hi <= threshold, interval.lo > threshold
    if passed:
        return Verdict.PASS
    return Verdict.FAIL if failed else Verdict.UNDECIDED
