"""The audit log: every status change with who made it and when."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.audit.models import AuditEvent
from aidmatch.config import Settings
from aidmatch.matches.models import Match
from aidmatch.needs.models import Need
from aidmatch.scheduler import batch_job, upkeep_job


def _events(db: Session, entity: str, entity_id: int | None = None) -> list[tuple[str, str]]:
    db.expire_all()
    stmt = select(AuditEvent.action, AuditEvent.actor).where(AuditEvent.entity == entity).order_by(AuditEvent.id)
    if entity_id is not None:
        stmt = stmt.where(AuditEvent.entity_id == entity_id)
    return [(a, b) for a, b in db.execute(stmt)]


def test_status_changes_are_logged_with_who_made_them(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    offers = [
        client.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": 1,
                "radius_km": 30,
                "lat": 55.0 + 0.01 * k,
                "lon": 40.0,
                "phone": f"+7916000000{k}",
            },
        ).json()
        for k in range(2)
    ]
    need = client.post("/api/needs", json={"category": "water", "quantity": 1, "lat": 55.0, "lon": 40.0}).json()
    assert _events(db, "need", need["id"]) == [("created", "anonymous")]
    (asked,) = client.get(f"/api/matches?need_id={need['id']}", headers=coordinator_headers).json()["items"]
    assert _events(db, "match", asked["id"]) == [("asked", "anonymous")]
    # The coordinator declines for the first helper; the second helper accepts with their link.
    assert client.post(f"/api/matches/{asked['id']}/decline", headers=coordinator_headers).status_code == 200
    assert _events(db, "match", asked["id"])[-1] == ("declined", "coordinator:test coordinator")
    items = client.get(f"/api/matches?need_id={need['id']}&status=notified", headers=coordinator_headers).json()[
        "items"
    ]
    second = items[0]
    owner = next(o for o in offers if o["id"] == second["offer_id"])
    link = owner["task_link"].rsplit("/", 1)[1]
    assert client.post(f"/api/matches/{second['id']}/accept", json={"link": link}).status_code == 200
    assert _events(db, "match", second["id"])[-1] == ("accepted", f"helper:{owner['helper_id']}")
    assert _events(db, "need", need["id"])[-1] == ("assigned", f"helper:{owner['helper_id']}")
    assert client.post(f"/api/matches/{second['id']}/complete", json={"link": link}).status_code == 200
    assert _events(db, "match", second["id"])[-1] == ("completed", f"helper:{owner['helper_id']}")
    assert _events(db, "need", need["id"])[-1] == ("fulfilled", f"helper:{owner['helper_id']}")
    # Expiry by the scheduler's upkeep.
    other = client.post("/api/needs", json={"category": "food", "lat": 56.0, "lon": 41.0}).json()
    stored = db.get(Need, other["id"])
    assert stored is not None
    assert stored.expires_at is not None
    state = client.app.state  # type: ignore[attr-defined]
    upkeep_job(
        sessions=state.sessionmaker,
        settings=settings,
        live=state.live_index,
        now=stored.expires_at + timedelta(seconds=1),
    )
    assert _events(db, "need", other["id"])[-1] == ("expired", "system:upkeep")
    # Emergency mode, and the log itself is for coordinators.
    client.post("/api/emergency", json={"enabled": True}, headers=coordinator_headers)
    assert _events(db, "emergency") == [("switched_on", "coordinator:test coordinator")]
    assert client.get("/api/audit").status_code == 401
    log = client.get(f"/api/audit?entity=match&entity_id={second['id']}", headers=coordinator_headers).json()
    assert [e["action"] for e in log["items"]] == ["completed", "accepted", "asked"]  # newest first
    assert all(e["at"] for e in log["items"])


def test_requests_withdrawn_by_a_merge_are_logged_each(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    client.post(
        "/api/offers",
        json={
            "categories": ["food"],
            "capacity": 5,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.0,
            "phone": "+79160000009",
        },
    )
    kept = client.post("/api/needs", json={"category": "food", "lat": 55.0, "lon": 40.0}).json()
    twin = client.post("/api/needs", json={"category": "food", "lat": 55.1, "lon": 40.0}).json()
    (asked,) = client.get(f"/api/matches?need_id={twin['id']}", headers=coordinator_headers).json()["items"]
    merged = client.post(f"/api/needs/{twin['id']}/merge", json={"into": kept["id"]}, headers=coordinator_headers)
    assert merged.status_code == 200
    assert _events(db, "match", asked["id"]) == [("asked", "anonymous"), ("cancelled", "coordinator:test coordinator")]
    detail = db.scalars(
        select(AuditEvent.detail).where(AuditEvent.entity == "match", AuditEvent.entity_id == asked["id"])
    ).all()[-1]
    assert detail == {"why": f"merged into need {kept['id']}"}
    (after,) = client.get(f"/api/matches?need_id={twin['id']}", headers=coordinator_headers).json()["items"]
    assert after["status"] == "cancelled"


def test_requests_made_by_a_batch_run_are_logged_each(client: TestClient, db: Session) -> None:
    needs = [
        client.post("/api/needs", json={"category": "water", "lat": 55.0 + 0.01 * k, "lon": 40.0}).json()
        for k in range(3)
    ]  # nobody to ask yet
    client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 3,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.0,
            "phone": "+79160000031",
        },
    )
    outcome = batch_job(sessions=client.app.state.sessionmaker, trigger="test", require_emergency=False)  # type: ignore[attr-defined]
    assert outcome.run is not None
    made = db.scalars(select(Match).where(Match.run_id == outcome.run.id)).all()
    assert sorted(m.need_id for m in made) == sorted(n["id"] for n in needs)
    for m in made:
        assert _events(db, "match", m.id) == [("asked", "system:test")]
