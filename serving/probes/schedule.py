"""Pure helpers for online probing: recognise a live request that is a probe, and schedule probes.

* :func:`build_index` / :func:`match_probe`: a live request whose prompt equals a probe's prompt
  (after stripping surrounding whitespace; nothing else is normalised) can be scored as that probe.
* :class:`ProbeSchedule`: an endless, seeded iterator over the facts that the gateway draws from
  to inject probes (round-robin in file order, or a fresh shuffle for every pass).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Literal

from serving.probes.facts import Fact

ProbeIndex = Mapping[str, Fact]
"""Probe prompt (whitespace-stripped) -> fact. Built by :func:`build_index`; read-only."""

ScheduleOrder = Literal["round_robin", "shuffle"]


def build_index(facts: Sequence[Fact]) -> ProbeIndex:
    """Index facts by stripped prompt. Raises ``ValueError`` if two facts share a prompt."""
    index: dict[str, Fact] = {}
    for fact in facts:
        key = fact.prompt.strip()
        if key in index and index[key] != fact:
            raise ValueError(f"two facts share the prompt {key!r}")
        index[key] = fact
    return MappingProxyType(index)


def match_probe(prompt: str, index: ProbeIndex) -> Fact | None:
    """The fact whose prompt equals ``prompt`` (both whitespace-stripped), or ``None``."""
    return index.get(prompt.strip())


class ProbeSchedule(Iterator[Fact]):
    """An endless, deterministic stream of probe facts.

    ``order="round_robin"`` yields the facts in the given order, over and over;
    ``order="shuffle"`` yields every fact once per pass, in a new seeded permutation each pass
    (pass ``p`` uses ``random.Random(f"{seed}:{p}")``), so every fact is probed equally often and the
    same seed always gives the same stream. Not thread-safe: guard ``next()`` with a lock if shared.
    """

    def __init__(self, facts: Sequence[Fact], *, order: ScheduleOrder = "shuffle", seed: int = 0) -> None:
        if not facts:
            raise ValueError("ProbeSchedule needs at least one fact")
        if order not in ("round_robin", "shuffle"):
            raise ValueError(f"unknown order {order!r}")
        self._facts: tuple[Fact, ...] = tuple(facts)
        self._order: ScheduleOrder = order
        self._seed = seed
        self._pass = 0
        self._position = 0
        self._current: list[int] = self._permutation(0)

    def _permutation(self, pass_no: int) -> list[int]:
        indices = list(range(len(self._facts)))
        if self._order == "shuffle":
            random.Random(f"{self._seed}:{pass_no}").shuffle(indices)
        return indices

    @property
    def drawn(self) -> int:
        """How many facts have been drawn so far."""
        return self._pass * len(self._facts) + self._position

    def __iter__(self) -> ProbeSchedule:
        return self

    def __next__(self) -> Fact:
        if self._position == len(self._facts):
            self._pass += 1
            self._position = 0
            self._current = self._permutation(self._pass)
        fact = self._facts[self._current[self._position]]
        self._position += 1
        return fact

    def take(self, n: int) -> list[Fact]:
        """The next ``n`` facts."""
        if n < 0:
            raise ValueError("n must be >= 0")
        return [next(self) for _ in range(n)]
