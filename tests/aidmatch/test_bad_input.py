"""Bad input gets a 4xx with the one error shape and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.database import make_engine
from aidmatch.helpers.models import Helper
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer

SHAPE = {"type", "title", "status", "detail", "errors"}
NEED: dict[str, Any] = {
    "category": "water",
    "quantity": 1,
    "lat": 55.1,
    "lon": 40.2,
    "contact_phone": "+79161234567",
}
OFFER: dict[str, Any] = {
    "categories": ["water"],
    "capacity": 2,
    "radius_km": 30,
    "lat": 54.6,
    "lon": 39.7,
    "name": "Иван",
    "phone": "+79031234567",
}

BAD_NEEDS: dict[str, tuple[dict[str, Any], str | None]] = {
    "lat 91": ({"lat": 91}, "lat"),
    "lat -90.0001": ({"lat": -90.0001}, "lat"),
    "lon -181": ({"lon": -181}, "lon"),
    "unknown category": ({"category": "unicorns"}, "category"),
    "quantity 0": ({"quantity": 0}, "quantity"),
    "quantity negative": ({"quantity": -3}, "quantity"),
    "malformed phone": ({"contact_phone": "call me maybe"}, "contact_phone"),
    "too short phone": ({"contact_phone": "12345"}, "contact_phone"),
    "over-long description": ({"description": "x" * 3000}, "description"),
    "wrong type lat": ({"lat": "north"}, "lat"),
    "wrong type quantity": ({"quantity": "many"}, "quantity"),
    "list for category": ({"category": ["water"]}, "category"),
    "lat without lon": ({"lon": None}, None),
    "no location at all": ({"lat": None, "lon": None}, None),
    "unknown field": ({"secret_admin": True}, "secret_admin"),
    "bad urgency": ({"urgency": "whenever"}, "urgency"),
    "bad language": ({"language": "klingon"}, "language"),
    "naive needed_by": ({"needed_by": "2026-12-01T10:00:00"}, "needed_by"),
    "needed_by in year 9999": ({"needed_by": "9999-12-31T23:59:59-05:00"}, "needed_by"),
    # PostgreSQL refuses NUL in text: it must be a 422 there too, not a 500.
    "NUL in description": ({"description": "вода\x00"}, "description"),
    "control character in name": ({"contact_name": "Ив\x1bан"}, "contact_name"),
    "NUL in address": ({"lat": None, "lon": None, "address": "Белоомут\x00"}, "address"),
}


def _counts(db: Session) -> tuple[int, int, int]:
    db.expire_all()
    return tuple(db.scalar(select(func.count()).select_from(m)) or 0 for m in (Need, Offer, Helper))  # type: ignore[return-value]


def test_a_megabyte_body_is_refused_before_it_is_read(client: TestClient, db: Session) -> None:
    r = client.post("/api/needs", json={**NEED, "description": "x" * 1_000_000})
    assert r.status_code == 413
    assert set(r.json()) == SHAPE
    assert len(r.content) < 4000
    assert _counts(db) == (0, 0, 0)


@pytest.mark.parametrize("case", sorted(BAD_NEEDS))
def test_bad_need_is_refused_with_one_shape(client: TestClient, db: Session, case: str) -> None:
    change, field = BAD_NEEDS[case]
    r = client.post("/api/needs", json={**NEED, **change})
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == SHAPE
    assert body["status"] == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    if field is not None:
        assert field in {e["field"] for e in body["errors"]}, body
    # The error never echoes what was sent (a megabyte, or someone's phone).
    assert len(r.content) < 4000
    for value in change.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in r.text
    assert _counts(db) == (0, 0, 0)


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'"just a string"', b'{"category": "water", "lat": NaN, "lon": 40}', b""],
)
def test_malformed_json_bodies(client: TestClient, db: Session, raw: bytes) -> None:
    r = client.post("/api/needs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert set(r.json()) == SHAPE
    assert _counts(db) == (0, 0, 0)


BAD_OFFERS: dict[str, dict[str, Any]] = {
    "no categories": {"categories": []},
    "unknown category": {"categories": ["water", "dragons"]},
    "radius 0": {"radius_km": 0},
    "radius too big": {"radius_km": 5000},
    "capacity 0": {"capacity": 0},
    "malformed phone": {"phone": "not a phone"},
    "no phone": {"phone": None},
    "until before from": {"available_from": "2030-01-02T00:00:00Z", "available_until": "2030-01-01T00:00:00Z"},
    "until in the past": {"available_until": "2001-01-01T00:00:00Z"},
    "lat 91": {"lat": 91},
    "until in year 9999": {"available_until": "9999-12-31T23:59:59-05:00"},
    "NUL in name": {"name": "Иван\x00"},
}


@pytest.mark.parametrize("case", sorted(BAD_OFFERS))
def test_bad_offer_is_refused_with_one_shape(client: TestClient, db: Session, case: str) -> None:
    r = client.post("/api/offers", json={**OFFER, **BAD_OFFERS[case]})
    assert r.status_code == 422, r.text
    assert set(r.json()) == SHAPE
    assert _counts(db) == (0, 0, 0)


def test_every_kind_of_4xx_has_the_same_shape(client: TestClient, volunteer_headers: dict[str, str]) -> None:
    responses = {
        "unknown route": client.get("/api/nothing-here"),
        "wrong method": client.delete("/api/needs"),
        "no token": client.get("/api/needs"),
        "bad token": client.get("/api/needs", headers={"Authorization": "Bearer nope"}),
        "not a coordinator": client.get("/api/helpers", headers=volunteer_headers),
        "missing need": client.get("/api/needs/424242"),
        "path not an int": client.get("/api/needs/abc"),
        "validation": client.post("/api/needs", json={}),
    }
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {
        "unknown route": 404,
        "wrong method": 405,
        "no token": 401,
        "bad token": 401,
        "not a coordinator": 403,
        "missing need": 404,
        "path not an int": 422,
        "validation": 422,
    }
    for name, r in responses.items():
        assert set(r.json()) == SHAPE, name
        assert r.json()["status"] == r.status_code, name


def test_control_characters_in_forms_and_codes_are_refused_not_a_500(client: TestClient, db: Session) -> None:
    form = {"category": "water", "lat": "55", "lon": "40", "description": "a\x00b", "contact_phone": "+79161234567"}
    r = client.post("/need", data=form, follow_redirects=False)
    assert r.status_code == 422, r.text
    r = client.post("/offer", data={**OFFER, "categories": "water", "name": "x\x00"}, follow_redirects=False)
    assert r.status_code == 422, r.text
    assert _counts(db) == (0, 0, 0)
    assert client.get("/api/needs/code/AB%00").status_code == 404
    assert client.get("/status/AB%00").status_code == 404


def test_a_database_error_logs_no_personal_data(settings: Settings) -> None:
    """The engine hides statement parameters, so an error's message (which is logged) does not
    carry a phone or a name."""
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection, pytest.raises(DBAPIError) as caught:
            connection.execute(text("SELECT no_such_column, :phone"), {"phone": "+79161234567"})
    finally:
        engine.dispose()
    assert "no_such_column" in str(caught.value)
    assert "+79161234567" not in str(caught.value)


def test_pasted_line_breaks_are_kept_as_newlines(client: TestClient, volunteer_headers: dict[str, str]) -> None:
    """Word's vertical tab, a form feed, NEL and the Unicode separators are line breaks someone
    pasted, not junk: kept as newlines (a NUL or an escape is refused)."""
    text = "вода\x0bдвое детей\x0cтретий этаж\x85подъезд 2\u2028код 15\u2029спасибо\tи\u00a0ещё"
    r = client.post("/api/needs", json={**NEED, "description": text})
    assert r.status_code == 201, r.text
    stored = client.get(f"/api/needs/{r.json()['id']}", headers=volunteer_headers).json()
    assert stored["description"].split("\n") == [
        "вода",
        "двое детей",
        "третий этаж",
        "подъезд 2",
        "код 15",
        "спасибо\tи\u00a0ещё",
    ]
