"""The offline gazetteer over GeoNames settlements."""

from __future__ import annotations

import pytest

from geo.errors import GeocodingError, PlaceNotFoundError
from geo.geocoding import (
    _RU_REGIONS,
    STOP_WORDS,
    FakeGeocoder,
    GazetteerGeocoder,
    GeocodeResult,
    fold,
    load_places,
    region_code,
    russian_name,
)
from notifications.parser import parse_sms


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


# Coordinates of GeoNames settlements used below (lat, lon, admin1).
BELOOMUT = (54.945, 39.339, "47")
RYAZAN = (54.627, 39.704, "62")
SHATURA = (55.573, 39.534, "47")
ROSHAL = (55.669, 39.875, "47")
N_NOVGOROD = (56.329, 44.002, "51")


def _at(hit: GeocodeResult, place: tuple[float, float, str]) -> bool:
    return bool(abs(hit.lat_deg - place[0]) < 0.01 and abs(hit.lon_deg - place[1]) < 0.01 and hit.admin1 == place[2])


def test_small_villages_from_geonames_500_are_present() -> None:
    places = load_places("RU")
    assert len(places) > 5000  # cities500: every settlement GeoNames knows with ≥ 500 people
    assert "Белоомут" in places.name_ru
    assert "Рошаль" in places.name_ru


@pytest.mark.parametrize(
    ("query", "place"),
    [
        ("в Рязани", RYAZAN),
        ("из Белоомута", BELOOMUT),
        ("под Шатурой", SHATURA),
        ("Рошале", ROSHAL),
        ("около Рошаля", ROSHAL),
        ("к Белоомуту", BELOOMUT),
        ("в Нижнем Новгороде", N_NOVGOROD),
        ("в с. Белоомуте", BELOOMUT),
    ],
)
def test_oblique_cases_find_the_nominative(gazetteer: GazetteerGeocoder, query: str, place) -> None:
    hit = gazetteer.geocode(query)
    assert _at(hit, place), hit
    assert 0.5 < hit.confidence < 1.0  # an oblique case is a guess, if a good one


def test_yo_and_ye_are_the_same_letter(gazetteer: GazetteerGeocoder) -> None:
    assert gazetteer.geocode("Щёлково") == gazetteer.geocode("Щелково")
    assert gazetteer.geocode("Щелково").confidence == 1.0


@pytest.mark.parametrize(
    ("query", "place"),
    [
        ("Белоомут, Московская область", BELOOMUT),
        ("Рязань Рязанская обл.", RYAZAN),
        ("Шатура (Московская)", SHATURA),
        ("Московская обл, г Шатура", SHATURA),
        ("Beloomut, Moskovskaya oblast", BELOOMUT),
        ("Шатура, ул. Ленина 5", SHATURA),
        ("с. Белоомут", BELOOMUT),
    ],
)
def test_region_written_in_the_query(gazetteer: GazetteerGeocoder, query: str, place) -> None:
    hit = gazetteer.geocode(query)
    assert _at(hit, place), hit
    assert hit.confidence == 1.0


