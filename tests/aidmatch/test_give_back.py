"""A helper who accepted and cannot come after all gives the task back: its units return to the
need and the offer, the author is told, and the next helper is asked (API, SMS and the task page
all say it with "decline")."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aidmatch.audit.models import AuditEvent
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus, MessageStatus, NeedStatus, OfferStatus
from aidmatch.helpers.models import Helper
from aidmatch.matches import service as matches_service
from aidmatch.matches.models import Match
from aidmatch.messages import outbox
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message
from aidmatch.messages.outbox import drain
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from aidmatch.scheduler import upkeep_job
from notifications.ratelimit import TokenBucket
from notifications.senders import FakeSender

PHONE = "+79261234567"


def _helpers_at(client: TestClient, kms: list[float], capacity: int = 2) -> list[dict[str, Any]]:
    """Water helpers at these distances (km) east of (55.0, 40.0), radius 30 km."""
    out = []
    for i, km in enumerate(kms):
        r = client.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": capacity,
                "radius_km": 30,
                "lat": 55.0,
                "lon": 40.0 + km / 63.8,
                "phone": f"+7916000{i:04d}",
            },
        )
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def _asked(db: Session, need_id: int) -> list[tuple[int, int, str, str]]:
    db.expire_all()
    rows = db.execute(
        select(Offer.id, Match.quantity, Match.status, Match.reason)
        .join(Offer, Offer.id == Match.offer_id)
        .where(Match.need_id == need_id)
        .order_by(Match.id)
    )
    return [(o, q, s.value, reason.split(":")[0]) for o, q, s, reason in rows]


def _critical_need(client: TestClient, db: Session, **extra: Any) -> tuple[dict[str, Any], list[int]]:
    """A critical need for one unit of water at (55.0, 40.0), and its first wave's requests in id order."""
    body = {"category": "water", "quantity": 1, "urgency": "critical", "lat": 55.0, "lon": 40.0, **extra}
    need = client.post("/api/needs", json=body).json()
    return need, list(db.scalars(select(Match.id).where(Match.need_id == need["id"]).order_by(Match.id)))


