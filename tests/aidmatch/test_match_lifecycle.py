"""Accept, decline, complete: who may, what changes, and the last unit never goes twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlalchemy.orm import Session

from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus, NeedStatus
from aidmatch.matches.models import Match
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer

SHAPE = {"type", "title", "status", "detail", "errors"}


def _setup(
    client: TestClient, db: Session, *, helpers: int, quantity: int = 1
) -> tuple[int, list[dict[str, Any]], list[int]]:
    """One need and a proposed match from each of ``helpers`` offers (as escalation would make)."""
    need = client.post(
        "/api/needs",
        json={"category": "evacuation", "quantity": quantity, "urgency": "critical", "lat": 55.15, "lon": 40.56},
    ).json()
    offers = [
        client.post(
            "/api/offers",
            json={
                "categories": ["evacuation"],
                "capacity": 1,
                "radius_km": 40,
                "lat": 55.15 + 0.01 * k,
                "lon": 40.55,
                "phone": f"+7916{k:07d}",
            },
        ).json()
        for k in range(helpers)
    ]
    now = utcnow()
    ids = list(
        db.scalars(
            insert(Match).returning(Match.id, sort_by_parameter_order=True),
            [
                {
                    "need_id": need["id"],
                    "offer_id": o["id"],
                    "quantity": 1,
                    "distance_km": 1.0 * k,
                    "reason": "test",
                    "status": MatchStatus.proposed,
                    "created_at": now,
                    "updated_at": now,
                }
                for k, o in enumerate(offers)
            ],
        )
    )
    db.commit()
    return need["id"], offers, ids


def test_accept_takes_units_and_closes_the_need(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    need_id, offers, ids = _setup(client, db, helpers=2)
    r = client.post(f"/api/matches/{ids[0]}/accept", headers=coordinator_headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"
    db.expire_all()
    need = db.get(Need, need_id)
    offer = db.get(Offer, offers[0]["id"])
    assert need is not None
    assert offer is not None
    assert need.status is NeedStatus.assigned
    assert need.quantity_assigned == 1
    assert offer.capacity_used == 1
    again = client.post(f"/api/matches/{ids[0]}/accept", headers=coordinator_headers)
    assert again.status_code == 409
    assert set(again.json()) == SHAPE
    # The need is fully taken, so the other request for it was withdrawn in the same transaction.
    db.expire_all()
    assert db.get(Match, ids[1]).status is MatchStatus.cancelled  # type: ignore[union-attr]
    other = client.post(f"/api/matches/{ids[1]}/accept", headers=coordinator_headers)
    assert other.status_code == 409
    assert "cancelled" in other.json()["detail"]
    # Its helper's NO, late, is still recorded (so a give-back would not ask them again).
    late_no = client.post(f"/api/matches/{ids[1]}/decline", headers=coordinator_headers)
    assert (late_no.status_code, late_no.json()["status"]) == (200, "declined")
    assert client.post(f"/api/matches/{ids[1]}/decline", headers=coordinator_headers).status_code == 409
    assert client.post(f"/api/matches/{ids[1]}/complete", headers=coordinator_headers).status_code == 409
    done = client.post(f"/api/matches/{ids[0]}/complete", headers=coordinator_headers)
    assert done.json()["status"] == "completed"
    db.expire_all()
    assert db.get(Need, need_id).status is NeedStatus.fulfilled  # type: ignore[union-attr]


def test_who_may_act(client: TestClient, db: Session, volunteer_headers: dict[str, str]) -> None:
    _, offers, ids = _setup(client, db, helpers=2)
    assert client.post(f"/api/matches/{ids[0]}/accept").status_code == 401
    assert client.post(f"/api/matches/{ids[0]}/accept", headers=volunteer_headers).status_code == 403
    own = offers[0]["task_link"].rsplit("/", 1)[1]
    other = offers[1]["task_link"].rsplit("/", 1)[1]
    assert client.post(f"/api/matches/{ids[0]}/accept", json={"link": other}).status_code == 403
    ok = client.post(f"/api/matches/{ids[0]}/accept", json={"link": own})
    assert ok.status_code == 200
    assert client.post("/api/matches/999999/accept", json={"link": own}).status_code == 404


def test_listing_matches_is_for_coordinators(
    client: TestClient, db: Session, coordinator_headers: dict[str, str], volunteer_headers: dict[str, str]
) -> None:
    need_id, _, ids = _setup(client, db, helpers=3)
    assert client.get(f"/api/matches?need_id={need_id}").status_code == 401
    assert client.get(f"/api/matches?need_id={need_id}", headers=volunteer_headers).status_code == 403
    body = client.get(f"/api/matches?need_id={need_id}&limit=2", headers=coordinator_headers).json()
    assert body["total"] == 3
    assert [m["id"] for m in body["items"]] == ids[:2]
    assert client.get("/api/matches?status=accepted", headers=coordinator_headers).json()["total"] == 0
    assert client.get("/api/runs", headers=coordinator_headers).status_code == 200


def test_thirty_helpers_racing_for_one_unit_make_one_winner(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    need_id, offers, ids = _setup(client, db, helpers=30)
    with ThreadPoolExecutor(30) as pool:
        codes = list(
            pool.map(lambda i: client.post(f"/api/matches/{i}/accept", headers=coordinator_headers).status_code, ids)
        )
    assert codes.count(200) == 1, codes
    assert codes.count(409) == 29, codes
    db.expire_all()
    need = db.get(Need, need_id)
    assert need is not None
    assert need.quantity_assigned == 1
    used = [db.get(Offer, o["id"]) for o in offers]
    assert sum(o.capacity_used for o in used if o is not None) == 1