def test_region_hint_chooses_among_namesakes_and_ambiguity_lowers_confidence(gazetteer: GazetteerGeocoder) -> None:
    # Киров: the regional capital (Кировская обл., 33) and a town in Калужская обл. (25).
    big = gazetteer.geocode("Киров")
    assert big.admin1 == "33"
    assert big.confidence < 1.0
    small = gazetteer.geocode("Киров, Калужская обл.")
    assert small.admin1 == "25"
    assert small.confidence == 1.0
    assert gazetteer.geocode("Киров", region_hint="Калужская область") == small
    assert gazetteer.geocode("Киров", region_hint="25") == small
    # Заречный: four towns of similar size in four regions, no hint: low confidence.
    zarechny = gazetteer.geocode("Заречный")
    assert zarechny.confidence < 0.7
    assert zarechny.confidence < big.confidence  # a close race is more doubtful than a clear winner
    assert gazetteer.geocode("Заречный, Свердловская обл").admin1 == "71"
    # A hint that no namesake is in: keep the best guess, with less confidence.
    missed = gazetteer.geocode("Рязань", region_hint="Мурманская обл.")
    assert _at(missed, RYAZAN)
    assert missed.confidence < 0.7


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Московская область", "47"),
        ("Московской обл.", "47"),
        ("в Московской области", "47"),
        ("Москва", "48"),
        ("Moscow Oblast", "47"),
        ("Moscow", "48"),
        ("Рязанская", "62"),
        ("Ryazanskaya oblast", "62"),
        ("Ryazan Oblast", "62"),
        ("Респ. Татарстан", "73"),
        ("Республика Саха (Якутия)", "63"),
        ("Ханты-Мансийский автономный округ - Югра", "32"),
        ("Ямало-Ненецкий АО", "87"),
        ("Ненецкий АО", "50"),
        ("Кемеровская область - Кузбасс", "29"),
        ("Краснодарском крае", "38"),
        ("Алтайский край", "04"),
        ("Республика Алтай", "03"),
        ("Нижегородская обл", "51"),
        ("Новгородская обл", "52"),
        ("47", "47"),
        ("7", None),
        ("Атлантида", None),
        ("область", None),
    ],
)
def test_region_code(text: str, code: str | None) -> None:
    assert region_code(text) == code


def test_every_region_name_in_the_table_maps_back_to_its_code() -> None:
    for code, names in _RU_REGIONS.items():
        for name in names:
            assert region_code(name) == code, name


def test_one_typo_in_a_long_name_is_forgiven_with_less_confidence(gazetteer: GazetteerGeocoder) -> None:
    exact = gazetteer.geocode("Белоомут")
    for typo in ("Белоомтут", "Белоамут", "Белоомуут", "Белоомт", "Беломут", "Воскрсенск"):
        hit = gazetteer.geocode(typo)
        assert hit.confidence < gazetteer.geocode("из Белоомута").confidence
        if typo.startswith("Бел"):
            assert (hit.lat_deg, hit.lon_deg) == (exact.lat_deg, exact.lon_deg)
    assert gazetteer.geocode("Воскрсенск").name == "Воскресенск"
    # Short names have too many neighbours one edit away: no guessing.
    with pytest.raises(PlaceNotFoundError):
        gazetteer.geocode("Рязнь")
    with pytest.raises(PlaceNotFoundError):
        gazetteer.geocode("Белоамтут")  # two edits


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Срочно нужна вода, 3 человека, Белоомут", BELOOMUT),
        ("нужна эвакуация из Шатуры, ул. Ленина 5", SHATURA),
        ("СРОЧНО!!! горит лес под Шатурой, нужна машина", SHATURA),
        ("пожар около Рошаля, нужны люди", ROSHAL),
        ("Срочно! В Рязани нет света, нужен генератор", RYAZAN),
        ("нужна вода в Нижнем Новгороде", N_NOVGOROD),  # the two-word name beats Новгород
        ("Beloomut, need water for 3 people", BELOOMUT),
        ("need evacuation from Ryazan asap", RYAZAN),
        ("vody net, Beloomut, 5 chelovek", BELOOMUT),
        ("дети без еды, Белоомут Луховицкий район", BELOOMUT),
        ("нужен врач, Киров Калужская обл", (54.069, 34.299, "25")),
    ],
)
def test_find_in_text_on_realistic_sms(gazetteer: GazetteerGeocoder, text: str, place) -> None:
    hit = gazetteer.find_in_text(text)
    assert hit is not None, text
    assert _at(hit, place), hit
    assert hit.confidence < 1.0  # a place read out of free text is never certain


@pytest.mark.parametrize(
    "text",
    [
        "Нужна помощь, дети, вода, еда, машина",
        "Срочно нужна вода, 3 человека",
        "у нас горит дом, помогите пожалуйста",
        "Нужны одеяла и палатки, заря, мир",
        "help water food please, 5 people, Lima street 12",
        "need doctor now, children sick",
        # Real collisions from English disaster messages: never → Невер, buy → Буй,
        # agronomy → Агроном (one edit), sub-Saharan → Шаран (one edit).
        "I am in Morne Calvaire, I have nothing and I never had any help",
        "No one can buy anything. Tiny amounts of rice",
        "Good evening! I am trained in Agronomy and I would like to work",
        "well below the sub-Saharan average",
        "ул. Ленина 5, кв 12",
        "",
        "!!! 112 !!!",
    ],
)
def test_find_in_text_finds_no_place_where_there_is_none(gazetteer: GazetteerGeocoder, text: str) -> None:
    assert gazetteer.find_in_text(text) is None


