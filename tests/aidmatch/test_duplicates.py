"""Duplicates at intake: the same phone, category and place within 24 h bump the open need."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus, NeedStatus
from aidmatch.errors import ConflictError
from aidmatch.matches import proposals
from aidmatch.matches.models import Match
from aidmatch.messages.models import Message
from aidmatch.needs import service as needs_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer

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


def _helpers_at(client: TestClient, kms: list[float], first: int = 0) -> list[int]:
    """One water offer of one unit per distance (km east of the need's place); their helper ids."""
    ids = []
    for i, km in enumerate(kms, start=first):
        r = client.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": 1,
                "radius_km": 30,
                "lat": 55.0,
                "lon": 40.0 + km / 63.8,  # ~63.8 km per degree of longitude at 55° N
                "phone": f"+7916000{i:04d}",
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["helper_id"])
    return ids


def _asked(db: Session, need_id: int) -> list[tuple[int, int, str, str]]:
    """The need's requests in order: (helper, units, status, why asked)."""
    db.expire_all()
    rows = db.execute(
        select(Offer.helper_id, Match.quantity, Match.status, Match.reason)
        .join(Offer, Offer.id == Match.offer_id)
        .where(Match.need_id == need_id)
        .order_by(Match.id)
    )
    return [(h, q, status.value, reason.split(":")[0]) for h, q, status, reason in rows]


