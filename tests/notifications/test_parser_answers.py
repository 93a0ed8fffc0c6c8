"""Replies to our own follow-up questions, read as answers (pure: no database)."""

from __future__ import annotations

import pytest

from notifications.parser import answers, merge, parse_sms


@pytest.mark.parametrize(
    ("first", "reply", "place"),
    [
        ("нужна вода, у нас дети", "Рязань, могу сам забрать", "Рязань"),
        ("нужны лекарства", "Рязань. Могу забрать сам", "Рязань"),
        ("нужна еда", "Тула, можем сами забрать", "Тула"),
        ("need water for my kids", "Ryazan, I can pick it up myself", "Ryazan"),
    ],
)
def test_a_can_in_the_answer_to_where_are_you_is_still_the_answer(first: str, reply: str, place: str) -> None:
    previous = parse_sms(first)
    assert previous.missing == ("place",)
    answer = parse_sms(reply)
    assert answers(previous, answer, "place")
    merged = merge(previous, answer)
    assert merged.intent == "need"
    assert merged.categories == previous.categories
    assert merged.place_text == place
    assert merged.missing == ()


def test_an_answer_to_where_are_you_that_offers_something_else_is_an_offer_not_the_answer() -> None:
    previous = parse_sms("нужна вода")
    assert not answers(previous, parse_sms("могу привезти дрова и продукты, Рязань"), "place")
    # and a reply to another question than the place is not taken for the place
    assert not answers(previous, parse_sms("Рязань, могу сам забрать"), "category")