def test_stop_words_are_real_collisions_and_never_places(gazetteer: GazetteerGeocoder) -> None:
    # The stop list is needed: some of its words are settlement names in the gazetteer.
    collisions = {w for w in STOP_WORDS if w in gazetteer._index}
    assert {"дно", "заря"} <= collisions
    for word in STOP_WORDS:
        assert gazetteer.find_in_text(f"нужна помощь {word}") is None, word


def test_geocode_reads_a_place_out_of_an_sms_like_query(gazetteer: GazetteerGeocoder) -> None:
    hit = gazetteer.geocode("срочно вода Белоомут")
    assert _at(hit, BELOOMUT)
    assert hit.confidence < 1.0


def test_a_written_region_is_never_read_as_a_village(gazetteer: GazetteerGeocoder) -> None:
    # GeoNames files Crimea under UA, so the RU gazetteer has no Ялта; a village named Крым
    # (Ростовская обл.) must not answer for «Респ Крым».
    with pytest.raises(PlaceNotFoundError):
        gazetteer.geocode("Ялта, Респ Крым")
    assert gazetteer.find_in_text("Респ. Крым, нужна вода") is None
    # Without the kind of region, the name alone is still a place.
    assert gazetteer.geocode("Крым").admin1 == "61"


def test_a_name_that_differs_in_its_first_letter_is_another_name(gazetteer: GazetteerGeocoder) -> None:
    with pytest.raises(PlaceNotFoundError):
        gazetteer.geocode("Тушино")  # not Пущино, one letter away
    with pytest.raises(PlaceNotFoundError):
        gazetteer.geocode("Велоомут")
    assert gazetteer.find_in_text("нужна вода, Тушино") is None


def test_a_typo_costs_a_short_name_more_confidence_than_a_long_one(gazetteer: GazetteerGeocoder) -> None:
    short, long_ = gazetteer.geocode("Рязонь"), gazetteer.geocode("Белоомтут")
    assert short.name == "Рязань"
    assert long_.name == "Белоомут"
    assert short.confidence < long_.confidence < gazetteer.geocode("из Белоомута").confidence


@pytest.mark.parametrize("word", ["Старая", "старая", "в Старой", "Новый", "Нижний", "Красный"])
def test_a_lone_common_adjective_is_no_settlement(gazetteer: GazetteerGeocoder, word: str) -> None:
    with pytest.raises(PlaceNotFoundError):
        gazetteer.geocode(word)
    assert gazetteer.find_in_text(f"нужна вода, {word}") is None


@pytest.mark.parametrize(
    ("query", "name"),
    [("Старая Русса", "Старая Русса"), ("Нижний Новгород", "Нижний Новгород"), ("деревня Старая", "Старая")],
)
def test_an_adjective_in_a_settlements_name_or_said_to_be_one_still_finds_it(
    gazetteer: GazetteerGeocoder, query: str, name: str
) -> None:
    assert gazetteer.geocode(query).name == name


@pytest.mark.parametrize(
    "text",
    ["Нужно: вода, еда, одеяла и пр. Белоомут", "Нужна еда, вода и т. пр. Белоомут", "нужна вода, еда и т.д. Белоомут"],
)
def test_and_so_on_hides_no_settlement(gazetteer: GazetteerGeocoder, text: str) -> None:
    """«и пр.», «и т.д.» ("etc."): the words after them are no street's name."""
    found = gazetteer.find_in_text(text)
    assert found is not None
    assert found.name == "Белоомут"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Нужна вода, деревня Старая", "Старая"),
        ("Нужна вода, посёлок Красный", "Красный"),
        ("Нужна вода, хутор Красный", "Красный"),
    ],
)
def test_an_adjective_said_to_be_a_settlement_is_found_in_a_text(
    gazetteer: GazetteerGeocoder, text: str, name: str
) -> None:
    found = gazetteer.find_in_text(text)
    assert found is not None
    assert found.name == name


