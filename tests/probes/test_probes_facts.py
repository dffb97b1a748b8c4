"""Probe file format: parsing, validation errors with line numbers, built-in sets."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from serving.probes.facts import (
    BUILTIN_PROBE_SETS,
    Fact,
    ProbeFileError,
    builtin_probe_path,
    dumps_probes,
    facts_sha256,
    load_builtin,
    load_probes,
    parse_probes,
    relations,
    resolve_probes,
)
from serving.probes.scoring import is_correct, normalize

REPO_ROOT = Path(__file__).resolve().parents[2]

GOOD = {"relation": "capital", "subject": "France", "object": "Paris", "template": "The capital of [X] is"}


def line(**overrides: object) -> str:
    record = {**GOOD, **overrides}
    return json.dumps({k: v for k, v in record.items() if v is not None})


def test_fact_prompt_and_answers() -> None:
    f = Fact("capital", "France", "Paris", "The capital of [X] is", ("Paris, France",))
    assert f.prompt == "The capital of France is"
    assert f.answers == ("Paris", "Paris, France")
    with pytest.raises(AttributeError):
        f.object = "Lyon"  # type: ignore[misc]


def test_parse_valid_lines_with_aliases_and_blank_lines() -> None:
    lines = [line(), "", "   ", line(subject="Japan", object="Tokyo", aliases=["Tōkyō"])]
    facts = parse_probes(lines, source="mem")
    assert [f.subject for f in facts] == ["France", "Japan"]
    assert facts[1].aliases == ("Tōkyō",)
    assert facts[0].aliases == ()


def test_roundtrip_through_dumps() -> None:
    facts = parse_probes([line(), line(subject="Japan", object="Tokyo", aliases=["Tōkyō", "Edo"])])
    text = dumps_probes(facts)
    assert parse_probes(text.splitlines()) == facts
    assert "Tōkyō" in text  # UTF-8, not \\u escapes
    assert facts_sha256(facts) == facts_sha256(parse_probes(text.splitlines()))


def test_every_problem_is_reported_with_its_line_number(tmp_path: Path) -> None:
    lines = [
        line(),  # 1 ok
        "{not json",  # 2
        json.dumps({"relation": "capital", "subject": "Peru", "template": "The capital of [X] is"}),  # 3
        line(subject="Chile", object="Santiago", source="wikidata"),  # 4 unknown key
        line(subject="Italy", object="Rome", template="The capital of Italy is"),  # 5 no [X]
        line(subject="Spain", object="  "),  # 6 empty object
        line(),  # 7 duplicate of line 1
        line(subject="Cuba", object=5),  # 8 wrong type
        line(subject="Iran", object="Tehran", aliases="Teheran"),  # 9 aliases not a list
        line(subject="Iraq", object="Baghdad", aliases=["Baghdad"]),  # 10 alias == object
        "[1, 2]",  # 11 not an object
        line(subject="Oman", object="Muscat", template="[X] and [X]"),  # 12 two slots
        line(subject="Laos", object="Vientiane"),  # 13 ok
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ProbeFileError) as info:
        load_probes(path)
    err = info.value
    assert isinstance(err, ValueError)
    by_line = {int(e.split(":")[1]) for e in err.errors}
    assert by_line == {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
    message = str(err)
    assert str(path) in message and "11 errors" in message
    for needle in (
        ":2: bad JSON",
        ":3: missing key(s) 'object'",
        ":4: unknown key(s) 'source'",
        ":5: 'template' must contain [X]",
        ":6: 'object' is empty",
        ":7: duplicate fact",
        "already on line 1",
        ":8: 'object' must be a string",
        ":9: 'aliases' must be a list",
        ":10: alias 'Baghdad' repeats the object",
        ":11: expected a JSON object",
        ":12: 'template' must contain [X] exactly once (found 2)",
    ):
        assert needle in message, needle


def test_empty_input_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ProbeFileError, match="no facts"):
        parse_probes(["", "  "], source="empty")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({**GOOD, "subject": "Perú"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ProbeFileError, match="not UTF-8"):
        load_probes(path)


def test_error_list_is_truncated_in_message() -> None:
    with pytest.raises(ProbeFileError) as info:
        parse_probes(["{"] * 80, source="many")
    assert len(info.value.errors) == 80
    assert "and 30 more" in str(info.value)


# ----------------------------------------------------------------------------- built-in sets


def test_builtin_names_and_paths() -> None:
    assert set(BUILTIN_PROBE_SETS) == {"geo", "capitals-small"}
    for name in BUILTIN_PROBE_SETS:
        assert builtin_probe_path(name).is_file()
    with pytest.raises(KeyError):
        builtin_probe_path("nope")
    assert resolve_probes("capitals-small") == load_builtin("capitals-small")
    assert resolve_probes(builtin_probe_path("capitals-small")) == load_builtin("capitals-small")


def test_geo_set_size_and_relations() -> None:
    facts = load_builtin("geo")
    counts = Counter(f.relation for f in facts)
    assert len(facts) >= 300
    assert len(counts) >= 6
    assert set(counts) >= {
        "capital",
        "continent",
        "currency",
        "official_language",
        "neighbour",
        "city_country",
    }
    assert min(counts.values()) >= 50, counts
    assert relations(facts) == list(counts)  # relation blocks are contiguous


@pytest.mark.parametrize("name", BUILTIN_PROBE_SETS)
def test_builtin_files_are_canonical_and_sane(name: str) -> None:
    path = builtin_probe_path(name)
    facts = load_probes(path)
    assert path.read_text(encoding="utf-8") == dumps_probes(facts)
    for f in facts:
        assert f.prompt == f.prompt.strip() and "[X]" not in f.prompt
        assert f.subject in f.prompt
        assert normalize(f.object), f
        assert is_correct(" " + f.object + ".", f)
        for alias in f.aliases:
            assert is_correct(" " + alias, f)


def test_capitals_small() -> None:
    facts = load_builtin("capitals-small")
    assert 15 <= len(facts) <= 30
    assert {f.relation for f in facts} == {"capital"}
    geo = set(load_builtin("geo"))
    assert set(facts) <= geo
    paris = next(f for f in facts if f.subject == "France")
    assert paris.prompt == "The capital of France is" and paris.object == "Paris"


def test_importing_the_package_has_no_heavy_side_effects() -> None:
    code = (
        "import sys, serving.probes, serving.probes.plots, serving.probes.scoring, serving.probes.schedule;"
        "print(sorted(m for m in ('matplotlib', 'torch', 'vllm', 'grpc') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert out.stdout.strip() == "[]"
