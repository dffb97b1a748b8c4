"""Knowledge-probe facts and the probe file format.

A probe file is JSONL (UTF-8), one fact per line::

    {"relation": "capital", "subject": "France", "object": "Paris",
     "template": "The capital of [X] is", "aliases": ["Paris, France"]}

* ``relation``, ``subject``, ``object`` and ``template`` are required non-empty strings;
  ``aliases`` is an optional list of non-empty strings. Any other key is an error.
* ``template`` contains ``[X]`` (exactly once) where the subject goes; the object completes the
  resulting prompt as a sentence prefix ("The capital of France is" -> "Paris").
* ``aliases`` are further strings accepted as a correct answer: other names of the object ("USA"
  for "United States") or, for relations with several true answers (a country's neighbours, its
  official languages), the other true answers. Scoring treats object and aliases alike.
* Blank lines are ignored. Two facts with the same prompt are an error (a prompt identifies a
  fact, see :mod:`serving.probes.schedule`), as is an alias repeating the object.

:func:`load_probes` / :func:`parse_probes` validate *every* line and raise one
:class:`ProbeFileError` listing all problems, each prefixed with ``source:line``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUBJECT_SLOT = "[X]"
_REQUIRED_KEYS = ("relation", "subject", "object", "template")
_OPTIONAL_KEYS = ("aliases",)
_MAX_ERRORS_SHOWN = 50

BUILTIN_PROBE_SETS: tuple[str, ...] = ("capitals-small", "geo")
"""Names of the probe sets shipped in ``serving/probes/data/<name>.jsonl``."""


class ProbeFileError(ValueError):
    """A probe file (or in-memory probe lines) failed validation.

    ``errors`` holds one ``"source:line: message"`` string per problem.
    """

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors: tuple[str, ...] = tuple(errors)
        shown = list(self.errors[:_MAX_ERRORS_SHOWN])
        if len(self.errors) > _MAX_ERRORS_SHOWN:
            shown.append(f"... and {len(self.errors) - _MAX_ERRORS_SHOWN} more")
        noun = "error" if len(self.errors) == 1 else "errors"
        super().__init__(f"invalid probe file {source} ({len(self.errors)} {noun}):\n  " + "\n  ".join(shown))


@dataclass(frozen=True)
class Fact:
    """One probe: ``template`` with ``subject`` substituted should be completed by ``object``."""

    relation: str
    subject: str
    object: str
    template: str
    aliases: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        """The sentence prefix sent to the model, e.g. ``"The capital of France is"``."""
        return self.template.replace(SUBJECT_SLOT, self.subject)

    @property
    def answers(self) -> tuple[str, ...]:
        """Every accepted answer: the object first, then the aliases."""
        return (self.object, *self.aliases)

    def to_json(self) -> str:
        """The fact as one canonical probe-file line (no trailing newline)."""
        record: dict[str, Any] = {
            "relation": self.relation,
            "subject": self.subject,
            "object": self.object,
            "template": self.template,
        }
        if self.aliases:
            record["aliases"] = list(self.aliases)
        return json.dumps(record, ensure_ascii=False)


def _check_record(record: Any) -> tuple[Fact | None, list[str]]:
    """Validate one decoded JSON value; return the fact (if valid) and the problems found."""
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {type(record).__name__}"]
    problems: list[str] = []
    unknown = sorted(set(record) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(repr, unknown))}")
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        problems.append(f"missing key(s) {', '.join(map(repr, missing))}")
    for key in _REQUIRED_KEYS:
        if key not in record:
            continue
        value = record[key]
        if not isinstance(value, str):
            problems.append(f"{key!r} must be a string, got {type(value).__name__}")
        elif not value.strip():
            problems.append(f"{key!r} is empty")
    template = record.get("template")
    if isinstance(template, str) and template.strip():
        count = template.count(SUBJECT_SLOT)
        if count != 1:
            problems.append(f"'template' must contain {SUBJECT_SLOT} exactly once (found {count})")
    aliases: tuple[str, ...] = ()
    if "aliases" in record:
        raw = record["aliases"]
        if not isinstance(raw, list):
            problems.append(f"'aliases' must be a list of strings, got {type(raw).__name__}")
        elif not all(isinstance(a, str) and a.strip() for a in raw):
            problems.append("'aliases' must contain only non-empty strings")
        else:
            aliases = tuple(raw)
            obj = record.get("object")
            if isinstance(obj, str) and obj in aliases:
                problems.append(f"alias {obj!r} repeats the object")
            if len(set(aliases)) != len(aliases):
                problems.append("'aliases' contains duplicates")
    if problems:
        return None, problems
    return (
        Fact(
            relation=record["relation"],
            subject=record["subject"],
            object=record["object"],
            template=record["template"],
            aliases=aliases,
        ),
        [],
    )


def parse_probes(lines: Iterable[str], source: str = "<probes>") -> list[Fact]:
    """Parse and validate probe lines (e.g. a file's lines); ``source`` names them in errors.

    Raises :class:`ProbeFileError` listing every invalid line, or if there is no fact at all.
    """
    facts: list[Fact] = []
    errors: list[str] = []
    first_line_of_prompt: dict[str, int] = {}
    for lineno, raw_line in enumerate(lines, start=1):
        line = raw_line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{source}:{lineno}: bad JSON: {exc.msg} (column {exc.colno})")
            continue
        fact, problems = _check_record(record)
        errors.extend(f"{source}:{lineno}: {problem}" for problem in problems)
        if fact is None:
            continue
        prompt_key = fact.prompt.strip()
        if prompt_key in first_line_of_prompt:
            first = first_line_of_prompt[prompt_key]
            errors.append(f"{source}:{lineno}: duplicate fact: prompt {prompt_key!r} already on line {first}")
            continue
        first_line_of_prompt[prompt_key] = lineno
        facts.append(fact)
    if not facts and not errors:
        errors.append(f"{source}: no facts")
    if errors:
        raise ProbeFileError(source, errors)
    return facts


def load_probes(path: str | Path) -> list[Fact]:
    """Load and validate a JSONL probe file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProbeFileError(str(path), [f"{path}: not UTF-8 text ({exc.reason})"]) from exc
    return parse_probes(text.splitlines(), source=str(path))


def dumps_probes(facts: Iterable[Fact]) -> str:
    """Serialise facts to probe-file text: one canonical JSON line per fact, newline-terminated."""
    return "".join(fact.to_json() + "\n" for fact in facts)


def facts_sha256(facts: Iterable[Fact]) -> str:
    """A content hash of a probe set (of its canonical serialisation), for reports."""
    return hashlib.sha256(dumps_probes(facts).encode("utf-8")).hexdigest()


def relations(facts: Iterable[Fact]) -> list[str]:
    """The distinct relations of ``facts``, in order of first appearance."""
    return list(dict.fromkeys(fact.relation for fact in facts))


def builtin_probe_path(name: str) -> Path:
    """Path of a built-in probe set (one of :data:`BUILTIN_PROBE_SETS`)."""
    if name not in BUILTIN_PROBE_SETS:
        raise KeyError(f"unknown built-in probe set {name!r}; choose from {', '.join(BUILTIN_PROBE_SETS)}")
    return Path(__file__).resolve().parent / "data" / f"{name}.jsonl"


def load_builtin(name: str) -> list[Fact]:
    """Load a built-in probe set by name."""
    return load_probes(builtin_probe_path(name))


def resolve_probes(name_or_path: str | Path) -> list[Fact]:
    """Load a built-in set if ``name_or_path`` names one, else the probe file at that path."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_PROBE_SETS:
        return load_builtin(name_or_path)
    return load_probes(name_or_path)


BUILTIN_PREFIX = "builtin:"


def load_probe_set(spec: str) -> list[Fact]:
    """Facts of ``builtin:NAME``, a bare built-in name, or a JSONL file (raises ProbeFileError)."""
    try:
        if spec.startswith(BUILTIN_PREFIX):
            return load_builtin(spec[len(BUILTIN_PREFIX) :])
        return resolve_probes(spec)
    except KeyError as exc:
        raise ProbeFileError(spec, [str(exc.args[0])]) from None
    except OSError as exc:
        raise ProbeFileError(spec, [f"{spec}: cannot read: {exc.strerror or exc}"]) from None


def stratified(facts: Sequence[Fact], limit: int) -> list[Fact]:
    """`limit` facts taken round-robin across relations, each in file order (0 = all, as given)."""
    if not limit:
        return list(facts)
    by_relation: dict[str, list[Fact]] = {}
    for fact in facts:
        by_relation.setdefault(fact.relation, []).append(fact)
    mixed = [f for group in itertools.zip_longest(*by_relation.values()) for f in group if f is not None]
    return mixed[:limit]
