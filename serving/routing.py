"""Choosing the variant that answers a request: pure functions, no I/O.

Live traffic is split between the primary and candidates by weight. A request that carries a
`request_id` always lands on the same variant (while the set of ready variants is unchanged):
its id is hashed to a point in [0, 1) which picks a slice of the cumulative weights.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def unit_interval(key: str) -> float:
    """A stable, uniformly spread point in [0, 1) for `key` (first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick_weighted(choices: Sequence[tuple[str, float]], point: float) -> str:
    """The choice whose slice of the cumulative (normalized) weights contains `point` in [0, 1)."""
    live = [(name, w) for name, w in choices if w > 0]
    if not live:
        raise ValueError("no choice has a positive weight")
    total = sum(w for _, w in live)
    acc = 0.0
    for name, w in live:
        acc += w / total
        if point < acc:
            return name
    return live[-1][0]


def route(choices: Sequence[tuple[str, float]], request_id: str | None, rng: random.Random) -> str:
    """Sticky per `request_id` when given, otherwise a random draw."""
    point = unit_interval(request_id) if request_id else rng.random()
    return pick_weighted(choices, point)
