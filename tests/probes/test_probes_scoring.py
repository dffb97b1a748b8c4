"""P@1 normalisation/matching (with an independent regex reference) and LAMA-style P@k."""

from __future__ import annotations

import math
import random
import re
import unicodedata

import pytest

from serving.probes.facts import Fact
from serving.probes.scoring import (
    candidate_set,
    candidates_for,
    hit_at_k,
    is_correct,
    normalize,
    rank_of_object,
)


def fact(obj: str, *aliases: str, relation: str = "r", subject: str = "S") -> Fact:
    return Fact(relation, subject, obj, "[X] is", tuple(aliases))


# ----------------------------------------------------------------------------- normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Paris", "paris"),
        ("\n\n  The  Euro ", "euro"),
        ("the euro", "euro"),
        ("an apple a day", "apple a day"),
        ("A", ""),
        ("theatre", "theatre"),
        ("Theodore", "theodore"),
        ("another", "another"),
        (': "The Hague"', 'hague"'),
        ('"the" Hague', 'the" hague'),  # the article must be followed by whitespace
        ("...the\tUnited   States.", "united states."),
        ("Bogotá", "bogota"),
        ("ZŁOTY", "zloty"),
        ("N’Djamena", "n'djamena"),
        ("the the Hague", "the hague"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_is_idempotent_on_answers() -> None:
    for text in ["The Hague", "the United States", "Côte d'Ivoire", "  A Coruña", "U.S."]:
        assert normalize(normalize(text)) == normalize(text)


# ----------------------------------------------------------------------------- is_correct


@pytest.mark.parametrize(
    ("continuation", "answer", "aliases", "expected"),
    [
        (" Paris.", "Paris", (), True),
        (" Paris, and it is", "Paris", (), True),
        (" paris", "Paris", (), True),
        (" PARIS!", "Paris", (), True),
        ("Paris", "Paris", (), True),
        (" Parisian food", "Paris", (), False),
        (" Paris2", "Paris", (), False),
        (" Par", "Paris", (), False),
        (" the city of Paris", "Paris", (), False),
        ("\nParis", "Paris", (), True),
        (" the euro.", "euro", (), True),
        (" The Euro", "euro", (), True),
        (" euros", "euro", (), False),
        (" yen", "yen", ("Japanese yen",), True),
        (" Japanese yen (JPY)", "yen", ("Japanese yen",), True),
        (" Japanese", "yen", ("Japanese yen",), False),
        (" the United States.", "United States", ("USA", "America"), True),
        (" the United  States of America", "United States", (), True),
        (" United Kingdom", "United States", (), False),
        (" USA", "United States", ("USA", "US"), True),
        (" US-based", "United States", ("US",), False),
        (" America's", "United States", ("America",), True),
        (" American", "United States", ("America",), False),
        (" Guinea-Bissau", "Guinea", (), False),
        (" Guinea - a country", "Guinea", (), True),
        (" Niger", "Nigeria", (), False),
        (" Nigeria", "Niger", (), False),
        (" Bogotá, Colombia", "Bogota", (), True),
        (" Bogota", "Bogotá", (), True),
        (" The Hague", "The Hague", (), True),
        (" Hague", "The Hague", (), True),
        (" Washington, D.C.", "Washington", ("Washington, D.C.",), True),
        (' "Tokyo"', "Tokyo", (), True),
        (" **Tokyo**", "Tokyo", (), True),
        (" N’Djamena", "N'Djamena", (), True),
        ("", "Paris", (), False),
        ("   ", "Paris", (), False),
        (" Lyon", "Paris", (), False),
    ],
)
def test_is_correct(continuation: str, answer: str, aliases: tuple[str, ...], expected: bool) -> None:
    assert is_correct(continuation, fact(answer, *aliases)) is expected


def test_is_correct_accepts_any_alias_of_multi_answer_fact() -> None:
    f = Fact("neighbour", "France", "Germany", "[X] shares a land border with", ("Spain", "Italy"))
    assert is_correct(" Spain, Italy and", f)
    assert not is_correct(" Portugal", f)


# ----------------------------------------------------------------------------- independent reference

_PUNCT_CLASS = "".join(
    re.escape(ch) for ch in map(chr, range(0x20, 0x2100)) if unicodedata.category(ch)[0] in "PC"
)
_SKIP = rf"[\s{_PUNCT_CLASS}]*"
_EXTRA_FOLDS = {"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae", "Æ": "AE"}
_EXTRA_FOLDS |= {"œ": "oe", "Œ": "OE", "ı": "i", "‘": "'", "’": "'", "ʼ": "'", "`": "'", "“": '"', "”": '"'}


def _ref_fold(text: str) -> str:
    for src, dst in _EXTRA_FOLDS.items():
        text = text.replace(src, dst)
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn").lower()


def _ref_answer(answer: str) -> str:
    m = re.fullmatch(rf"{_SKIP}(?:(?:a|an|the)(?=\s|$){_SKIP})?(.*?)\s*", _ref_fold(answer), re.S)
    assert m is not None
    return m.group(1)


def reference_p_at_1(continuation: str, answers: list[str]) -> bool:
    """P@1 as one regex per answer over the raw (folded) continuation; no normalize() involved."""
    text = _ref_fold(continuation)
    for answer in answers:
        words = _ref_answer(answer).split()
        if not words:
            continue
        body = r"\s+".join(re.escape(w) for w in words)
        pattern = rf"{_SKIP}(?:(?:a|an|the)(?=\s|$){_SKIP})?{body}(?![^\W_]|-[^\W_])"
        if re.match(pattern, text, re.S):
            return True
    return False


_ANSWERS = [
    "Paris",
    "United States",
    "the euro",
    "Japanese yen",
    "Bogotá",
    "Guinea",
    "Guinea-Bissau",
    "N'Djamena",
    "złoty",
    "The Hague",
    "US",
    "Washington, D.C.",
    "Niger",
    "São Paulo",
    "an",
    "Côte d'Ivoire",
]
_PREFIXES = [
    "",
    " ",
    "  ",
    "\n",
    " the ",
    " The ",
    " a ",
    " an ",
    ' "',
    " **",
    ": ",
    " - ",
    " the the ",
    " thee ",
]
_SUFFIXES = ["", ".", ",", " and", "ian", "s", "-based", "- x", "'s", "!", "\n", " 2", "2", "-2", " ."]


def _mutate(answer: str, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.15:
        answer = answer.upper()
    elif choice < 0.3:
        answer = answer.lower()
    if rng.random() < 0.2:
        answer = unicodedata.normalize("NFKD", answer).encode("ascii", "ignore").decode()
    if rng.random() < 0.1:
        answer = answer.replace(" ", "  ")
    if rng.random() < 0.1 and len(answer) > 2:
        answer = answer[: rng.randrange(1, len(answer))]
    return answer


def test_is_correct_agrees_with_independent_reference() -> None:
    rng = random.Random(1234)
    outcomes = {True: 0, False: 0}
    for _ in range(6000):
        target = rng.choice(_ANSWERS)
        said = rng.choice(_ANSWERS) if rng.random() < 0.25 else target
        continuation = rng.choice(_PREFIXES) + _mutate(said, rng) + rng.choice(_SUFFIXES)
        aliases = rng.sample(_ANSWERS, rng.choice([0, 0, 1, 2]))
        aliases = [a for a in aliases if a != target]
        f = fact(target, *aliases)
        expected = reference_p_at_1(continuation, [target, *aliases])
        assert is_correct(continuation, f) is expected, (continuation, target, aliases)
        outcomes[expected] += 1
    assert outcomes[True] > 1000 and outcomes[False] > 1000


# ----------------------------------------------------------------------------- P@k


def _capital_facts() -> list[Fact]:
    caps = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo"}
    caps |= {"Peru": "Lima", "Chile": "Santiago", "Egypt": "Cairo", "Kenya": "Nairobi", "India": "New Delhi"}
    facts = [Fact("capital", s, o, "The capital of [X] is") for s, o in caps.items()]
    facts.append(Fact("capital", "Bolivia", "Sucre", "The capital of [X] is", ("La Paz",)))
    facts.append(Fact("capital", "Narnia", "paris", "The capital of [X] is"))  # duplicate after normalize
    facts.append(Fact("continent", "France", "Europe", "[X] is in"))
    return facts


def test_candidate_set_is_distinct_sorted_and_per_relation() -> None:
    facts = _capital_facts()
    cands = candidate_set(facts, "capital")
    assert len(cands) == 11  # "paris" and "Paris" are one candidate
    assert cands == sorted(cands, key=lambda s: (normalize(s), s))
    assert "Europe" not in cands
    assert candidate_set(facts, "continent") == ["Europe"]
    assert candidate_set(facts, "missing") == []


def test_candidates_for_bounded_deterministic_and_contains_object() -> None:
    facts = _capital_facts()
    for f in facts:
        for max_candidates in (1, 3, 5, 10, 50):
            cands = candidates_for(f, facts, max_candidates=max_candidates, seed=7)
            assert f.object in cands
            assert len(cands) <= max_candidates
            assert len(set(map(normalize, cands))) == len(cands)
            assert cands == candidates_for(f, list(reversed(facts)), max_candidates=max_candidates, seed=7)
    france = facts[0]
    assert len(candidates_for(france, facts, max_candidates=5)) == 5
    draws = {tuple(candidates_for(france, facts, max_candidates=4, seed=s)) for s in range(20)}
    assert len(draws) > 1  # the seed matters


def test_candidates_for_excludes_other_true_answers() -> None:
    facts = [*_capital_facts(), Fact("capital", "Atlantis", "La Paz", "The capital of [X] is")]
    bolivia = next(f for f in facts if f.subject == "Bolivia")
    for seed in range(10):
        cands = candidates_for(bolivia, facts, max_candidates=20, seed=seed)
        assert "La Paz" not in cands
        assert "Sucre" in cands


def test_candidates_for_rejects_bad_bound() -> None:
    with pytest.raises(ValueError):
        candidates_for(_capital_facts()[0], _capital_facts(), max_candidates=0)


def test_rank_of_object_and_hit_at_k() -> None:
    f = fact("Paris", "Paris, France")
    logliks = {"Paris": -1.0, "Lyon": -3.0, "Berlin": -0.5, "Rome": -2.0, "Paris, France": 0.0}
    assert rank_of_object(f, logliks) == 2  # Berlin beats it; the alias is not a competitor
    assert hit_at_k(f, logliks, 2) and not hit_at_k(f, logliks, 1)
    assert rank_of_object(f, {"Paris": -1.0}) == 1
    # ties count against the object
    assert rank_of_object(f, {"Paris": -1.0, "Lyon": -1.0}) == 2
    # NaN scores count as -inf
    assert rank_of_object(f, {"Paris": -1.0, "Lyon": math.nan}) == 1
    assert rank_of_object(f, {"Paris": math.nan, "Lyon": -50.0, "Rome": -60.0}) == 3
    with pytest.raises(KeyError):
        rank_of_object(f, {"Lyon": -1.0})
    with pytest.raises(ValueError):
        hit_at_k(f, logliks, 0)


def test_p_at_k_end_to_end_with_fake_model() -> None:
    facts = _capital_facts()

    def fake_loglik(f: Fact, candidate: str) -> float:  # knows capitals of countries starting A-I
        if candidate == f.object:
            return -1.0 if f.subject[0] <= "I" else -9.0
        return -5.0 - len(candidate) / 100

    hits = []
    for f in facts:
        cands = candidates_for(f, facts, max_candidates=4)
        hits.append(hit_at_k(f, {c: fake_loglik(f, c) for c in cands}, k=1))
    known = [f.subject[0] <= "I" for f in facts]
    assert hits == known
