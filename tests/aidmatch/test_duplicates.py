"""Duplicates at intake: the same phone, category and place within 24 h bump the open need."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aidmatch.enums import MatchStatus, NeedStatus
from aidmatch.matches.models import Match
from aidmatch.needs.models import Need

PHONE = "+79261234567"


def _post(client: TestClient, **kw: Any) -> Any:
    body = {"category": "water", "quantity": 2, "lat": 55.0, "lon": 40.0, "contact_phone": PHONE, **kw}
    return client.post("/api/needs", json=body)


def test_a_repeat_bumps_the_open_need_and_keeps_its_text(client: TestClient, db: Session) -> None:
    first = _post(client, description="нет воды")
    assert first.status_code == 201
    assert first.json()["merged"] is False
    again = _post(client, lat=55.003, description="всё ещё нет воды, дети", urgency="urgent", quantity=3)
    assert again.status_code == 200
    assert again.json()["merged"] is True
    assert again.json()["id"] == first.json()["id"]
    assert db.scalar(select(func.count(Need.id))) == 1
    need = db.get(Need, first.json()["id"])
    assert need is not None
    assert "нет воды" in (need.description or "")
    assert "всё ещё нет воды, дети" in (need.description or "")
    assert need.urgency.value == "urgent"  # raised, never lowered
    assert need.quantity == 3


def test_what_is_not_a_repeat(client: TestClient, db: Session) -> None:
    base = _post(client).json()
    assert _post(client, category="food").json()["id"] != base["id"]  # another category
    assert _post(client, lat=55.01).json()["id"] != base["id"]  # 1.1 km away
    assert _post(client, contact_phone="+79261234568").json()["id"] != base["id"]  # another phone
    assert client.post("/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.0}).json()["id"] != base["id"]
    old = db.get(Need, base["id"])
    assert old is not None
    old.created_at = old.created_at - timedelta(hours=25)
    db.commit()
    assert _post(client).json()["id"] != base["id"]  # more than a day later


def test_coordinators_merge_duplicates(
    client: TestClient, db: Session, coordinator_headers: dict[str, str], volunteer_headers: dict[str, str]
) -> None:
    client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 5,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.05,
            "phone": "+79160000001",
        },
    )
    keep = _post(client, description="на Ленина").json()
    repeat = _post(client, contact_phone="+79990000000", description="соседи: нет воды").json()
    assert client.post(f"/api/needs/{repeat['id']}/merge", json={"into": keep["id"]}).status_code == 401
    r = client.post(f"/api/needs/{repeat['id']}/merge", json={"into": keep["id"]}, headers=volunteer_headers)
    assert r.status_code == 403
    merged = client.post(f"/api/needs/{repeat['id']}/merge", json={"into": keep["id"]}, headers=coordinator_headers)
    assert merged.status_code == 200
    assert merged.json()["status"] == "duplicate"
    assert merged.json()["duplicate_of_id"] == keep["id"]
    db.expire_all()
    kept = db.get(Need, keep["id"])
    assert kept is not None
    assert "соседи: нет воды" in (kept.description or "")
    pending = db.scalars(select(Match).where(Match.need_id == repeat["id"])).all()
    assert all(m.status is MatchStatus.cancelled for m in pending)
    again = client.post(f"/api/needs/{repeat['id']}/merge", json={"into": keep["id"]}, headers=coordinator_headers)
    assert again.status_code == 409
    self_merge = client.post(f"/api/needs/{keep['id']}/merge", json={"into": keep["id"]}, headers=coordinator_headers)
    assert self_merge.status_code == 422
    assert db.get(Need, keep["id"]).status in (NeedStatus.open, NeedStatus.partially_assigned)  # type: ignore[union-attr]