def test_a_task_given_back_returns_its_units_tells_the_author_and_asks_the_next_helper(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    near, far = _helpers_at(client, [1, 3])
    need = client.post(
        "/api/needs", json={"category": "water", "quantity": 2, "lat": 55.0, "lon": 40.0, "contact_phone": PHONE}
    ).json()
    ((offer_id, _, _, _),) = _asked(db, need["id"])
    assert offer_id == near["id"]  # the nearest, for both units
    (m1,) = db.scalars(select(Match.id).where(Match.need_id == need["id"]))
    assert client.post(f"/api/matches/{m1}/accept", headers=coordinator_headers).status_code == 200
    r = client.post(f"/api/matches/{m1}/decline", headers=coordinator_headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "declined"
    db.expire_all()
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert (stored.status, stored.quantity_assigned) == (NeedStatus.open, 0)
    assert db.get(Offer, near["id"]).capacity_used == 0  # type: ignore[union-attr]
    # The next helper is asked for both units; the one who gave it back is not asked again.
    assert _asked(db, need["id"]) == [
        (near["id"], 2, "declined", "at intake"),
        (far["id"], 2, "notified", "after a decline"),
    ]
    told = db.scalars(select(Message).where(Message.idempotency_key == f"match:{m1}:given-back")).one()
    assert told.phone == PHONE
    assert need["code"] in told.body
    assert "не сможет" in told.body
    assert db.scalars(select(AuditEvent).where(AuditEvent.action == "given_back")).one().entity_id == m1
    # What was queued for the accept and no longer stands is not sent; the author hears the news.
    sender = FakeSender()
    state = client.app.state  # type: ignore[attr-defined]
    drain(sessions=state.sessionmaker, sender=sender, settings=settings, bucket=TokenBucket(100, burst=100))
    keys = {m["key"] for m in sender.sent}
    assert f"match:{m1}:given-back" in keys
    assert not keys & {f"match:{m1}:accepted:requester", f"match:{m1}:accepted:helper"}
    # Given back twice is a conflict; the units are not returned twice.
    assert client.post(f"/api/matches/{m1}/decline", headers=coordinator_headers).status_code == 409
    db.expire_all()
    assert db.get(Need, need["id"]).quantity_assigned == 0  # type: ignore[union-attr]
    assert db.get(Offer, near["id"]).capacity_used == 0  # type: ignore[union-attr]


def test_a_partly_taken_need_stays_partly_taken_and_the_other_helper_keeps_theirs(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    first, second = _helpers_at(client, [1, 2])
    need = client.post("/api/needs", json={"category": "water", "quantity": 5, "lat": 55.0, "lon": 40.0}).json()
    mine = {o: m for m, o in db.execute(select(Match.id, Match.offer_id).where(Match.need_id == need["id"]))}
    assert set(mine) == {first["id"], second["id"]}  # two units each; nobody has room for the fifth
    for m in mine.values():
        assert client.post(f"/api/matches/{m}/accept", headers=coordinator_headers).status_code == 200
    stored = db.get(Need, need["id"])
    assert stored is not None
    stored.expires_at = utcnow() - timedelta(minutes=1)  # past its expiry, not yet expired by upkeep
    db.commit()
    assert client.post(f"/api/matches/{mine[first['id']]}/decline", headers=coordinator_headers).status_code == 200
    db.expire_all()
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert (stored.status, stored.quantity_assigned) == (NeedStatus.partially_assigned, 2)
    assert stored.expires_at is not None
    assert stored.expires_at > utcnow() + timedelta(hours=1)  # a new search gets a new lifetime
    assert db.get(Match, mine[second["id"]]).status is MatchStatus.accepted  # type: ignore[union-attr]
    assert db.get(Offer, first["id"]).capacity_used == 0  # type: ignore[union-attr]
    assert db.get(Offer, second["id"]).capacity_used == 2  # type: ignore[union-attr]


def test_a_taken_need_past_its_expiry_given_back_gets_a_new_lifetime_instead_of_expiring(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    _helpers_at(client, [1])
    need = client.post(
        "/api/needs", json={"category": "water", "quantity": 1, "lat": 55.0, "lon": 40.0, "contact_phone": PHONE}
    ).json()
    (m1,) = db.scalars(select(Match.id).where(Match.need_id == need["id"]))
    assert client.post(f"/api/matches/{m1}/accept", headers=coordinator_headers).status_code == 200
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.expires_at is not None
    # Taken long ago: it did not expire, and its author was asked «помощь пришла?».
    long_ago = timedelta(hours=settings.need_expiry_hours + 1)
    stored.expires_at -= long_ago
    taken = db.get(Match, m1)
    assert taken is not None
    assert taken.responded_at is not None
    taken.responded_at -= long_ago
    db.commit()
    state = client.app.state  # type: ignore[attr-defined]
    report = upkeep_job(sessions=state.sessionmaker, settings=settings, live=state.live_index, now=stored.expires_at)
    assert report is not None
    assert report.reconfirm_requested == 1
    assert client.post(f"/api/matches/{m1}/decline", headers=coordinator_headers).status_code == 200
    db.expire_all()
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.status is NeedStatus.open
    assert stored.reconfirm_requested_at is None
    assert stored.expires_at is not None
    report = upkeep_job(sessions=state.sessionmaker, settings=settings, live=state.live_index, now=None)
    assert report is not None
    assert report.needs_expired == 0
    db.expire_all()
    assert db.get(Need, need["id"]).status is NeedStatus.open  # type: ignore[union-attr]


def test_a_give_back_and_an_accept_at_once_lose_no_unit(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    """The need is read under its lock (SQLite: the write lock): an accept of another unit that
    comes while a task is given back waits, then counts on what the give-back left."""
    a, b = _helpers_at(client, [1, 2], capacity=1)
    need = client.post("/api/needs", json={"category": "water", "quantity": 2, "lat": 55.0, "lon": 40.0}).json()
    mine = {o: m for m, o in db.execute(select(Match.id, Match.offer_id).where(Match.need_id == need["id"]))}
    assert client.post(f"/api/matches/{mine[a['id']]}/accept", headers=coordinator_headers).status_code == 200
    sessions = client.app.state.sessionmaker  # type: ignore[attr-defined]

    def accept_b() -> None:
        with sessions() as other:
            matches_service.accept(session=other, match_id=mine[b["id"]])
            other.commit()

    with ThreadPoolExecutor(1) as pool, sessions() as session:
        started: list[Future[None]] = []
        real = session.execute

        def execute(stmt: Any, *args: Any, **kw: Any) -> Any:
            if not started and getattr(stmt, "is_dml", False) and str(stmt).startswith("UPDATE matches"):
                # B accepts between the give-back's read of the need and its first write.
                started.append(pool.submit(accept_b))
                wait(started, timeout=2)
            return real(stmt, *args, **kw)

        session.execute = execute
        matches_service.decline(session=session, match_id=mine[a["id"]], settings=settings)
        session.commit()
        started[0].result(timeout=60)
    db.expire_all()
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert (stored.status, stored.quantity_assigned) == (NeedStatus.partially_assigned, 1)
    assert db.get(Match, mine[b["id"]]).status is MatchStatus.accepted  # type: ignore[union-attr]
    assert db.get(Offer, a["id"]).capacity_used == 0  # type: ignore[union-attr]
    assert db.get(Offer, b["id"]).capacity_used == 1  # type: ignore[union-attr]


def test_a_critical_need_given_back_starts_its_waves_again(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    # Wave 1 (5 km, 3 helpers) asks the three nearest; the fourth is only in wave 2 (15 km).
    near = _helpers_at(client, [1, 2, 3, 10], capacity=1)
    need, ids = _critical_need(client, db, contact_phone=PHONE)
    assert len(ids) == 3
    state = client.app.state  # type: ignore[attr-defined]
    drain(sessions=state.sessionmaker, sender=FakeSender(), settings=settings, bucket=TokenBucket(100, burst=100))
    assert client.post(f"/api/matches/{ids[0]}/accept", headers=coordinator_headers).status_code == 200
    assert [s for _, _, s, _ in _asked(db, need["id"])] == ["accepted", "cancelled", "cancelled"]
    assert client.post(f"/api/matches/{ids[0]}/decline", headers=coordinator_headers).status_code == 200
    db.expire_all()
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.status is NeedStatus.open
    assert stored.escalation_next_at is not None
    # The two whose requests the accept called off are asked again at once, by SMS.
    assert [s for _, _, s, _ in _asked(db, need["id"])] == ["declined", "notified", "notified"]
    again = db.scalars(select(Message).where(Message.idempotency_key.like("%:ask-again:%")).order_by(Message.id))
    assert [(m.match_id, m.idempotency_key) for m in again] == [(i, f"match:{i}:ask-again:{ids[0]}") for i in ids[1:]]
    state = client.app.state  # type: ignore[attr-defined]
    report = upkeep_job(sessions=state.sessionmaker, settings=settings, live=state.live_index, now=None)
    assert report is not None
    assert report.helpers_asked == 1
    asked = _asked(db, need["id"])
    assert asked[3:] == [(near[3]["id"], 1, "notified", "escalation")]
    # One of those asked again takes it.
    assert client.post(f"/api/matches/{ids[2]}/accept", headers=coordinator_headers).status_code == 200


def test_helpers_called_off_when_a_need_was_taken_are_asked_again_when_it_is_given_back(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    """A request the need itself called off (it was taken) is made again when it is given back,
    unless its helper can no longer take it; a request still in the outbox is not sent twice."""
    helpers = _helpers_at(client, [1, 2, 3, 4], capacity=1)
    need, _ = _critical_need(client, db)
    mine = {o: m for m, o in db.execute(select(Match.id, Match.offer_id).where(Match.need_id == need["id"]))}
    first, second, third = (mine[h["id"]] for h in helpers[:3])
    sender = FakeSender()
    state = client.app.state  # type: ignore[attr-defined]

    def send() -> list[str]:
        before = len(sender.sent)
        drain(sessions=state.sessionmaker, sender=sender, settings=settings, bucket=TokenBucket(100, burst=100))
        return sorted(m["key"] for m in sender.sent[before:] if not m["key"].endswith(":signed-up"))

    assert send() == sorted(f"match:{m}:wave:1" for m in (first, second, third))
    # The fourth helper's request (made by hand here) was called off before the outbox sent it.
    (helper4,) = db.scalars(select(Offer.helper_id).where(Offer.id == helpers[3]["id"]))
    assert client.post(f"/api/matches/{first}/accept", headers=coordinator_headers).status_code == 200
    far = client.post("/api/needs", json={"category": "water", "quantity": 1, "lat": 56.0, "lon": 40.0}).json()
    fourth = Match(
        need_id=need["id"], offer_id=helpers[3]["id"], helper_id=helper4, distance_km=4.0, status=MatchStatus.cancelled
    )
    db.add(fourth)
    db.flush()
    messages_service.queue(
        session=db,
        phone="+79160000003",
        body="СРОЧНО",
        language="ru",
        idempotency_key=f"match:{fourth.id}:wave:1",
        need_id=need["id"],
        match_id=fourth.id,
    )
    # The second helper paused their offer; the third is at their cap of open tasks.
    paused = db.get(Offer, helpers[1]["id"])
    assert paused is not None
    paused.status = OfferStatus.paused
    (helper3,) = db.scalars(select(Offer.helper_id).where(Offer.id == helpers[2]["id"]))
    db.get(Helper, helper3).max_active_tasks = 1  # type: ignore[union-attr]
    db.add(
        Match(
            need_id=far["id"],
            offer_id=helpers[2]["id"],
            helper_id=helper3,
            distance_km=1.0,
            status=MatchStatus.notified,
        )
    )
    db.commit()
    assert client.post(f"/api/matches/{first}/decline", headers=coordinator_headers).status_code == 200
    db.expire_all()
    assert {m: db.get(Match, m).status for m in (second, third, fourth.id)} == {  # type: ignore[union-attr]
        second: MatchStatus.cancelled,
        third: MatchStatus.cancelled,
        fourth.id: MatchStatus.notified,
    }
    # Its request goes out once, as it was queued, not a second time under a new key.
    assert send() == [f"match:{fourth.id}:wave:1"]
    assert client.post(f"/api/matches/{fourth.id}/accept", headers=coordinator_headers).status_code == 200


def test_requests_asked_again_outlive_the_restarted_waves_when_nobody_new_is_near(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    """The waves start again and find nobody new: their end must not time out the requests just
    made again (their helpers got an urgent SMS a moment ago)."""
    _helpers_at(client, [1, 2, 3], capacity=1)  # all three in wave 1; nobody else anywhere
    need, ids = _critical_need(client, db, contact_phone=PHONE)
    assert client.post(f"/api/matches/{ids[0]}/accept", headers=coordinator_headers).status_code == 200
    assert client.post(f"/api/matches/{ids[0]}/decline", headers=coordinator_headers).status_code == 200
    state = client.app.state  # type: ignore[attr-defined]
    upkeep_job(sessions=state.sessionmaker, settings=settings, live=state.live_index, now=None)
    assert [s for _, _, s, _ in _asked(db, need["id"])] == ["declined", "notified", "notified"]
    # They time out as any request does, counted from when they were asked again.
    later = utcnow() + timedelta(seconds=settings.match_response_timeout_s + 1)
    report = upkeep_job(sessions=state.sessionmaker, settings=settings, live=state.live_index, now=later)
    assert report is not None
    assert report.matches_timed_out == 2
    assert client.post(f"/api/matches/{ids[1]}/accept", headers=coordinator_headers).status_code == 409


def test_a_request_the_outbox_is_withdrawing_while_the_task_is_given_back_is_sent_anew(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    """A drain claims the other helpers' queued requests as withdrawn (the need was taken) and
    commits after the give-back read them: the give-back waits for it and queues new ones, so the
    helpers asked again are told."""
    _helpers_at(client, [1, 2, 3], capacity=1)
    need, ids = _critical_need(client, db)
    # The first helper answers before the outbox reached the others' wave SMS.
    assert client.post(f"/api/matches/{ids[0]}/accept", headers=coordinator_headers).status_code == 200
    sessions = client.app.state.sessionmaker  # type: ignore[attr-defined]
    claimed, go_on = threading.Event(), threading.Event()

    def claim() -> None:
        with sessions() as session:
            real = session.commit

            def commit() -> None:
                claimed.set()
                go_on.wait(20)
                real()

            session.commit = commit
            outbox._claim(session, 100, utcnow(), settings, outbox.DrainReport())

    def give_back() -> None:
        with sessions() as session:
            matches_service.decline(session=session, match_id=ids[0], settings=settings)
            session.commit()

    with ThreadPoolExecutor(2) as pool:
        drained = pool.submit(claim)
        assert claimed.wait(20)
        given = pool.submit(give_back)
        time.sleep(1.0)  # the give-back reaches the messages the drain holds
        go_on.set()
        drained.result(timeout=60)
        given.result(timeout=60)
    assert [s for _, _, s, _ in _asked(db, need["id"])] == ["declined", "notified", "notified"]
    for m in ids[1:]:
        statuses = db.scalars(select(Message.status).where(Message.match_id == m)).all()
        assert MessageStatus.queued in statuses, (m, statuses)


def test_a_helper_who_said_no_after_the_need_was_taken_is_not_asked_again(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    _helpers_at(client, [1, 2, 3], capacity=1)
    need, ids = _critical_need(client, db)
    assert client.post(f"/api/matches/{ids[0]}/accept", headers=coordinator_headers).status_code == 200
    no = client.post(f"/api/matches/{ids[1]}/decline", headers=coordinator_headers)  # their NO came late
    assert no.status_code == 200, no.text
    assert no.json()["status"] == "declined"
    assert client.post(f"/api/matches/{ids[0]}/decline", headers=coordinator_headers).status_code == 200
    assert [s for _, _, s, _ in _asked(db, need["id"])] == ["declined", "declined", "notified"]


def test_a_give_back_that_failed_leaves_the_live_index_as_the_database(
    client: TestClient, db: Session, sessions: Any, settings: Settings
) -> None:
    """A decline gives the units back and refreshes the worker's live index inside its transaction;
    when that transaction is rolled back (a lost commit, a deadlock), the index must not keep
    the units it never gave back, or every later need near the helper asks a full offer."""
    from aidmatch.matches.live import LiveOfferIndex
    from aidmatch.needs.intake import intake_one
    from aidmatch.needs.schemas import NeedIn

    (offer,) = _helpers_at(client, [5], capacity=1)
    live = LiveOfferIndex()
    with sessions() as s:
        intake_one(session=s, need_in=NeedIn(category="water", lat=55.0, lon=40.0), settings=settings, live=live)
    (first,) = db.scalars(select(Match.id).where(Match.offer_id == offer["id"]))
    matches_service.accept(session=db, match_id=first)
    db.commit()
    with sessions() as s:  # the helper accepted a while ago; the index has seen it
        s.execute(update(Offer).where(Offer.id == offer["id"]).values(updated_at=utcnow() - timedelta(minutes=5)))
        s.commit()
        live.refresh(session=s, now=utcnow())
    with sessions() as s:  # "I cannot come after all" — and then the request fails
        matches_service.decline(session=s, match_id=first, live=live, settings=settings)
        s.rollback()
    db.expire_all()
    full = db.get(Offer, offer["id"])
    assert full is not None
    assert full.capacity_used == 1  # still full in the database
    with sessions() as s:
        intake_one(session=s, need_in=NeedIn(category="water", lat=55.01, lon=40.0), settings=settings, live=live)
    asked = db.scalars(
        select(Match).where(Match.id != first, Match.status.in_([MatchStatus.proposed, MatchStatus.notified]))
    ).all()
    assert asked == []  # the full offer is not asked for a unit it does not have
