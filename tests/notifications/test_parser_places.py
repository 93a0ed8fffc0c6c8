"""What in a message is the place and what a quantity (pure: no database)."""

from __future__ import annotations

import pytest

from notifications.parser import parse_sms


@pytest.mark.parametrize(
    ("text", "place", "quantity"),
    [
        ("нужна вода в Рязань, Садовая 12", "Рязань, Садовая 12", None),
        ("нужна вода, Рязань, Ленина 5", "Рязань, Ленина 5", None),
        ("нужна вода, Рязань, д. 7", "Рязань, д. 7", None),
        ("нужна вода, Рязань, дом 14", "Рязань, дом 14", None),
        ("Нужна вода, Тула, Советская 3а, 4 человека", "Тула, Советская 3а", 4),
        ("need water, Ryazan, Lenina 5", "Ryazan, Lenina 5", None),
    ],
)
def test_a_house_number_is_part_of_the_address_not_the_quantity(text: str, place: str, quantity: int | None) -> None:
    parsed = parse_sms(text)
    assert parsed.categories == ("water",)
    assert parsed.place_text == place
    assert parsed.quantity == quantity


@pytest.mark.parametrize(
    ("text", "quantity"),
    [
        ("Вода 3, Рязань", 3),
        ("ВОДА 3 РЯЗАНЬ", 3),
        ("нужна вода 5, Рязань", 5),
        ("Нужна вода, Рязань 3 человека", 3),
        ("Нужна вода 20 литров, Рязань", 20),
    ],
)
def test_a_number_after_what_is_needed_or_before_a_unit_stays_the_quantity(text: str, quantity: int) -> None:
    parsed = parse_sms(text)
    assert parsed.quantity == quantity
    assert parsed.place_text is not None
    assert parsed.place_text.lower() == "рязань"


@pytest.mark.parametrize(
    ("text", "quantity"),
    [
        ("нужна вода, трое детей", 3),
        ("нужна еда, нас пятеро", 5),
        ("need water, two kids", 2),
        ("нужна еда, семья из четырех", 4),
    ],
)
def test_a_number_word_is_never_the_place(text: str, quantity: int | None) -> None:
    parsed = parse_sms(text)
    assert parsed.place_text is None
    assert parsed.missing == ("place",)
    if quantity is not None:
        assert parsed.quantity == quantity


@pytest.mark.parametrize(
    "text",
    [
        "нужна вода https://yandex.ru/maps/?pt=39.74,54.62&z=14",
        "нужна вода https://yandex.ru/maps/?ll=39.74%2C54.62&z=14",
        "нужна вода yandex.ru/maps/?z=14&pt=39.74,54.62",
        "нужна вода 54.62, 39.74",
    ],
)
def test_a_yandex_link_gives_longitude_first(text: str) -> None:
    parsed = parse_sms(text)
    assert (parsed.lat, parsed.lon) == (54.62, 39.74)


@pytest.mark.parametrize(
    ("text", "place", "quantity"),
    [
        ("Нужна вода Рязань 5", "Рязань", 5),
        ("Вода Рязань 5", "Рязань", 5),
        ("нужна вода Тула 3", "Тула", 3),
        ("Нужна еда Москва 10", "Москва", 10),
        ("Лекарства Рязань 2", "Рязань", 2),
        ("нужна вода Садовая 12", "Садовая 12", None),
        ("нужна вода, Полевой 4", "Полевой 4", None),
        # A street named otherwise than «-ая», «-ова»: a house, when the settlement is named beside it.
        ("Нужна вода, Мира 5, Рязань", "Рязань, Мира 5", None),
        ("Нужны лекарства Космонавтов 3 Рязань", "Рязань, Космонавтов 3", None),
        ("Нужна еда, Победы 10, Тула", "Тула, Победы 10", None),
        ("Нужна вода Рязань, Карла Маркса 7", "Рязань, Карла Маркса 7", None),
        ("Нужна вода, Рязань 5", "Рязань", 5),
        ("Тула, Хлебозаводская 3", "Тула, Хлебозаводская 3", None),
        ("Нужна вода Рязань 5 литров", "Рязань", 5),
    ],
)
def test_a_number_after_a_settlement_is_how_much_after_a_street_a_house(
    text: str, place: str, quantity: int | None
) -> None:
    parsed = parse_sms(text)
    assert parsed.place_text == place
    assert parsed.quantity == quantity


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Ольга, нужна вода", None),
        ("Анна, нам нужна еда", None),
        ("Olga, we need water", None),
        ("Привет, Ольга, нужна вода", None),
        # Another name after the one addressed is still the place.
        ("Вера, нужна вода, Рязань", "Рязань"),
    ],
)
def test_a_first_name_addressed_with_a_comma_is_not_the_place(text: str, place: str | None) -> None:
    parsed = parse_sms(text)
    assert parsed.intent == "need"
    assert parsed.place_text == place
    assert ("place" in parsed.missing) is (place is None)


