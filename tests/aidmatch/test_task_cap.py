"""A helper's cap of accepted tasks (``max_active_tasks``) holds whatever order their YES come in."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.enums import MatchStatus
from aidmatch.errors import ConflictError
from aidmatch.helpers import service as helpers_service
from aidmatch.helpers.models import Helper
from aidmatch.matches import service as matches_service
from aidmatch.matches.models import Match
from tests.aidmatch.test_sms_webhook import _text


def _two_requests_to_one_helper(client: TestClient, db: Session) -> tuple[int, list[int]]:
    """A helper (offer of 3 units) asked for two needs, then lowering their cap to one task."""
    offer = client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 3,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.02,
            "phone": "+79160000001",
        },
    ).json()
    for k in range(2):
        need = client.post("/api/needs", json={"category": "water", "lat": 55.0 + 0.01 * k, "lon": 40.0})
        assert need.status_code == 201, need.text
    requests = list(db.scalars(select(Match.id).where(Match.offer_id == offer["id"]).order_by(Match.id)))
    assert len(requests) == 2
    db.execute(update(Helper).where(Helper.id == offer["helper_id"]).values(max_active_tasks=1))
    db.commit()
    return offer["helper_id"], requests


def _accepted(db: Session, helper_id: int) -> int:
    db.expire_all()
    return (
        db.scalar(
            select(func.count(Match.id)).where(Match.helper_id == helper_id, Match.status == MatchStatus.accepted)
        )
        or 0
    )


def test_a_yes_beyond_the_helpers_cap_is_refused_with_why(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    helper_id, (first, second) = _two_requests_to_one_helper(client, db)
    matches_service.accept(session=db, match_id=first)
    db.commit()
    with pytest.raises(ConflictError, match="limit"):
        matches_service.accept(session=db, match_id=second)
    db.rollback()
    assert _accepted(db, helper_id) == 1
    assert db.get(Match, second).status is MatchStatus.notified  # type: ignore[union-attr]  # still theirs to take later
    # Over HTTP (a coordinator for a helper who phoned in): a 409 that says why.
    r = client.post(f"/api/matches/{second}/accept", headers=coordinator_headers)
    assert r.status_code == 409
    assert "limit" in r.json()["detail"]
    matches_service.complete(session=db, match_id=first)  # one done: room for the next
    db.commit()
    matches_service.accept(session=db, match_id=second)
    db.commit()
    assert _accepted(db, helper_id) == 1


def test_a_yes_by_sms_beyond_the_cap_says_so_and_keeps_the_request(sms: TestClient, db: Session) -> None:
    """The helper is told they are at their limit and how to get room, not that someone else took it."""
    helper_id, (first, second) = _two_requests_to_one_helper(sms, db)
    _text(sms, "+79160000001", f"ДА {first}")
    assert _accepted(db, helper_id) == 1
    reply = _text(sms, "+79160000001", f"ДА {second}")
    assert "предел" in reply, reply
    assert f"ДА {second}" in reply
    assert "занята" not in reply
    db.expire_all()
    assert db.get(Match, second).status is MatchStatus.notified  # type: ignore[union-attr]


def test_a_click_beyond_the_cap_shows_why_on_the_task_page(client: TestClient, db: Session) -> None:
    helper_id, (first, second) = _two_requests_to_one_helper(client, db)
    matches_service.accept(session=db, match_id=first)
    _, secret = helpers_service.new_link(session=db, helper_id=helper_id)
    db.commit()
    r = client.post(f"/tasks/{secret}/{second}/accept", follow_redirects=False)
    assert r.status_code == 303
    assert "done=limit" in r.headers["location"]
    page = client.get(r.headers["location"])
    assert "предел" in page.text
    assert "взял кто-то другой" not in page.text
    assert _accepted(db, helper_id) == 1


def test_two_yes_at_once_take_one_task_under_a_cap_of_one(client: TestClient, db: Session, sessions: Any) -> None:
    helper_id, requests = _two_requests_to_one_helper(client, db)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def yes(match_id: int) -> None:
        with sessions() as s:
            barrier.wait(5)
            try:
                matches_service.accept(session=s, match_id=match_id)
                s.commit()
                outcomes.append("accepted")
            except ConflictError:
                s.rollback()
                outcomes.append("refused")

    threads = [threading.Thread(target=yes, args=(m,)) for m in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["accepted", "refused"]
    assert _accepted(db, helper_id) == 1


@pytest.mark.parametrize("migrated_url", ["sqlite"], indirect=True)  # SQLite's write lock
def test_an_intake_group_asks_no_helper_past_their_cap_on_sqlite(
    client: TestClient, db: Session, sessions: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker: the group reads the helper's open tasks; another writer (the SMS path, a batch
    run) would commit a request to them before the group writes its own, unless the group holds
    the write lock from its reads on (SQLite; PostgreSQL's row reads are not locked: see README)."""
    from aidmatch.matches.live import LiveOfferIndex
    from aidmatch.needs import intake
    from aidmatch.needs.schemas import NeedIn

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
    db.execute(update(Helper).where(Helper.id == offer["helper_id"]).values(max_active_tasks=1))
    db.commit()
    real = intake.insert_needs
    other_wrote: list[bool] = []

    def meanwhile(session: Session, needs: Any) -> None:
        def other() -> None:  # another writer of the same process, on its own connection
            with sessions() as s:
                intake.intake_one(
                    session=s,
                    need_in=NeedIn(category="water", lat=55.01, lon=40.0),
                    settings=settings,
                    live=LiveOfferIndex(),
                )
                s.commit()
                other_wrote.append(True)

        t = threading.Thread(target=other)
        t.start()
        t.join(0.5)  # it waits for the group's write lock (or, before the fix, wrote its request)
        real(session, needs)

    monkeypatch.setattr(intake, "insert_needs", meanwhile)
    with sessions() as s:
        intake.intake_group(
            session=s, items=[NeedIn(category="water", lat=55.0, lon=40.0)], settings=settings, live=LiveOfferIndex()
        )
        s.commit()
    monkeypatch.undo()
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join(30)
    assert other_wrote == [True]
    db.expire_all()
    asked = db.scalar(
        select(func.count(Match.id)).where(
            Match.helper_id == offer["helper_id"], Match.status.in_([MatchStatus.proposed, MatchStatus.notified])
        )
    )
    assert asked == 1  # one request under a cap of one, whoever wrote first
