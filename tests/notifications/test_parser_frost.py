"""Frost, and keywords that used to name the wrong category (pure: no database)."""

from __future__ import annotations

import pytest

from notifications.parser import parse_sms


@pytest.mark.parametrize(
    ("text", "expected", "place"),
    [
        ("Мы замерзаем, нет отопления, Рязань", {"shelter", "power"}, "Рязань"),
        ("Холодно, нет отопления", {"power"}, None),
        ("Нужен обогреватель, Тула", {"power"}, "Тула"),
        ("Нет тепла третий день, Рязань", {"power"}, "Рязань"),
        ("Нужны дрова", {"other"}, None),
        ("нет газа", {"other"}, None),
        ("Нужен газовый баллон, Тула", {"other"}, "Тула"),
        ("we are freezing, no heating", {"shelter", "power"}, None),
        ("need firewood and a heater", {"other", "power"}, None),
    ],
)
def test_frost_is_a_need_of_heat_fuel_or_a_warm_place(text: str, expected: set[str], place: str | None) -> None:
    parsed = parse_sms(text)
    assert parsed.intent == "need"
    assert set(parsed.categories) == expected
    assert parsed.place_text == place


@pytest.mark.parametrize("text", ["нужна газель, Рязань", "Газель нужна перевезти вещи"])
def test_a_gazelle_van_is_still_transport_not_gas(text: str) -> None:
    assert "other" not in parse_sms(text).categories
    assert "transport" in parse_sms(text).categories


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Жильцам нужна вода", ("water",)),
        ("Жильцы дома просят воду", ("water",)),
        ("Нет жилья, Рязань", ("shelter",)),
        ("нужно жилье на троих", ("shelter",)),
        ("Подвал затопило, нужна помпа", ("other",)),
        ("Затопило подвал, нужен насос", ("other",)),
        ("Пожар, нужна мотопомпа", ("firefighting", "other")),
    ],
)
def test_residents_are_not_housing_and_a_pump_is_not_firefighting(text: str, expected: tuple[str, ...]) -> None:
    assert parse_sms(text).categories == expected