def test_a_repeat_asking_for_more_asks_the_next_helpers_for_what_nobody_holds(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    h1, h2, h3 = _helpers_at(client, [1, 2, 3])
    first = _post(client, quantity=1).json()
    assert _asked(db, first["id"]) == [(h1, 1, "notified", "at intake")]
    # Two more units: the next two helpers, not the one asked already (still waiting for an answer).
    more = _post(client, quantity=3, description="нужно 3")
    assert more.status_code == 200, more.text
    assert more.json()["merged"] is True
    assert more.json()["helpers_in_range"] == 2  # found beyond the one asked before
    assert _asked(db, first["id"]) == [
        (h1, 1, "notified", "at intake"),
        (h2, 1, "notified", "after a repeat"),
        (h3, 1, "notified", "after a repeat"),
    ]
    # "Still needed" with nothing more: every unit awaits an answer, nobody else is asked.
    assert _post(client, quantity=3).json()["merged"] is True
    assert len(_asked(db, first["id"])) == 3
    # The second helper says no while nobody else is in range; a helper registers later: the next
    # repeat asks the newcomer for that unit, and never the one who said no.
    (m2,) = db.scalars(
        select(Match.id)
        .join(Offer, Offer.id == Match.offer_id)
        .where(Match.need_id == first["id"], Offer.helper_id == h2)
    )
    assert client.post(f"/api/matches/{m2}/decline", headers=coordinator_headers).status_code == 200
    assert len(_asked(db, first["id"])) == 3
    (h4,) = _helpers_at(client, [4], first=3)
    assert _post(client, quantity=3).json()["merged"] is True
    asked = _asked(db, first["id"])
    assert asked[1] == (h2, 1, "declined", "after a repeat")
    assert asked[3] == (h4, 1, "notified", "after a repeat")
    assert len(asked) == 4
    assert _post(client, quantity=3).json()["merged"] is True
    assert len(_asked(db, first["id"])) == 4  # everyone in range was asked once
    # The helpers asked after the repeats got their requests by SMS, like those asked at intake.
    texts = db.scalars(select(Message.phone).where(Message.need_id == first["id"], Message.match_id.is_not(None)))
    assert sorted(texts) == sorted(f"+7916000{i:04d}" for i in range(4))


def test_still_needed_asks_a_helper_who_came_since_for_what_nobody_holds(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    (h1,) = _helpers_at(client, [1])
    need = _post(client, quantity=1).json()
    (m1,) = db.scalars(select(Match.id).where(Match.need_id == need["id"]))
    assert client.post(f"/api/matches/{m1}/decline", headers=coordinator_headers).status_code == 200
    assert _asked(db, need["id"]) == [(h1, 1, "declined", "at intake")]  # and nobody else in range
    (h2,) = _helpers_at(client, [2], first=1)
    r = client.post(f"/api/needs/code/{need['code']}/confirm")
    assert r.status_code == 200, r.text
    assert _asked(db, need["id"])[1:] == [(h2, 1, "notified", "still needed")]
    # Confirmed again while that request waits: nothing more to ask for.
    assert client.post(f"/api/needs/{need['id']}/confirm", headers=coordinator_headers).status_code == 200
    assert len(_asked(db, need["id"])) == 2


def test_still_needed_reads_the_need_as_it_is_now_not_as_it_was_loaded(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    h1, _ = _helpers_at(client, [1, 2])
    need = _post(client, quantity=1).json()
    (m1,) = db.scalars(select(Match.id).where(Match.need_id == need["id"]))
    state = client.app.state  # type: ignore[attr-defined]
    with state.sessionmaker() as session:
        loaded = needs_service.get(session=session, need_id=need["id"])  # open, nothing taken
        # Meanwhile the helper asked takes the one unit (another request, committed).
        assert client.post(f"/api/matches/{m1}/accept", headers=coordinator_headers).status_code == 200
        needs_service.reconfirm(session=session, need=loaded, settings=settings)
        proposals.propose_still_needed(session=session, need=loaded, live=state.live_index, now=utcnow())
        session.commit()
    # Nothing is left to ask for: the second helper is not asked for a unit already taken.
    assert _asked(db, need["id"]) == [(h1, 1, "accepted", "at intake")]
    db.expire_all()
    assert db.get(Need, need["id"]).status is NeedStatus.assigned  # type: ignore[union-attr]


def test_a_repeat_of_a_need_helpers_took_meanwhile_is_a_new_need(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    _helpers_at(client, [1])
    need = _post(client, quantity=1).json()
    (m1,) = db.scalars(select(Match.id).where(Match.need_id == need["id"]))
    state = client.app.state  # type: ignore[attr-defined]
    with state.sessionmaker() as session:
        read_before = needs_service.open_needs_of(session, PHONE)  # the need is open when read
        assert [n.id for n in read_before] == [need["id"]]
        assert client.post(f"/api/matches/{m1}/accept", headers=coordinator_headers).status_code == 200
        found = needs_service.find_repeated(
            session, open_needs=read_before, category=Category.water, lat=55.0, lon=40.0, now=utcnow()
        )
        assert found is None  # taken all since: not merged into
        assert read_before == []
    again = _post(client, quantity=1)
    assert again.status_code == 201
    assert again.json()["merged"] is False


def test_two_coordinators_merging_two_needs_into_each_other_leave_one_standing(
    client: TestClient, db: Session, sessions: Any
) -> None:
    """Each reads both needs open; the first merge commits; the second, judged on the needs as
    they are when it locks them, is refused: one need stays open, not both closed."""
    a = _post(client).json()
    b = _post(client, contact_phone="+79990000001").json()
    with sessions() as other:
        a_there, b_there = other.get(Need, a["id"]), other.get(Need, b["id"])  # read by the other request
        assert a_there is not None
        assert b_there is not None
        first_a, first_b = db.get(Need, a["id"]), db.get(Need, b["id"])
        assert first_a is not None
        assert first_b is not None
        needs_service.mark_duplicate(session=db, need=first_a, of=first_b)
        db.commit()
        with pytest.raises(ConflictError, match="itself a duplicate"):
            needs_service.mark_duplicate(session=other, need=b_there, of=a_there)
        other.rollback()
    db.expire_all()
    statuses = {n.id: n.status for n in db.scalars(select(Need).where(Need.id.in_([a["id"], b["id"]])))}
    assert statuses == {a["id"]: NeedStatus.duplicate, b["id"]: NeedStatus.open}


def test_a_need_is_merged_only_into_one_that_stands_of_its_category(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    live = _post(client, urgency="critical").json()
    for status in (NeedStatus.cancelled, NeedStatus.fulfilled, NeedStatus.expired):
        closed = _post(client, contact_phone=f"+7999000{len(status.value):04d}").json()
        db.get(Need, closed["id"]).status = status  # type: ignore[union-attr]
        db.commit()
        r = client.post(f"/api/needs/{live['id']}/merge", json={"into": closed["id"]}, headers=coordinator_headers)
        assert r.status_code == 409, r.text
        assert status.value in r.json()["detail"]
    stale = _post(client, contact_phone="+79990000100").json()
    db.get(Need, stale["id"]).expires_at = utcnow() - timedelta(minutes=1)  # type: ignore[union-attr]
    db.commit()
    r = client.post(f"/api/needs/{live['id']}/merge", json={"into": stale["id"]}, headers=coordinator_headers)
    assert r.status_code == 409
    assert "expired" in r.json()["detail"]
    food = _post(client, category="food", contact_phone="+79990000101").json()
    r = client.post(f"/api/needs/{live['id']}/merge", json={"into": food["id"]}, headers=coordinator_headers)
    assert r.status_code == 422
    assert "one category" in r.json()["detail"]
    db.expire_all()
    assert db.get(Need, live["id"]).status is NeedStatus.open  # type: ignore[union-attr]  # nothing lost


def test_the_need_kept_takes_the_higher_urgency_and_quantity(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    keep = _post(client, quantity=2, urgency="normal").json()
    repeat = _post(client, quantity=7, urgency="critical", contact_phone="+79990000002").json()
    r = client.post(f"/api/needs/{repeat['id']}/merge", json={"into": keep["id"]}, headers=coordinator_headers)
    assert r.status_code == 200, r.text
    db.expire_all()
    kept = db.get(Need, keep["id"])
    assert kept is not None
    assert (kept.urgency.value, kept.quantity) == ("critical", 7)
    assert kept.escalation_next_at is not None  # its waves start at the next upkeep pass