@pytest.mark.parametrize(
    ("text", "categories"),
    [
        ("нужна вода Хлебозаводская 3", ("water",)),
        ("нужна вода, ул. Хлебозаводская 3", ("water",)),
        ("нужна вода, Тула, Хлебозаводская", ("water",)),
        ("нужна вода, тула, хлебозаводская 3", ("water",)),
        ("нужна еда, ул. Пожарная 4", ("food",)),
        ("нужна еда, улица Больничная", ("food",)),
        ("нужны лекарства, пр. Водников 2", ("medicine",)),
        # The keyword itself, or a compound that names the thing, still counts.
        ("нужен хлеб, Тула", ("food",)),
        ("нужны хлебобулочные изделия, Тула", ("food",)),
        ("нужно пожаротушение, Тула", ("firefighting",)),
        ("нужна вода 3 бутылки, Тула", ("water",)),
    ],
)
def test_a_street_name_is_never_what_is_needed(text: str, categories: tuple[str, ...]) -> None:
    assert parse_sms(text).categories == categories


@pytest.mark.parametrize(
    ("text", "place", "quantity"),
    [
        ("Нужна вода. Мира 5", "Мира 5", None),
        ("Нужна еда! Победы 12", "Победы 12", None),
        # Real quantities stay.
        ("вода 5 бутылок", None, 5),
        ("нужна вода 5 человек", None, 5),
        ("5 литров воды", None, 5),
        ("water for 5", None, 5),
        ("Нужна вода. 5 бутылок", None, 5),
    ],
)
def test_a_capitalised_word_and_a_number_ending_the_message_after_the_need_is_an_address(
    text: str, place: str | None, quantity: int | None
) -> None:
    parsed = parse_sms(text)
    assert parsed.place_text == place
    assert parsed.quantity == quantity


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("у ребенка переломы, Рязань", "Рязань"),
        ("нужно улучшение условий, нужна вода, Тула", "Тула"),
        ("нужна вода, ул.Ленина 5, Тула", "Тула, ул.Ленина 5"),
        ("нужна вода ул Ленина 5 Тула", "Тула, ул Ленина 5"),
        ("нужна вода, пер. Мирный 3, Тула", "Тула, пер. Мирный 3"),
        ("нужна вода пр-т Мира 10 Тула", "Тула, пр-т Мира 10"),
        ("нужна вода на улице ленина 5 рязань", "улице ленина 5"),  # the settlement: the geocoder finds it in the text
        ("Нужна вода, Рязань, на улице Ленина 5", "Рязань, улице Ленина 5"),
        ("нужна еда на проспекте Мира 10, Тула", "Тула, проспекте Мира 10"),
        ("нужна вода, в переулке Мирном 3, Тула", "Тула, переулке Мирном 3"),
        ("нужна вода, на площади Ленина, Тула", "Тула, площади Ленина"),
        ("нужна вода, ул. Ленина д. 5, Тула", "Тула, ул. Ленина д. 5"),
        ("нужна вода ул Ленина дом 7 Тула", "Тула, ул Ленина дом 7"),
    ],
)
def test_a_street_marker_is_a_word_of_its_own_not_the_start_of_one(text: str, place: str) -> None:
    """«ул», «пер» begin «улучшение», «переломы»: those are no street."""
    assert parse_sms(text).place_text == place