@pytest.mark.parametrize("text", ["Нужна вода, в поселке", "дом в поселке сгорел", "нужна вода в деревне"])
def test_a_settlement_word_is_no_typo_of_a_settlement(gazetteer: GazetteerGeocoder, text: str) -> None:
    """«поселке» is one letter from the village Поселки, and says only that there is a settlement."""
    assert gazetteer.find_in_text(text) is None


@pytest.mark.parametrize(("query", "name"), [("хутор Красный", "Красный"), ("поселке Новом", "Новый")])
def test_a_settlement_word_in_any_case_names_the_adjective(gazetteer: GazetteerGeocoder, query: str, name: str) -> None:
    assert gazetteer.geocode(query).name == name


@pytest.mark.parametrize(
    "query",
    [
        "ул. Ленина Рязань",
        "ул. Ленина Рязань, дом 12",
        "ул. ленина рязань",
        "дом 12 ул. Ленина Рязань",
        "ул. Карла Маркса Рязань",  # a name of two words and the settlement: the name's second word is its own
        "ул. Садовая Рязань",  # an adjective's street and a town
        "пер. Школьный Рязань",
    ],
)
def test_a_settlement_right_after_a_street_name_is_found(gazetteer: GazetteerGeocoder, query: str) -> None:
    """A street's name may have two words («ул. Карла Маркса»); when the second is spelt exactly as
    a settlement's name and no other place is named, it is the settlement."""
    hit = gazetteer.geocode(query)
    assert _at(hit, RYAZAN), hit
    assert hit.confidence < 1.0  # found in the text, not the whole query


@pytest.mark.parametrize(
    "query",
    [
        "ул. Карла Маркса",
        "ул. Льва Толстого, дом 3",
        "пр. Маршала Жукова",
        "ул. Ленина Рязани",
        # The second word is a village's name (Лазо, Поляна exist) but the whole is the street's.
        "Нужна вода, ул. Сергея Лазо 5",
        "ул. Красная Поляна",
        "ул. Нижняя Поляна, дом 3",
    ],
)
def test_a_street_of_two_names_is_no_settlement(gazetteer: GazetteerGeocoder, query: str) -> None:
    """Only a word spelt exactly as a settlement's name: «Маркса» is not the town Маркс, nor
    «Рязани» Рязань there (a declined second word may be a person's name); nor, without a region
    hinted, a village nobody names without its region (Лазо, 3,551 people; Поляна, 836)."""
    with pytest.raises(PlaceNotFoundError):
        gazetteer.geocode(query)


@pytest.mark.parametrize(
    ("query", "region", "found"),
    [
        ("ул. Ленина Шатура", "Московская область", "Шатура"),
        ("ул. Ленина Шатура", "Рязанская область", None),  # no Шатура in that region
        ("ул. Мира Лазо", None, None),
        ("ул. Мира Лазо", "Приморский край", "Лазо"),  # a small village, but in the region hinted
        ("ул. Сергея Лазо, 5", "Московская область", None),
        ("ул. Красная Поляна", "Республика Дагестан", None),  # a village in the region, but the street's name
        ("нужна вода ул. Лесная Белоомут", None, "Белоомут"),
        ("ул. Центральная, Сасово", "Рязанская область", "Сасово"),
    ],
)
def test_a_settlement_after_a_street_name_follows_the_region_hint(
    gazetteer: GazetteerGeocoder, query: str, region: str | None, found: str | None
) -> None:
    if found is None:
        with pytest.raises(PlaceNotFoundError):
            gazetteer.geocode(query, region_hint=region)
    else:
        assert gazetteer.geocode(query, region_hint=region).name == found


def test_the_parsers_address_with_its_house_before_the_street_is_geocoded(gazetteer: GazetteerGeocoder) -> None:
    parsed = parse_sms("нужна вода дом 12 ул. Ленина Рязань")
    assert parsed.place_text is not None
    assert _at(gazetteer.geocode(parsed.place_text), RYAZAN)
