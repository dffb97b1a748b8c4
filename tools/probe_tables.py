"""Hand-written tables of tools/make_probes.py: names, aliases and fixes on top of the package data.

Keys are ISO 3166 alpha-2 country codes unless said otherwise; an alias is another answer that
counts as right. Changing a table changes the generated probe files (regenerate and commit them).
"""

from __future__ import annotations

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