@pytest.mark.parametrize(
    ("text", "categories"),
    [
        ("сгорел дом 5, Рязань", ("shelter",)),
        ("Рязань, у нас сгорел дом 5 по ул. Ленина", ("shelter",)),
        ("площадь пожар рязань срочно", ("firefighting",)),
        ("Улица горит, помогите, Рязань", ("firefighting",)),
        ("На шоссе пожар, нужна помощь, Рязань", ("firefighting",)),
        ("Площадь пожара большая, нужна помощь, Белоомут", ("firefighting",)),
        ("Трасса и шоссе отрезаны, нет воды", ("water", "evacuation")),
        ("ШОССЕ ПОЖАР 3 ДОМА ГОРЯТ, РЯЗАНЬ", ("firefighting",)),
        # A street's name is still no category.
        ("нужна вода, ул. Пожарная 5", ("water",)),
        ("нужна еда, ул. пожарная 4", ("food",)),
        ("нужна еда, улица Больничная", ("food",)),
    ],
)
def test_what_happened_after_a_street_word_is_still_read(text: str, categories: tuple[str, ...]) -> None:
    """«дом» of «дом 5» and a lower-case word after «улица», «шоссе», «площадь» say what happened."""
    parsed = parse_sms(text)
    assert parsed.intent == "need"
    assert parsed.categories == categories


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Нужно: вода, еда, одеяла и пр. Белоомут", "Белоомут"),
        ("Нужна еда, вода и пр. Рязань Ленина 5", "Рязань, Ленина 5"),
        ("Нужна еда, вода и пр. Мы в Рязани", "Рязани"),
        ("Нужна еда, вода и т. пр. Белоомут", "Белоомут"),
        # «пр.» elsewhere is still an avenue.
        ("нужны лекарства, пр. Водников 2", "пр. Водников 2"),
        ("нужна вода пр. Мира 10 Тула", "Тула, пр. Мира 10"),
    ],
)
def test_and_so_on_is_no_avenue(text: str, place: str) -> None:
    """«и пр.» is «и прочее» ("etc."), not «проспект»."""
    assert parse_sms(text).place_text == place


@pytest.mark.parametrize(
    ("text", "place", "quantity"),
    [
        ("Нужна вода. Рязань 5", "Рязань", 5),
        ("Need food. Ryazan 5", "Ryazan", 5),
        ("Ryazan. Need insulin. Age 5", "Ryazan", 5),
        ("Нужна вода! Квартира 5", None, 5),
        ("Нужна вода. Этаж 5", None, 5),
        ("Нужна вода, Рязань. Подъезд 2", "Рязань", 2),
        ("Нужна еда, Рязань. Школа 5", "Рязань", 5),
        ("Нужны памперсы. Размер 5", None, 5),
        ("Нужна вода. Примерно 5", None, 5),
        ("Нужна вода. Кол-во 5", None, 5),
        ("Нужна вода. Итого 5", None, 5),
        # A street's name still is one.
        ("Нужна вода. Мира 5", "Мира 5", None),
        ("Нужна вода. Кирова 10", "Кирова 10", None),
        ("Нужна вода. Советская 5", "Советская 5", None),
    ],
)
def test_a_number_in_its_own_sentence_is_a_house_only_after_a_streets_name(
    text: str, place: str | None, quantity: int | None
) -> None:
    parsed = parse_sms(text)
    assert parsed.place_text == place
    assert parsed.quantity == quantity
    assert ("place" in parsed.missing) is (place is None)


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Нужна вода, деревня Старая", "деревня Старая"),
        ("Нужна вода, пос. Новый", "пос. Новый"),
        ("Нужна вода, в поселке Новом", "поселке Новом"),
        ("Нужна вода, хутор Красный", "хутор Красный"),
        # A name that is no adjective, or an adjective not said to be a settlement, as before.
        ("Нужна вода, деревня Ивановка", "Ивановка"),
        ("Нужна вода, Старая", "Старая"),
    ],
)
def test_the_word_that_says_an_adjective_is_a_settlement_stays_with_it(text: str, place: str) -> None:
    assert parse_sms(text).place_text == place


@pytest.mark.parametrize(
    ("text", "place", "categories"),
    [
        ("Ночуем на улице с детьми, Рязань", "Рязань", ("shelter",)),
        ("на улице холодно, нужна одежда, Тула", "Тула", ("shelter", "clothing")),
        ("остались на улице Рязань", "улице Рязань", ("shelter",)),
        ("нужна вода на улице ленина 5 рязань", "улице ленина 5", ("water",)),
        ("Нужна вода, на улице Ленина 5а", "улице Ленина 5а", ("water",)),
    ],
)
def test_on_the_street_is_outdoors_unless_a_street_and_house_follow(
    text: str, place: str, categories: tuple[str, ...]
) -> None:
    """«на улице» is mostly "outdoors" (shelter); with a street's name and a house number it is an address."""
    parsed = parse_sms(text)
    assert parsed.place_text == place
    assert parsed.categories == categories


