"""Conversations by SMS end: an answer is read as one, nothing is asked twice, and what stays
unfinished reaches the coordinators."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.helpers.models import Helper
from aidmatch.main import create_app
from aidmatch.needs.models import Need
from geo.geocoding import GazetteerGeocoder
from tests.aidmatch.test_sms_webhook import PUBLIC, TOKEN, _text


@pytest.fixture
def sms_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"twilio_auth_token": SecretStr(TOKEN), "public_url": PUBLIC})


@pytest.fixture
def sms(sms_settings: Settings, gazetteer: GazetteerGeocoder) -> Iterator[TestClient]:
    with TestClient(create_app(sms_settings, geocoder=gazetteer), raise_server_exceptions=False) as c:
        yield c


def _needs(db: Session, phone: str) -> list[Need]:
    db.expire_all()
    return list(db.scalars(select(Need).where(Need.contact_phone == phone).order_by(Need.id)))


@pytest.mark.parametrize(
    ("first", "answer", "lang"),
    [
        ("нужна вода, у нас дети", "Рязань, могу сам забрать", "ru"),
        ("Нужна питьевая вода", "Рязань. Можем забрать сами", "ru"),
        ("need water for my kids", "Ryazan, I can pick it up myself", "en"),
    ],
)
def test_i_can_pick_it_up_in_the_answer_to_where_are_you_keeps_the_need(
    sms: TestClient, db: Session, first: str, answer: str, lang: str
) -> None:
    phone = "+79161230001"
    assert _text(sms, phone, first).startswith("Где вы?" if lang == "ru" else "Where are you?")
    reply = _text(sms, phone, answer)
    (need,) = _needs(db, phone)
    assert need.category.value == "water"
    assert need.code in reply
    assert abs(need.lat - 54.63) < 0.1
    assert db.scalar(select(Helper).where(Helper.phone == phone)) is None  # not registered as a helper
