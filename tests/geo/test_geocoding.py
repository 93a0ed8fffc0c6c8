"""The offline gazetteer over GeoNames settlements."""

from __future__ import annotations

import pytest

from geo.errors import GeocodingError
from geo.geocoding import FakeGeocoder, GazetteerGeocoder, fold, load_places, russian_name


@pytest.fixture(scope="module")
def gazetteer() -> GazetteerGeocoder:
    return GazetteerGeocoder(load_places("RU"))


@pytest.mark.parametrize(
    ("query", "lat", "lon"),
    [
        ("Рязань", 54.627, 39.704),
        ("рязань", 54.627, 39.704),
        ("Ryazan", 54.627, 39.704),
        ("г. Выкса", 55.321, 42.174),
        ("город Муром", 55.569, 42.024),
        ("Нижний  Новгород", 56.329, 44.002),
        ("Спас-Клепики", 55.138, 40.180),
        ("Королёв", 55.916, 37.826),
        ("Королев", 55.916, 37.826),
    ],
)
def test_finds_settlements_in_cyrillic_and_latin(
    gazetteer: GazetteerGeocoder, query: str, lat: float, lon: float
) -> None:
    hit = gazetteer.geocode(query)
    assert hit.lat_deg == pytest.approx(lat, abs=0.01)
    assert hit.lon_deg == pytest.approx(lon, abs=0.01)
    assert 0 < hit.confidence <= 1
    assert hit.source == "gazetteer"


def test_unknown_place_is_our_error(gazetteer: GazetteerGeocoder) -> None:
    with pytest.raises(GeocodingError, match="Атлантида"):
        gazetteer.geocode("Атлантида")
    with pytest.raises(LookupError):
        gazetteer.geocode("   ")


def test_region_hint_picks_the_right_namesake(gazetteer: GazetteerGeocoder) -> None:
    places = load_places("RU")
    names: dict[str, list[int]] = {}
    for i, n in enumerate(places.name_ru):
        names.setdefault(n, []).append(i)
    name, idx = next((n, ix) for n, ix in sorted(names.items()) if len({places.admin1[i] for i in ix}) > 1)
    for i in idx:
        hit = gazetteer.geocode(name, region_hint=places.admin1[i])
        same_region = [j for j in idx if places.admin1[j] == places.admin1[i]]
        assert any(abs(hit.lat_deg - places.lat_deg[j]) < 1e-9 for j in same_region)
    assert gazetteer.geocode(name).confidence < 1.0


def test_fold_and_russian_name() -> None:
    assert fold("  Орехово-Зуево ") == "орехово зуево"
    assert fold("Ёлкино") == fold("елкино")
    assert fold("Йошкар-Ола") == "йошкар ола"  # й survives accent stripping
    assert russian_name("Moscow", ["Maskva", "Масква", "Москва", "Мæскуы", "Moskva"]) == "Москва"
    assert russian_name("Nowhere", ["Nowhere"]) == "Nowhere"


def test_fake_geocoder_records_queries() -> None:
    fake = FakeGeocoder({"Тума": (55.148, 40.554)})
    assert fake.geocode("тума").lat_deg == 55.148
    with pytest.raises(GeocodingError):
        fake.geocode("Москва")
    assert fake.queries == ["тума", "Москва"]
