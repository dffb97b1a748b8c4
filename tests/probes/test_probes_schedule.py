"""Online-probe helpers: prompt matching and the probe schedule."""

from __future__ import annotations

from collections import Counter

import pytest

from serving.probes.facts import Fact, load_builtin
from serving.probes.schedule import ProbeSchedule, build_index, match_probe

FACTS = [Fact("capital", s, o, "The capital of [X] is") for s, o in [("France", "Paris"), ("Peru", "Lima")]]


def test_match_probe_exact_after_strip() -> None:
    index = build_index(FACTS)
    assert match_probe("The capital of France is", index) == FACTS[0]
    assert match_probe("  The capital of Peru is\n", index) == FACTS[1]
    assert match_probe("The capital of France is ", index) == FACTS[0]
    assert match_probe("the capital of France is", index) is None
    assert match_probe("The capital of  France is", index) is None
    assert match_probe("What is the capital of France?", index) is None
    assert match_probe("", index) is None


def test_build_index_is_read_only_and_rejects_clashes() -> None:
    index = build_index(FACTS)
    with pytest.raises(TypeError):
        index["x"] = FACTS[0]  # type: ignore[index]
    clash = Fact("other", "France", "Paris", "The capital of [X] is")
    with pytest.raises(ValueError):
        build_index([*FACTS, clash])
    geo = load_builtin("geo")
    index = build_index(geo)
    assert len(index) == len(geo)
    assert all(match_probe(f.prompt, index) is f for f in geo)


def test_round_robin_schedule() -> None:
    facts = load_builtin("capitals-small")
    schedule = ProbeSchedule(facts, order="round_robin")
    assert schedule.take(len(facts) * 2) == facts * 2
    assert schedule.drawn == len(facts) * 2


def test_shuffled_schedule_is_seeded_and_balanced() -> None:
    facts = load_builtin("capitals-small")
    n = len(facts)
    a = ProbeSchedule(facts, seed=3).take(3 * n)
    assert a == ProbeSchedule(facts, seed=3).take(3 * n)
    assert a != ProbeSchedule(facts, seed=4).take(3 * n)
    for p in range(3):  # every pass is a permutation
        assert sorted(a[p * n : (p + 1) * n], key=facts.index) == facts
    assert a[:n] != a[n : 2 * n]  # a new order each pass
    assert set(Counter(a).values()) == {3}
    it = iter(ProbeSchedule(facts, seed=3))
    assert [next(it) for _ in range(5)] == a[:5]


def test_schedule_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ProbeSchedule([])
    with pytest.raises(ValueError):
        ProbeSchedule(FACTS, order="zigzag")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ProbeSchedule(FACTS).take(-1)
