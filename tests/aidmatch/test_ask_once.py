"""A helper is asked about a need once, also when two transactions pick the same pair at once.

The code reads the pairs asked before; the database keeps the rule when that read is stale (another
worker's escalation wave or decline committed in between): ``uq_matches_need_id_helper_id`` and
inserts that skip an existing pair, with no audit row and no SMS for the skipped one.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aidmatch import migrate
from aidmatch.audit.models import AuditEvent
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.enums import Language, MatchStatus, NeedStatus, OfferStatus, Source, Urgency
from aidmatch.helpers.models import Helper
from aidmatch.main import create_app
from aidmatch.matches import proposals, service
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.models import Match
from aidmatch.messages.models import Message
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory
from geo.geocoding import GazetteerGeocoder
from tests.databases import fresh_postgres_database


def _need(client: TestClient, **kw: Any) -> int:
    body = {"category": "water", "quantity": 2, "urgency": "normal", "lat": 55.15, "lon": 40.55, **kw}
    r = client.post("/api/needs", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _offer(client: TestClient, phone: str, **kw: Any) -> int:
    body = {"categories": ["water"], "capacity": 2, "radius_km": 30, "lat": 55.15, "lon": 40.6, "phone": phone, **kw}
    r = client.post("/api/offers", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _asks_of(db: Session, need_id: int, helper_id: int) -> list[Match]:
    return list(db.scalars(select(Match).where(Match.need_id == need_id, Match.helper_id == helper_id)))


def test_a_batch_run_with_a_stale_read_of_the_asked_pairs_asks_nobody_twice(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Needs first, then helpers: nobody is asked at intake, the batch run has everything to do.
    needs = [_need(client, lat=55.15 + 0.01 * k) for k in range(3)]
    offers = [_offer(client, f"+7916000000{k}", lat=55.15 + 0.01 * k) for k in range(3)]
    helper_of = {o.id: o.helper_id for o in db.scalars(select(Offer))}
    need, offer = needs[0], offers[0]
    helper = helper_of[offer]
    real = proposals.asked_pairs
    reads: list[np.ndarray] = []

    def stale(session: Session) -> np.ndarray:
        # The run reads the pairs before it solves and again before it writes; between the two another
        # worker's escalation asks this helper about this need, and the second read still misses it
        # (here the row is written in the same transaction: it exists when the run writes, as after a
        # commit).
        if reads:
            return reads[0]
        reads.append(real(session))
        session.execute(
            insert(Match).values(
                need_id=need,
                offer_id=offer,
                helper_id=helper,
                quantity=1,
                distance_km=0.0,
                status=MatchStatus.notified,
                wave=1,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
        return reads[0]

    monkeypatch.setattr(service, "asked_pairs", stale)
    run = service.run_batch(session=db, trigger="test")
    db.commit()
    # The run chose this pair (nearest, capacity enough) but the other worker's row stands alone.
    rows = _asks_of(db, need, helper)
    assert len(rows) == 1
    assert rows[0].run_id is None
    assert rows[0].wave == 1
    ours = list(db.scalars(select(Match).where(Match.run_id == run.id)))
    assert ours, "the run asked the other pairs"
    assert all((m.need_id, m.helper_id) != (need, helper) for m in ours)
    # Its record counts only what it wrote, and only those got an SMS and an audit row.
    assert run.assigned_quantity == sum(m.quantity for m in ours)
    assert run.config["dropped_rows"] >= 1
    sms = list(db.scalars(select(Message).where(Message.match_id.is_not(None))))
    assert sorted(m.match_id or 0 for m in sms) == sorted(m.id for m in ours)
    assert run.config["messages"] == len(ours)
    asked = db.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "asked")).all()
    assert rows[0].id not in set(asked)
    # The helper-need pairs asked are all distinct.
    pairs = db.execute(
        select(Match.need_id, Match.helper_id).group_by(Match.need_id, Match.helper_id).having(func.count() > 1)
    ).all()
    assert pairs == []


def test_ask_skips_a_pair_asked_before_and_queues_nothing_for_it(client: TestClient, db: Session) -> None:
    offer_id = _offer(client, "+79160000001")
    need_id = _need(client, quantity=1)  # asked at intake: the helper is in range
    need = db.get(Need, need_id)
    offer = db.get(Offer, offer_id)
    assert need is not None
    assert offer is not None
    assert len(_asks_of(db, need_id, offer.helper_id)) == 1
    sms_before = db.scalar(select(func.count(Message.id)))
    facts = proposals.CandidateFacts(db)
    assert facts.blocked([offer.helper_id]) == set()  # reads the helper's contact
    made = proposals.ask(
        session=db,
        need=need,
        asks=[proposals.Ask(offer_id, offer.helper_id, 3.0, 1)],
        contacts=facts.contacts,
        now=utcnow(),
        reason="escalation",
        wave=2,
    )
    db.commit()
    assert made == []
    assert len(_asks_of(db, need_id, offer.helper_id)) == 1
    assert db.scalar(select(func.count(Message.id))) == sms_before


def test_the_database_refuses_a_second_row_for_a_pair(client: TestClient, db: Session) -> None:
    offer_id = _offer(client, "+79160000001")
    need_id = _need(client, quantity=1)
    offer = db.get(Offer, offer_id)
    assert offer is not None
    row = {"need_id": need_id, "offer_id": offer_id, "helper_id": offer.helper_id, "quantity": 1, "distance_km": 1.0}
    with pytest.raises(IntegrityError):
        db.execute(insert(Match).values(**row))
    db.rollback()


@pytest.mark.postgres
def test_two_transactions_asking_the_same_helper_at_once_make_one_request(gazetteer: GazetteerGeocoder) -> None:
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        settings = Settings(database_url=url, public_url="http://testserver", scheduler_enabled=False, _env_file=None)
        with TestClient(create_app(settings, geocoder=gazetteer)) as client:
            need_id = _need(client, quantity=1, lat=58.0)  # nobody in range at intake
            offer_id = _offer(client, "+79160000001", lat=58.0, lon=40.6)
        engine = make_engine(url)
        try:
            _race(make_sessionmaker(engine), need_id, offer_id)
        finally:
            engine.dispose()


def _race(sessions: sessionmaker[Session], need_id: int, offer_id: int) -> None:
    results: dict[str, list[int]] = {}
    both_read = threading.Barrier(2, timeout=10)
    first_wrote = threading.Event()

    def asker(name: str) -> None:
        with sessions() as s:
            need = s.get(Need, need_id)
            offer = s.get(Offer, offer_id)
            assert need is not None
            assert offer is not None
            facts = proposals.CandidateFacts(s)
            facts.blocked([offer.helper_id])
            # Both read "nobody asked" before either writes: the race the index closes.
            assert proposals.asked_helpers(s, need_id) == set()
            both_read.wait()
            if name == "second":
                assert first_wrote.wait(10)
            results[name] = proposals.ask(
                session=s,
                need=need,
                asks=[proposals.Ask(offer_id, offer.helper_id, 2.0, 1)],
                contacts=facts.contacts,
                now=utcnow(),
                reason=name,
            )
            if name == "first":
                first_wrote.set()
                time.sleep(0.5)  # the second insert now waits for this transaction's end
            s.commit()

    second = threading.Thread(target=asker, args=("second",))
    second.start()
    asker("first")
    second.join(20)
    assert not second.is_alive()
    assert len(results["first"]) == 1
    assert results["second"] == []
    with sessions() as s:
        rows = list(s.scalars(select(Match).where(Match.need_id == need_id)))
        assert [m.reason.split(":")[0] for m in rows] == ["first"]
        assert s.scalar(select(func.count(Message.id)).where(Message.match_id.is_not(None))) == 1


def test_requests_are_stamped_when_written_not_when_their_job_started(client: TestClient, db: Session) -> None:
    """A batch run or an upkeep pass may take longer than the workers' change feeds look back for late
    commits; rows stamped at the job's start would never be seen by them."""
    for k in range(3):
        _need(client, lat=55.15 + 0.01 * k)
    for k in range(3):
        _offer(client, f"+7916000001{k}", lat=55.15 + 0.01 * k)
    db.execute(update(Helper).values(sms_consent=False))  # requests stay "proposed": nothing restamps them
    db.commit()
    started = utcnow() - timedelta(seconds=90)
    before = utcnow()
    run = service.run_batch(session=db, trigger="test", now=started)
    db.commit()
    rows = list(db.scalars(select(Match).where(Match.run_id == run.id)))
    assert rows
    assert all(m.status is MatchStatus.proposed for m in rows)
    assert all(m.created_at == started for m in rows)  # what the run decided, and when
    assert all(m.updated_at >= before for m in rows)  # when it was written
    # The same for a request made by an escalation wave or the next helpers (upkeep's ``now``).
    need = db.get(Need, _need(client, quantity=1, lat=58.0))  # nobody in range at intake
    offer = db.get(Offer, _offer(client, "+79160000020", lat=58.0, lon=40.6))
    assert need is not None
    assert offer is not None
    facts = proposals.CandidateFacts(db)
    facts.blocked([offer.helper_id])
    before = utcnow()
    made = proposals.ask(
        session=db,
        need=need,
        asks=[proposals.Ask(offer.id, offer.helper_id, 1.0, 1)],
        contacts=facts.contacts,
        now=started,
        reason="test",
    )
    db.commit()
    asked = db.get(Match, made[0])
    assert asked is not None
    assert asked.updated_at >= before


