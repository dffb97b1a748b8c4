"""The demo's pure helpers."""

from __future__ import annotations

from collections import Counter

from serving.demo import MIRRORED_PROMPTS, MIRRORED_REQUESTS
from serving.probes.facts import load_builtin, stratified


def test_stratified_takes_every_relation_evenly_in_file_order() -> None:
    facts = load_builtin("geo")
    picked = stratified(facts, 60)
    counts = Counter(f.relation for f in picked)
    assert len(picked) == 60 and len(counts) == 6 and set(counts.values()) == {10}
    capitals = [f for f in picked if f.relation == "capital"]
    assert capitals == [f for f in facts if f.relation == "capital"][:10]
    assert stratified(facts, 0) == facts


def test_demo_sends_distinct_mirrored_prompts() -> None:
    assert len(set(MIRRORED_PROMPTS[:MIRRORED_REQUESTS])) == MIRRORED_REQUESTS == 16
