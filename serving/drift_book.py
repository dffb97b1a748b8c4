"""Running drift totals per shadow variant: the result of one comparison, counted and averaged.

``serving.drift.compare`` produces a :class:`DriftResult`; the gateway's mirror adds each one to a
:class:`DriftBook` (or counts a mirror that gave no result) and reads back a :class:`DriftSummary`.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.gate.verdict import clip_kl

__all__ = ["OUTCOMES", "DriftBook", "DriftResult", "DriftStats", "DriftSummary"]

OUTCOMES: frozenset[str] = frozenset({"compared", "dropped", "error", "timeout"})


@dataclass(frozen=True)
class DriftResult:
    """Drift of one shadow answer against the primary's; teacher-forced fields None if not scored."""

    exact_match: bool
    token_agreement: float
    first_divergence: int
    teacher_forced_agreement: float | None = None
    kl: float | None = None


@dataclass(frozen=True)
class DriftSummary:
    """Aggregate drift of one variant; means are None when nothing contributed to them."""

    compared: int
    exact_matches: int
    exact_match_rate: float | None
    mean_token_agreement: float | None
    mean_first_divergence: float | None
    tf_scored: int
    mean_teacher_forced_agreement: float | None
    kl_scored: int
    mean_kl: float | None
    dropped: int
    error: int
    timeout: int

    @property
    def total(self) -> int:
        """Mirrored requests with any outcome."""
        return self.compared + self.dropped + self.error + self.timeout


def _check_outcome(outcome: str) -> str:
    if outcome == "compared":
        raise ValueError('"compared" is recorded by add(result), not count_outcome()')
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
    return outcome


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


@dataclass
class DriftStats:
    """Running counts and sums for one variant (single event loop, so no locking)."""

    compared: int = 0
    exact_matches: int = 0
    sum_token_agreement: float = 0.0
    sum_first_divergence: int = 0
    tf_scored: int = 0
    sum_teacher_forced_agreement: float = 0.0
    kl_scored: int = 0
    sum_kl: float = 0.0
    sum_kl_clipped: float = 0.0
    """Sum of per-request KL clipped to the book's cap (what the promotion gate's bound needs)."""
    kl_cap: float = 1.0
    dropped: int = 0
    error: int = 0
    timeout: int = 0

    def add(self, result: DriftResult) -> None:
        """Record one comparison (this is what counts the "compared" outcome)."""
        self.compared += 1
        self.exact_matches += int(result.exact_match)
        self.sum_token_agreement += result.token_agreement
        self.sum_first_divergence += result.first_divergence
        if result.teacher_forced_agreement is not None:
            self.tf_scored += 1
            self.sum_teacher_forced_agreement += result.teacher_forced_agreement
        if result.kl is not None:
            self.kl_scored += 1
            self.sum_kl += result.kl
            self.sum_kl_clipped += clip_kl(result.kl, self.kl_cap)

    def count_outcome(self, outcome: str) -> None:
        """Count a mirror that produced no result: "dropped", "error" or "timeout".

        Raises ValueError for anything else, including "compared" (use :meth:`add`, so a
        comparison cannot be counted twice).
        """
        name = _check_outcome(outcome)
        setattr(self, name, getattr(self, name) + 1)

    def summary(self) -> DriftSummary:
        n = self.compared
        return DriftSummary(
            compared=n,
            exact_matches=self.exact_matches,
            exact_match_rate=_mean(self.exact_matches, n),
            mean_token_agreement=_mean(self.sum_token_agreement, n),
            mean_first_divergence=_mean(self.sum_first_divergence, n),
            tf_scored=self.tf_scored,
            mean_teacher_forced_agreement=_mean(self.sum_teacher_forced_agreement, self.tf_scored),
            kl_scored=self.kl_scored,
            mean_kl=_mean(self.sum_kl, self.kl_scored),
            dropped=self.dropped,
            error=self.error,
            timeout=self.timeout,
        )


class DriftBook:
    """DriftStats per shadow variant name."""

    def __init__(self, kl_cap: float = 1.0) -> None:
        self._stats: dict[str, DriftStats] = {}
        self._kl_cap = kl_cap

    def stats(self, variant: str) -> DriftStats:
        """The variant's stats, created empty on first use."""
        if variant not in self._stats:
            self._stats[variant] = DriftStats(kl_cap=self._kl_cap)
        return self._stats[variant]

    def add(self, variant: str, result: DriftResult) -> None:
        self.stats(variant).add(result)

    def count_outcome(self, variant: str, outcome: str) -> None:
        _check_outcome(outcome)  # before creating an entry for the variant
        self.stats(variant).count_outcome(outcome)

    def variants(self) -> tuple[str, ...]:
        return tuple(sorted(self._stats))

    def summary(self, variant: str) -> DriftSummary:
        """Summary of one variant (all zeros / None if it has recorded nothing)."""
        return self._stats.get(variant, DriftStats()).summary()

    def summaries(self) -> dict[str, DriftSummary]:
        return {name: self._stats[name].summary() for name in self.variants()}

    def reset(self, variant: str | None = None) -> None:
        """Forget everything (or just ``variant``)."""
        if variant is None:
            self._stats.clear()
        else:
            self._stats.pop(variant, None)