def _depot(db: Session, phone: str, lats: tuple[float, ...], *, capacity: int = 3, cap: int = 5) -> int:
    """A helper with one offer of water at each latitude (lon 40.0); returns the helper id."""
    now = utcnow()
    helper = Helper(name=phone, phone=phone, sms_consent=True, max_active_tasks=cap, created_at=now, updated_at=now)
    db.add(helper)
    db.flush()
    for lat in lats:
        db.add(
            Offer(
                helper_id=helper.id,
                capacity=capacity,
                capacity_used=0,
                lat=lat,
                lon=40.0,
                radius_km=30,
                status=OfferStatus.active,
                created_at=now,
                updated_at=now,
                category_rows=[OfferCategory(category=Category.water)],
            )
        )
    db.flush()
    return helper.id


def _water_need(db: Session, quantity: int, lat: float, urgency: Urgency = Urgency.urgent) -> Need:
    now = utcnow()
    need = Need(
        code=f"T{quantity}{int(lat * 1000) % 1000:03d}",
        category=Category.water,
        quantity=quantity,
        quantity_assigned=0,
        urgency=urgency,
        lat=lat,
        lon=40.0,
        language=Language.ru,
        source=Source.api,
        status=NeedStatus.open,
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(days=1),
    )
    db.add(need)
    db.flush()
    return need


