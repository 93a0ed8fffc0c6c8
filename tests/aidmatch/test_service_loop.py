"""The whole loop through the API with an injected clock: waves, timeouts, the next helper, expiry."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus, MessageDirection, NeedStatus, OfferStatus
from aidmatch.helpers.models import Helper
from aidmatch.main import create_app
from aidmatch.matches import service
from aidmatch.matches.models import Match
from aidmatch.matches.upkeep import UpkeepReport
from aidmatch.messages.models import Message
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from aidmatch.scheduler import upkeep_job
from geo.geocoding import GazetteerGeocoder
from geo.sphere import haversine_km

NEED_AT = (55.15, 40.56)
KM_PER_DEG_LAT = 111.195  # on the 6371.0088 km sphere


def _offer(client: TestClient, km: float, phone: int, *, category: str = "evacuation", **kw: Any) -> dict[str, Any]:
    """An offer ``km`` due north of NEED_AT."""
    body = {
        "categories": [category],
        "capacity": 1,
        "radius_km": 50,
        "lat": NEED_AT[0] + km / KM_PER_DEG_LAT,
        "lon": NEED_AT[1],
        "phone": f"+7916{phone:07d}",
        **kw,
    }
    r = client.post("/api/offers", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _need(client: TestClient, **kw: Any) -> dict[str, Any]:
    body = {"category": "evacuation", "quantity": 1, "urgency": "critical", "lat": NEED_AT[0], "lon": NEED_AT[1]}
    r = client.post("/api/needs", json=body | kw)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _upkeep(client: TestClient, now: datetime, settings: Settings | None = None) -> UpkeepReport:
    state = client.app.state  # type: ignore[attr-defined]
    report = upkeep_job(
        sessions=state.sessionmaker, settings=settings or state.settings, live=state.live_index, now=now
    )
    assert report is not None
    return report


def _asked(db: Session, need_id: int) -> list[Match]:
    db.expire_all()
    return list(db.scalars(select(Match).where(Match.need_id == need_id).order_by(Match.id)))


def _km(db: Session, match: Match) -> float:
    offer = db.get(Offer, match.offer_id)
    assert offer is not None
    return float(haversine_km(NEED_AT[0], NEED_AT[1], offer.lat, offer.lon))


def test_critical_need_escalates_in_waves_until_a_helper_accepts(
    client: TestClient, db: Session, settings: Settings
) -> None:
    distances = [1, 2, 3, 4, 8, 10, 12, 20, 30]
    offers = {km: _offer(client, km, i) for i, km in enumerate(distances)}
    start = utcnow()
    need = _need(client)
    waves = settings.waves_for("evacuation")

    # Wave 1 at once: the 3 nearest within 5 km, by SMS.
    wave1 = _asked(db, need["id"])
    assert need["helpers_in_range"] == 3
    assert [round(_km(db, m)) for m in wave1] == [1, 2, 3]
    assert all(m.status is MatchStatus.notified and m.wave == 1 for m in wave1)

    # Before the wave's wait is over nothing happens; after it, wave 2 asks the helpers within 15 km not asked yet.
    assert _upkeep(client, start + timedelta(seconds=waves[0].wait_s - 5)).helpers_asked == 0
    assert len(_asked(db, need["id"])) == 3
    report = _upkeep(client, start + timedelta(seconds=waves[0].wait_s + 5))
    assert report.escalation_steps == 1
    assert report.helpers_asked == 4
    wave2 = [m for m in _asked(db, need["id"]) if m.wave == 2]
    assert [round(_km(db, m)) for m in wave2] == [4, 8, 10, 12]
    assert all(m.status is MatchStatus.notified for m in _asked(db, need["id"]))  # wave 1 is still open

    # A wave-2 helper accepts with their private link: the need is assigned, the capacity taken,
    # every other request withdrawn and the escalation stopped.
    chosen = wave2[1]
    link = offers[8]["task_link"].rsplit("/", 1)[1]
    assert chosen.offer_id == offers[8]["id"]
    r = client.post(f"/api/matches/{chosen.id}/accept", json={"link": link})
    assert r.status_code == 200, r.text
    db.expire_all()
    stored = db.get(Need, need["id"])
    offer = db.get(Offer, chosen.offer_id)
    assert stored is not None
    assert offer is not None
    assert stored.status is NeedStatus.assigned
    assert stored.quantity_assigned == 1
    assert stored.escalation_next_at is None
    assert offer.capacity_used == 1
    statuses = Counter(m.status for m in _asked(db, need["id"]))
    assert statuses == {MatchStatus.accepted: 1, MatchStatus.cancelled: 6}
    assert _upkeep(client, start + timedelta(hours=2)).helpers_asked == 0
    assert len(_asked(db, need["id"])) == 7

    # Nobody was asked twice about this need; the helper who accepted got the author's contact.
    messages = list(db.scalars(select(Message).where(Message.need_id == need["id"]).order_by(Message.id)))
    asked = [m.phone for m in messages if ":wave:" in (m.idempotency_key or "")]
    assert len(asked) == 7
    assert len(set(asked)) == 7
    (contact,) = [m for m in messages if m.idempotency_key == f"match:{chosen.id}:accepted:helper"]
    assert contact.phone == db.get(Helper, offers[8]["helper_id"]).phone  # type: ignore[union-attr]
    assert contact.body.startswith(f"Задача {chosen.id}:")
    assert len(messages) == 8


def test_a_repeat_that_makes_a_need_critical_starts_its_waves(client: TestClient, db: Session) -> None:
    for i, km in enumerate([1, 2, 3, 4]):
        _offer(client, km, i)
    phone = {"contact_phone": "+79161234567"}
    need = _need(client, urgency="normal", **phone)
    assert [round(_km(db, m)) for m in _asked(db, need["id"])] == [1]  # a normal need: the nearest helper
    r = client.post(
        "/api/needs",
        json={"category": "evacuation", "quantity": 1, "urgency": "critical", "lat": NEED_AT[0], "lon": NEED_AT[1]}
        | phone,
    )
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["id"] == need["id"]
    assert again["merged"] is True
    # The next upkeep pass starts wave 1 as for a need posted critical: 3 helpers within 5 km,
    # the one asked already not again.
    report = _upkeep(client, utcnow() + timedelta(seconds=1))
    assert report.escalation_steps == 1
    wave1 = [m for m in _asked(db, need["id"]) if m.wave == 1]
    assert [round(_km(db, m)) for m in wave1] == [2, 3, 4]
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.escalation_wave == 1


def test_empty_waves_are_skipped_and_unanswered_waves_end_in_the_general_pool(
    client: TestClient, db: Session, settings: Settings
) -> None:
    for i, km in enumerate([8, 20, 45]):  # nobody within 5 km; 45 km is beyond every wave
        _offer(client, km, i)
    start = utcnow()
    need = _need(client)
    waves = settings.waves_for("evacuation")
    first = _asked(db, need["id"])
    assert [(m.wave, round(_km(db, m))) for m in first] == [(2, 8)]  # wave 1 was empty: wave 2 at once
    t = start + timedelta(seconds=waves[1].wait_s + 5)
    _upkeep(client, t)
    assert [(m.wave, round(_km(db, m))) for m in _asked(db, need["id"])] == [(2, 8), (3, 20)]
    # After the last wave's wait, its requests time out and the next helper beyond the waves is asked.
    report = _upkeep(client, t + timedelta(seconds=waves[2].wait_s + 5))
    assert report.escalation_steps == 1
    after = _asked(db, need["id"])
    assert [m.status for m in after[:2]] == [MatchStatus.timed_out, MatchStatus.timed_out]
    assert len(after) == 3
    assert after[2].wave is None
    assert round(_km(db, after[2])) == 45
    assert after[2].status is MatchStatus.notified
    db.expire_all()
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.escalation_next_at is None


def test_waves_respect_per_helper_caps(client: TestClient, db: Session) -> None:
    near = _offer(client, 1, 0, capacity=5)  # room for more, but not the time
    _offer(client, 2, 1)
    helper = db.get(Helper, near["helper_id"])
    assert helper is not None
    helper.max_active_tasks = 1
    db.commit()
    _need(client, category="evacuation", urgency="normal", lat=NEED_AT[0] + 0.001)  # takes the 1 km helper's one slot
    need = _need(client)
    asked = [m.offer_id for m in _asked(db, need["id"])]
    assert near["id"] not in asked
    assert len(asked) == 1


def test_waves_can_differ_by_category(settings: Settings, gazetteer: GazetteerGeocoder, db: Session) -> None:
    special = settings.model_copy(update={"escalation_waves_by_category": {"medical": "2:1:60,50:1:60"}})
    with TestClient(create_app(special, geocoder=gazetteer)) as client:
        for i, km in enumerate([1, 1.5, 3]):
            _offer(client, km, i, category="medical")
        need = _need(client, category="medical")
        assert [round(_km(db, m), 1) for m in _asked(db, need["id"])] == [1.0]  # one helper in wave 1
        evac = [_offer(client, km, 10 + i) for i, km in enumerate([1, 1.5, 3])]
        other = _need(client)
        assert {m.offer_id for m in _asked(db, other["id"])} == {o["id"] for o in evac}  # default: 3 within 5 km


def test_a_decline_goes_to_the_next_helper_and_silence_times_out(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    for i, km in enumerate([1, 2, 3]):
        _offer(client, km, i, category="water")
    start = utcnow()
    need = _need(client, category="water", urgency="normal")
    (first,) = _asked(db, need["id"])
    assert round(_km(db, first)) == 1
    r = client.post(f"/api/matches/{first.id}/decline", headers=coordinator_headers)
    assert r.status_code == 200
    asked = _asked(db, need["id"])
    assert [(m.status, round(_km(db, m))) for m in asked] == [(MatchStatus.declined, 1), (MatchStatus.notified, 2)]
    # No answer within the timeout: the request times out and the third helper is asked.
    report = _upkeep(client, start + timedelta(seconds=settings.match_response_timeout_s + 5))
    assert report.matches_timed_out == 1
    assert report.needs_reoffered == 1
    asked = _asked(db, need["id"])
    assert [m.status for m in asked] == [MatchStatus.declined, MatchStatus.timed_out, MatchStatus.notified]
    assert round(_km(db, asked[2])) == 3
    # Everyone in range said no or nothing: nobody is left to ask, and the batch run, whose matcher
    # leaves out the helpers asked before, does not ask anyone again about this need either.
    assert client.post(f"/api/matches/{asked[2].id}/decline", headers=coordinator_headers).status_code == 200
    assert len(_asked(db, need["id"])) == 3
    run = service.run_batch(session=db, now=start + timedelta(seconds=settings.match_response_timeout_s + 10))
    db.commit()
    assert run.needs_count == 1
    assert run.assigned_quantity == 0
    assert run.config["dropped_rows"] == 0  # not chosen and dropped: not chosen at all
    assert len(_asked(db, need["id"])) == 3


def test_needs_ask_still_needed_before_they_expire(client: TestClient, db: Session, settings: Settings) -> None:
    settings = settings.model_copy(update={"match_response_timeout_s": 1e7})  # the request stays open meanwhile
    _offer(client, 1, 0, category="food", capacity=5)
    need = _need(client, category="food", urgency="normal", quantity=3, contact_phone="+79260000001")
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.expires_at is not None
    expires = stored.expires_at
    ask_at = expires - timedelta(hours=settings.need_reconfirm_before_hours)
    assert _upkeep(client, ask_at - timedelta(minutes=1), settings).reconfirm_requested == 0
    assert _upkeep(client, ask_at + timedelta(minutes=1), settings).reconfirm_requested == 1
    assert _upkeep(client, ask_at + timedelta(minutes=2), settings).reconfirm_requested == 0  # asked once
    received, question = db.scalars(select(Message).where(Message.phone == "+79260000001").order_by(Message.id))
    assert received.idempotency_key == f"need:{need['id']}:received"  # the code, at once
    assert need["code"] in received.body
    assert question.direction is MessageDirection.outbound
    assert need["code"] in question.body
    assert "ещё актуальна" in question.body
    # The author confirms by code (any case, Cyrillic look-alikes): the need lives on.
    r = client.post(f"/api/needs/code/{need['code'].lower()}/confirm")
    assert r.status_code == 200, r.text
    db.expire_all()
    renewed = db.get(Need, need["id"])
    assert renewed is not None
    assert renewed.expires_at is not None
    assert renewed.expires_at > expires
    assert renewed.reconfirm_requested_at is None
    # Left alone past its expiry, it expires and its open request is withdrawn.
    report = _upkeep(client, renewed.expires_at + timedelta(seconds=1), settings)
    assert report.needs_expired == 1
    db.expire_all()
    assert db.get(Need, need["id"]).status is NeedStatus.expired  # type: ignore[union-attr]
    assert {m.status for m in _asked(db, need["id"])} == {MatchStatus.cancelled}
    assert client.post(f"/api/needs/code/{need['code']}/confirm").status_code == 409


def test_a_need_helpers_took_does_not_expire_its_author_is_asked_if_help_came(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    _offer(client, 1, 0, category="food", capacity=5)
    need = _need(client, category="food", urgency="normal", quantity=2, contact_phone="+79260000001")
    (asked,) = _asked(db, need["id"])
    assert client.post(f"/api/matches/{asked.id}/accept", headers=coordinator_headers).status_code == 200
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.status is NeedStatus.assigned
    assert stored.expires_at is not None
    expires = stored.expires_at
    # Not when an open need would be asked «still needed?», but when it would have expired.
    assert _upkeep(client, expires - timedelta(minutes=1)).reconfirm_requested == 0
    assert _upkeep(client, expires + timedelta(minutes=1)).reconfirm_requested == 1
    assert _upkeep(client, expires + timedelta(minutes=2)).reconfirm_requested == 0  # asked once
    report = _upkeep(client, expires + timedelta(hours=1))
    assert report.needs_expired == 0  # the helper is on the way: the need stays
    db.expire_all()
    assert db.get(Need, need["id"]).status is NeedStatus.assigned  # type: ignore[union-attr]
    assert [m.status for m in _asked(db, need["id"])] == [MatchStatus.accepted]
    question = db.scalars(
        select(Message).where(Message.idempotency_key.like(f"need:{need['id']}:help-arrived:%"))
    ).one()
    assert question.phone == "+79260000001"
    assert f"ГОТОВО {need['code']}" in question.body
    reminder = db.scalars(
        select(Message).where(Message.idempotency_key.like(f"match:{asked.id}:done-reminder:%"))
    ).one()
    assert reminder.phone == "+79160000000"
    assert f"ГОТОВО {asked.id}" in reminder.body
    # "Still waiting" renews it; the question comes again before the new expiry.
    assert client.post(f"/api/needs/code/{need['code']}/confirm").status_code == 200
    db.expire_all()
    renewed = db.get(Need, need["id"])
    assert renewed is not None
    assert renewed.expires_at is not None
    assert _upkeep(client, renewed.expires_at - timedelta(minutes=1)).reconfirm_requested == 0
    assert _upkeep(client, renewed.expires_at + timedelta(minutes=1)).reconfirm_requested == 1
    assert len(db.scalars(select(Message).where(Message.idempotency_key.like("%help-arrived%"))).all()) == 2


def test_a_need_taken_after_still_needed_is_asked_if_help_came_when_it_would_have_expired(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    _offer(client, 1, 0, category="food", capacity=5)
    need = _need(client, category="food", urgency="normal", quantity=1, contact_phone="+79260000001")
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.expires_at is not None
    expires = stored.expires_at
    patient = settings.model_copy(update={"match_response_timeout_s": 10**7})  # the request stays open
    asked_at = expires - timedelta(hours=settings.need_reconfirm_before_hours) + timedelta(minutes=1)
    assert _upkeep(client, asked_at, patient).reconfirm_requested == 1  # «ещё нужна?», not answered
    (asked,) = _asked(db, need["id"])
    assert client.post(f"/api/matches/{asked.id}/accept", headers=coordinator_headers).status_code == 200
    # Taken: the unanswered question is settled; «помощь пришла?» comes when it would have expired.
    assert _upkeep(client, expires - timedelta(minutes=1), patient).reconfirm_requested == 0
    assert _upkeep(client, expires + timedelta(minutes=1), patient).reconfirm_requested == 1
    question = db.scalars(
        select(Message).where(Message.idempotency_key.like(f"need:{need['id']}:help-arrived:%"))
    ).one()
    assert question.phone == "+79260000001"


def test_a_need_taken_just_before_it_would_expire_is_not_asked_if_help_came_at_once(
    client: TestClient, db: Session, settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    _offer(client, 1, 0, category="food", capacity=5)
    need = _need(client, category="food", urgency="normal", quantity=1, contact_phone="+79260000001")
    (asked,) = _asked(db, need["id"])
    assert client.post(f"/api/matches/{asked.id}/accept", headers=coordinator_headers).status_code == 200
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.expires_at is not None
    db.expire_all()
    accepted_at = db.get(Match, asked.id).responded_at  # type: ignore[union-attr]
    assert accepted_at is not None
    stored.expires_at = accepted_at + timedelta(minutes=5)  # taken five minutes before its expiry
    db.commit()
    grace = timedelta(hours=settings.need_reconfirm_before_hours)
    assert _upkeep(client, accepted_at + timedelta(minutes=10)).reconfirm_requested == 0
    assert _upkeep(client, accepted_at + grace - timedelta(minutes=1)).reconfirm_requested == 0
    assert _upkeep(client, accepted_at + grace + timedelta(minutes=1)).reconfirm_requested == 1


def test_offers_expire_at_available_until_and_their_needs_move_on(client: TestClient, db: Session) -> None:
    soon = utcnow() + timedelta(hours=1)
    first = _offer(client, 1, 0, category="shelter", available_until=soon.isoformat())
    _offer(client, 5, 1, category="shelter")
    need = _need(client, category="shelter", urgency="urgent")
    (asked,) = _asked(db, need["id"])
    assert asked.offer_id == first["id"]
    report = _upkeep(client, soon + timedelta(seconds=1))
    assert report.offers_expired == 1
    assert report.needs_reoffered == 1
    db.expire_all()
    assert db.get(Offer, first["id"]).status is OfferStatus.expired  # type: ignore[union-attr]
    statuses = [(m.status, round(_km(db, m))) for m in _asked(db, need["id"])]
    assert statuses == [(MatchStatus.cancelled, 1), (MatchStatus.notified, 5)]


@pytest.mark.parametrize("helpers", [50])
def test_many_helpers_racing_for_the_last_unit(
    client: TestClient, db: Session, coordinator_headers: dict[str, str], helpers: int
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = client.app.state.settings  # type: ignore[attr-defined]
    wide = settings.model_copy(update={"escalation_waves": f"10:{helpers}:300"})
    client.app.state.settings = wide  # type: ignore[attr-defined]
    for i in range(helpers):
        _offer(client, 0.1 + 0.1 * i, i)
    need = _need(client)
    ids = [m.id for m in _asked(db, need["id"])]
    assert len(ids) == helpers
    with ThreadPoolExecutor(helpers) as pool:
        codes = list(
            pool.map(lambda i: client.post(f"/api/matches/{i}/accept", headers=coordinator_headers).status_code, ids)
        )
    assert codes.count(200) == 1, codes
    assert codes.count(409) == helpers - 1, codes
    db.expire_all()
    stored = db.get(Need, need["id"])
    assert stored is not None
    assert stored.quantity_assigned == 1
    assert sum(o.capacity_used for o in db.scalars(select(Offer))) == 1
