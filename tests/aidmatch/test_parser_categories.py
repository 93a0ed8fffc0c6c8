"""The SMS parser speaks the application's category codes (notifications cannot import them)."""

from __future__ import annotations

from aidmatch.categories import Category
from notifications.keywords import CATEGORY_KEYWORDS
from notifications.parser import CATEGORIES, parse_sms


def test_parser_category_codes_are_application_codes() -> None:
    assert set(CATEGORIES) <= {code.value for code in Category}


def test_parser_orders_categories_like_the_application() -> None:
    order = [code.value for code in Category]
    assert list(CATEGORIES) == sorted(CATEGORIES, key=order.index)


def test_every_application_category_has_keywords() -> None:
    # ``other`` too: what no category names (firewood, gas, a pump) is still a need, not «Что нужно?»
    assert set(CATEGORY_KEYWORDS) == {code.value for code in Category}


def test_parsed_categories_are_valid_application_codes() -> None:
    parsed = parse_sms("нужны вода, еда, жильё, врач, лекарства, эвакуация, машина, пожар, одежда, мыло")
    assert tuple(Category(code) for code in parsed.categories) == (
        Category.water,
        Category.food,
        Category.shelter,
        Category.medical,
        Category.medicine,
        Category.evacuation,
        Category.transport,
        Category.firefighting,
        Category.clothing,
        Category.hygiene,
    )