def test_a_batch_run_looks_past_a_helper_who_was_asked_to_the_next_one(db: Session) -> None:
    need = _water_need(db, 1, 55.0)
    near = _depot(db, "+79160000001", (55.01,))
    far = _depot(db, "+79160000002", (55.10,))  # 11 km
    offer = db.scalars(select(Offer).where(Offer.helper_id == near)).one()
    db.add(
        Match(
            need_id=need.id,
            offer_id=offer.id,
            helper_id=near,
            quantity=1,
            distance_km=1.1,
            status=MatchStatus.declined,
        )
    )
    db.commit()
    run = service.run_batch(session=db, trigger="test")
    db.commit()
    # The nearest helper said no: the run asks the next one instead of choosing (and dropping) the first.
    rows = list(db.scalars(select(Match).where(Match.run_id == run.id)))
    assert [(m.need_id, m.helper_id) for m in rows] == [(need.id, far)]
    assert run.assigned_quantity == 1
    assert run.config["dropped_rows"] == 0


def test_two_offers_of_one_helper_make_one_request_and_the_rest_goes_to_the_next_helper(db: Session) -> None:
    need = _water_need(db, 5, 55.005, Urgency.critical)
    assert need.quantity == 5
    depot = _depot(db, "+79160000001", (55.0, 55.01))  # two depots of one organisation, 3 units each
    db.commit()
    first = service.run_batch(session=db, trigger="test")
    db.commit()
    rows = list(db.scalars(select(Match).where(Match.run_id == first.id)))
    assert [(m.helper_id, m.quantity) for m in rows] == [(depot, 3)]  # the larger of its two rows
    # Another helper comes in reach: the next run gives it the rest, never the depot again.
    other = _depot(db, "+79160000002", (55.02,))
    db.commit()
    second = service.run_batch(session=db, trigger="test")
    db.commit()
    rows = list(db.scalars(select(Match).where(Match.run_id == second.id)))
    assert [(m.helper_id, m.quantity) for m in rows] == [(other, 2)]


def test_task_slots_count_only_the_requests_made(db: Session) -> None:
    big = _water_need(db, 5, 55.005)
    small = _water_need(db, 1, 55.006)
    depot = _depot(db, "+79160000001", (55.0, 55.01), cap=2)
    db.commit()
    run = service.run_batch(session=db, trigger="test")
    db.commit()
    rows = {m.need_id: m for m in db.scalars(select(Match).where(Match.run_id == run.id))}
    # Two tasks allowed: one request for each need, though the solve used both depots for the big one.
    assert set(rows) == {big.id, small.id}
    assert all(m.helper_id == depot for m in rows.values())


def test_an_escalation_wave_whose_helpers_were_all_just_asked_moves_on(
    db: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    need = _water_need(db, 1, 55.0, Urgency.critical)
    need.escalation_wave = 0
    near = _depot(db, "+79160000001", (55.01,))  # 1.1 km: the first wave's (5 km)
    far = _depot(db, "+79160000002", (55.09,))  # 10 km: the second wave's (15 km)
    offer = db.scalars(select(Offer).where(Offer.helper_id == near)).one()
    db.add(
        Match(
            need_id=need.id,
            offer_id=offer.id,
            helper_id=near,
            quantity=1,
            distance_km=1.1,
            status=MatchStatus.notified,
            wave=1,
        )
    )
    db.commit()
    # The wave read who was asked before another worker's request to the near helper committed.
    monkeypatch.setattr(proposals, "asked_helpers", lambda session, need_id: set())
    live = LiveOfferIndex()
    live.refresh(session=db, now=utcnow())
    asked = proposals.escalate(session=db, need=need, live=live, settings=settings, now=utcnow())
    db.commit()
    # The first wave found only the near helper, already asked: it counts as empty and the next goes.
    assert asked == 1
    assert need.escalation_wave == 2
    rows = db.scalars(select(Match).where(Match.need_id == need.id).order_by(Match.id)).all()
    assert [(m.helper_id, m.wave) for m in rows] == [(near, 1), (far, 2)]
