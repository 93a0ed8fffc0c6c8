"""The upkeep pass and the answers it meets: it locks the needs it will write before any match or
offer, the order an accept takes them in, so the two queue instead of deadlocking (PostgreSQL
breaks a deadlock by failing one of them: a helper's YES or the whole pass)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus, NeedStatus, OfferStatus
from aidmatch.errors import ConflictError
from aidmatch.matches import service as matches_service
from aidmatch.matches.models import Match
from aidmatch.matches.upkeep import run_upkeep
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer


def test_an_accept_during_upkeep_of_an_expiring_offer_waits_instead_of_deadlocking(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """The pass expires an offer (cancelling its request) and asks the request's need «still
    needed?»; the helper accepts that request meanwhile. The accept waits for the pass, then finds
    the request withdrawn: a conflict, not a deadlock that fails one of the two."""
    offer = client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 1,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.02,
            "phone": "+79160000001",
        },
    ).json()
    need = client.post("/api/needs", json={"category": "water", "quantity": 1, "lat": 55.0, "lon": 40.0}).json()
    (match_id,) = db.scalars(select(Match.id).where(Match.need_id == need["id"]))
    # An hour on, the offer is past its availability and the need within its «still needed?» window;
    # now, the helper may still accept.
    later = utcnow() + timedelta(hours=1)
    stored_offer = db.get(Offer, offer["id"])
    stored_need = db.get(Need, need["id"])
    assert stored_offer is not None
    assert stored_need is not None
    stored_offer.available_until = later - timedelta(minutes=30)
    stored_need.expires_at = later + timedelta(hours=settings.need_reconfirm_before_hours / 2)
    db.commit()
    sessions = client.app.state.sessionmaker  # type: ignore[attr-defined]

    def accept() -> None:
        with sessions() as other:
            try:
                matches_service.accept(session=other, match_id=match_id)
            except ConflictError:
                other.rollback()
                raise
            other.commit()

    with ThreadPoolExecutor(1) as pool, sessions() as session:
        started: list[Future[None]] = []
        real = session.execute

        def execute(stmt: Any, *args: Any, **kw: Any) -> Any:
            result = real(stmt, *args, **kw)
            if not started and getattr(stmt, "is_dml", False) and str(stmt).startswith("UPDATE matches"):
                # The pass has closed the expiring offer's request: the helper accepts it now.
                started.append(pool.submit(accept))
                wait(started, timeout=2)
            return result

        session.execute = execute
        report = run_upkeep(session=session, settings=settings, live=client.app.state.live_index, now=later)  # type: ignore[attr-defined]
        session.commit()
        assert started, "the pass closed no request"
        with pytest.raises(ConflictError, match="no longer open"):
            started[0].result(timeout=60)
    assert (report.offers_expired, report.reconfirm_requested) == (1, 1)
    db.expire_all()
    assert db.get(Match, match_id).status is MatchStatus.cancelled  # type: ignore[union-attr]
    assert db.get(Offer, offer["id"]).status is OfferStatus.expired  # type: ignore[union-attr]
    assert db.get(Offer, offer["id"]).capacity_used == 0  # type: ignore[union-attr]


def test_a_decline_during_upkeep_of_an_expiring_offer_does_not_deadlock(
    client: TestClient, db: Session, settings: Settings
) -> None:
    """The helper says no (their request closes, the next helper is asked: a new match, whose
    foreign key share-locks the need) while the pass holds the need and reaches that request: the
    pass takes the need FOR NO KEY UPDATE, which a foreign-key check does not wait for."""
    offers = [
        client.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": 1,
                "radius_km": 30,
                "lat": 55.0,
                "lon": 40.0 + km / 63.8,
                "phone": f"+7916000000{km}",
            },
        ).json()
        for km in (1, 2)
    ]
    need = client.post("/api/needs", json={"category": "water", "quantity": 1, "lat": 55.0, "lon": 40.0}).json()
    (match_id,) = db.scalars(select(Match.id).where(Match.need_id == need["id"]))
    later = utcnow() + timedelta(hours=1)
    db.get(Offer, offers[0]["id"]).available_until = later - timedelta(minutes=30)  # type: ignore[union-attr]
    db.get(Need, need["id"]).expires_at = later + timedelta(hours=settings.need_reconfirm_before_hours / 2)  # type: ignore[union-attr]
    db.commit()
    state = client.app.state  # type: ignore[attr-defined]
    sessions = state.sessionmaker
    declined, locked = threading.Event(), threading.Event()

    def decline() -> None:
        with sessions() as other:
            real = other.execute

            def execute(stmt: Any, *args: Any, **kw: Any) -> Any:
                result = real(stmt, *args, **kw)
                if not declined.is_set() and str(stmt).startswith("UPDATE matches"):
                    declined.set()  # the request is closed; the pass runs now
                    locked.wait(5)
                return result

            other.execute = execute
            matches_service.decline(session=other, match_id=match_id, live=state.live_index, settings=settings)
            other.commit()

    with ThreadPoolExecutor(1) as pool, sessions() as session:
        done = pool.submit(decline)
        assert declined.wait(10)
        real = session.execute

        def execute(stmt: Any, *args: Any, **kw: Any) -> Any:
            result = real(stmt, *args, **kw)
            if "FOR UPDATE" in str(stmt):
                locked.set()  # the pass holds the need: the decline goes on
            return result

        session.execute = execute
        run_upkeep(session=session, settings=settings, live=state.live_index, now=later)
        session.commit()
        done.result(timeout=60)
    db.expire_all()
    statuses = dict(db.execute(select(Match.offer_id, Match.status).where(Match.need_id == need["id"])).tuples().all())
    assert statuses[offers[0]["id"]] is MatchStatus.declined
    assert offers[1]["id"] in statuses  # the next helper was asked (the pass, an hour "later", may time it out)


def test_an_accept_of_a_request_the_pass_times_out_waits_instead_of_deadlocking(
    client: TestClient, db: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass gives an expired need's accepted unit back to an offer (locking it), then times out
    a late request to the same offer, which its helper is accepting just then (need, request, then
    the offer). The pass locks the late request's need first, so the accept waits for the pass
    (or the pass for the accept) instead of the two deadlocking."""
    offer = client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 2,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.02,
            "phone": "+79160000001",
        },
    ).json()
    first = client.post("/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.0}).json()
    second = client.post("/api/needs", json={"category": "water", "lat": 55.01, "lon": 40.0}).json()
    m1 = db.scalars(select(Match.id).where(Match.need_id == first["id"])).one()
    m2 = db.scalars(select(Match.id).where(Match.need_id == second["id"])).one()
    matches_service.accept(session=db, match_id=m1)
    db.commit()
    now = utcnow()
    stored = db.get(Need, first["id"])
    assert stored is not None
    stored.quantity, stored.status = 2, NeedStatus.partially_assigned  # one more unit still wanted…
    stored.expires_at = now - timedelta(minutes=1)  # …and it expires now: its accepted unit goes back
    request = db.get(Match, m2)
    assert request is not None
    request.notified_at = now - timedelta(seconds=settings.match_response_timeout_s + 60)  # late
    db.commit()
    sessions = client.app.state.sessionmaker  # type: ignore[attr-defined]
    accepted = threading.Event()

    def accept() -> None:
        with sessions() as other:
            try:
                matches_service.accept(session=other, match_id=m2)
            except ConflictError:  # the pass timed it out first
                other.rollback()
                return
            other.commit()
            accepted.set()

    from aidmatch.matches import upkeep

    real = upkeep.time_out_matches

    def time_out_matches(*args: Any) -> None:
        # The unit is back on the offer; the helper's YES comes now and gets as far as it can.
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(accept)
            wait([done], timeout=1)
            real(*args)
            session.commit()  # the pass ends here for the accept's sake: let it go on
            done.result(timeout=60)

    monkeypatch.setattr(upkeep, "time_out_matches", time_out_matches)
    with sessions() as session:
        run_upkeep(session=session, settings=settings, live=client.app.state.live_index, now=now)  # type: ignore[attr-defined]
        session.commit()
    db.expire_all()
    status = db.get(Match, m2).status  # type: ignore[union-attr]
    # Either order is right: accepted before the pass, or timed out by it and the YES refused.
    assert status is (MatchStatus.accepted if accepted.is_set() else MatchStatus.timed_out)
    assert db.get(Offer, offer["id"]).capacity_used == (1 if accepted.is_set() else 0)  # type: ignore[union-attr]