@pytest.mark.parametrize(
    ("text", "place", "quantity"),
    [
        # «дом N» with a count after it stays the house (a review found the settlement or the right
        # count lost when it was read as a count instead); «в доме N человек» is who is there.
        ("Рязань дом 5 человек нужна питьевая вода", "Рязань, дом 5", None),
        ("Нужна еда, Рязань, дом 12 детей трое", "Рязань, дом 12", 3),
        ("нужна вода, белоомут дом 4 человека", "белоомут, дом 4", None),
        ("Нужна вода, в доме 3 человека, Рязань", "Рязань", 3),
    ],
)
def test_dom_and_a_number_is_the_house_and_v_dome_counts_who_is_there(
    text: str, place: str, quantity: int | None
) -> None:
    parsed = parse_sms(text)
    assert parsed.place_text == place
    assert parsed.quantity == quantity


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("нужна вода дом 12 ул. Ленина, Рязань", "Рязань, ул. Ленина, дом 12"),
        ("Нужна вода, Рязань, д. 12, ул. Ленина", "Рязань, ул. Ленина, д. 12"),
        ("Рязань, у нас сгорел дом 5 по ул. Ленина", "Рязань, ул. Ленина, дом 5"),
        ("Рязань, нужна вода, д. 12 на ул. Ленина", "Рязань, ул. Ленина, д. 12"),
        ("нужна вода дом 5 на ул. Садовой, Тула", "Тула, ул. Садовой, дом 5"),
        # The street's second word may be the settlement: the geocoder tells (test_geocoding).
        ("нужна вода дом 12 ул. Ленина Рязань", "ул. Ленина Рязань, дом 12"),
        # After its street the house stays where it was written.
        ("нужна вода ул Ленина дом 7 Тула", "Тула, ул Ленина дом 7"),
    ],
)
def test_a_house_number_before_its_street_stays_in_the_address(text: str, place: str) -> None:
    assert parse_sms(text).place_text == place


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Рязань, Садовая 12 на ул. Ленина прорвало трубу", "Рязань, ул. Ленина"),
        ("Тула, Фабрика 2 на ул. Ленина", "Тула, ул. Ленина"),
        ("Рязань, Ленина 5, на ул. Садовой нет воды", "Рязань, ул. Садовой"),
        ("Тула, Домодедовская 12 на ул. Ленина", "Тула, ул. Ленина"),  # «Дом…» begins a name, not «дом»
    ],
)
def test_a_street_and_number_before_another_street_is_not_its_house(text: str, place: str) -> None:
    """Only a number marked as a house («д. 12», «дом 5») joins the street written after it."""
    assert parse_sms(text).place_text == place


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Тула, ул. Ленина горит дом, нужна помощь", "Тула, ул. Ленина"),
        ("Рязань, ул. Ленина дети без воды", "Рязань, ул. Ленина"),
        ("Нужна вода, ул. Садовой нет воды, Тула", "Тула, ул. Садовой"),
        ("Рязань, ул. Ленина возле школы нужна вода", "Рязань, ул. Ленина"),
        # Kept: any other word (names written in lowercase, a settlement after the street), a house
        # number, a text in one case (capitals tell nothing there).
        ("Рязань, ул. Красная горка, нужна вода", "Рязань, ул. Красная горка"),
        ("Рязань, ул. Маршала жукова 5, нужна вода", "Рязань, ул. Маршала жукова 5"),
        ("Нужна вода, ул. Ленина тула", "ул. Ленина тула"),
        ("Рязань, ул. Красной Армии, нужна вода", "Рязань, ул. Красной Армии"),
        ("Нужна еда, ул. Садовая дом 3, Тула", "Тула, ул. Садовая дом 3"),
        ("нужна вода ул. ленина прорвало рязань", "рязань, ул. ленина прорвало"),
    ],
)
def test_a_lowercase_word_after_a_street_name_is_not_part_of_it(text: str, place: str) -> None:
    """In a text written in both cases, «ул. Ленина горит» names «ул. Ленина»: a keyword, a preposition or
    a verb of what happened after the street's name is not part of it."""
    assert parse_sms(text).place_text == place


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Нужна вода. Дом 12, ул. Ленина", "ул. Ленина, Дом 12"),
        ("НУЖНА ВОДА ДОМ 12 УЛ ЛЕНИНА", "УЛ ЛЕНИНА, ДОМ 12"),
    ],
)
def test_a_capitalised_house_word_is_a_house_number_not_a_quantity(text: str, place: str) -> None:
    """«Дом 12» at a sentence's start (or in capitals) is the house, as «дом 12» is: no quantity 12."""
    parsed = parse_sms(text)
    assert parsed.place_text == place
    assert parsed.quantity is None


@pytest.mark.parametrize(
    ("text", "place", "quantity"),
    [
        ("Нужна еда на 4 человек. Иванов Д. 5", None, 4),
        ("Петров Д. 3 человека, нужна еда, Рязань", "Рязань", 3),
    ],
)
def test_a_name_with_its_initial_is_no_house(text: str, place: str | None, quantity: int) -> None:
    """«Иванов Д.» is a name and an initial, not «д.» of a house: no place «Иванов, Д. 5»."""
    parsed = parse_sms(text)
    assert parsed.place_text == place
    assert parsed.quantity == quantity
