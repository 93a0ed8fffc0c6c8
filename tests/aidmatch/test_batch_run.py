"""A batch run over the database: rows → arrays → matching → proposed matches and a MatchRun."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import matching
from aidmatch.cli import app
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MatchRunStatus, MatchStatus, MessageStatus
from aidmatch.helpers.models import Helper
from aidmatch.matches import service
from aidmatch.matches.models import Match, MatchRun
from aidmatch.messages.models import Message
from aidmatch.needs import service as needs_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from geo.sphere import haversine_km


def _need(client: TestClient, **kw: Any) -> dict[str, Any]:
    body = {"category": "water", "quantity": 1, "urgency": "normal", "lat": 55.15, "lon": 40.55, **kw}
    r = client.post("/api/needs", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _offer(client: TestClient, phone: str, **kw: Any) -> dict[str, Any]:
    body = {"categories": ["water"], "capacity": 1, "radius_km": 30, "lat": 55.15, "lon": 40.6, "phone": phone, **kw}
    r = client.post("/api/offers", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _scene(client: TestClient) -> None:
    for k in range(6):
        _need(client, lat=55.1 + 0.02 * k, quantity=1 + k % 3, urgency=["critical", "urgent", "normal"][k % 3])
    _need(client, category="food", lat=55.12)
    _need(client, category="shelter", lat=58.0)  # nobody anywhere near
    _offer(client, "+79160000001", capacity=3)
    _offer(client, "+79160000002", capacity=2, lat=55.3, categories=["water", "food"])
    _offer(client, "+79160000003", capacity=1, lat=55.0, lon=40.4, radius_km=15)


def test_batch_run_proposes_feasible_matches_and_records_the_run(client: TestClient, db: Session) -> None:
    _scene(client)
    run = service.run_batch(session=db, trigger="test")
    db.commit()
    matches = list(db.scalars(select(Match).where(Match.run_id == run.id)))
    assert matches, "nothing proposed in a scene with helpers in range"
    needs = {n.id: n for n in db.scalars(select(Need))}
    offers = {o.id: o for o in db.scalars(select(Offer))}
    per_offer: dict[int, int] = {}
    per_need: dict[int, int] = {}
    for m in matches:
        need, offer = needs[m.need_id], offers[m.offer_id]
        assert m.status is MatchStatus.notified  # every helper here takes SMS
        assert m.notified_at is not None
        assert need.category in offer.categories
        d = float(haversine_km(need.lat, need.lon, offer.lat, offer.lon))
        assert abs(d - m.distance_km) < 1e-6
        assert d <= offer.radius_km
        assert f"{d:.1f} km" in m.reason
        per_offer[m.offer_id] = per_offer.get(m.offer_id, 0) + m.quantity
        per_need[m.need_id] = per_need.get(m.need_id, 0) + m.quantity
    assert all(per_offer[o] <= offers[o].capacity for o in per_offer)
    assert all(per_need[n] <= needs[n].quantity for n in per_need)
    stored = db.get(MatchRun, run.id)
    assert stored is not None
    assert stored.status is MatchRunStatus.succeeded
    assert stored.assigned_quantity == sum(m.quantity for m in matches)
    assert stored.matched_needs == len(per_need)
    assert stored.needs_count == len(needs)
    assert stored.needs_count == stored.matched_needs + stored.unmatched_needs
    assert stored.unmatched_reasons.get("no_helper_in_range", 0) >= 1  # the shelter need far north
    assert sum(stored.unmatched_reasons.values()) == stored.unmatched_needs  # one reason each
    # Capacity is the binding constraint here (6 water units offered, 12 asked): all of it is used.
    assert sum(per_offer.values()) == 6
    # Each request went out by SMS in the same transaction, once, to the offer's helper.
    messages = list(db.scalars(select(Message).where(Message.match_id.in_([m.id for m in matches]))))
    assert sorted(m.match_id or 0 for m in messages) == sorted(m.id for m in matches)
    for message in messages:
        match = next(m for m in matches if m.id == message.match_id)
        assert message.status is MessageStatus.queued
        assert message.idempotency_key == f"match:{match.id}:ask"
        assert message.phone == offers[match.offer_id].helper.phone
        assert f"ДА {match.id}" in message.body
    assert stored.config["messages"] == len(messages)
    # A scene this small is solved exactly, well within the batch's time budget.
    assert stored.config["complete"] is True
    assert stored.config["gap_bound"] == 0.0  # every feasible pair fits: the exact optimum
    assert stored.config["time_budget_s"] == service.BATCH_TIME_BUDGET_S


def test_a_second_run_leaves_pending_and_accepted_units_alone(client: TestClient, db: Session) -> None:
    _scene(client)
    first = service.run_batch(session=db)
    db.commit()
    # A helper accepts one proposal: the conditional updates of the lifecycle, done by hand here.
    accepted = db.scalars(select(Match).where(Match.run_id == first.id).order_by(Match.id)).first()
    assert accepted is not None
    accepted.status = MatchStatus.accepted
    need = db.get(Need, accepted.need_id)
    offer = db.get(Offer, accepted.offer_id)
    assert need is not None
    assert offer is not None
    need.quantity_assigned += accepted.quantity
    offer.capacity_used += accepted.quantity
    db.commit()
    before = {(m.id, m.status, m.quantity) for m in db.scalars(select(Match))}
    second = service.run_batch(session=db)
    db.commit()
    after = {(m.id, m.status, m.quantity) for m in db.scalars(select(Match))}
    assert before <= after  # nothing accepted or pending was changed
    assert second.assigned_quantity == 0  # every free unit of capacity is already pending
    assert len(after) == len(before)


def test_expired_needs_and_offers_are_left_out(client: TestClient, db: Session) -> None:
    need = _need(client)
    offer = _offer(client, "+79160000009", capacity=5)
    now = utcnow()
    stored_offer = db.get(Offer, offer["id"])
    assert stored_offer is not None
    stored_offer.available_until = now - timedelta(minutes=1)
    db.commit()
    assert service.run_batch(session=db).offers_count == 0
    stored_offer.available_until = None
    stored_need = db.get(Need, need["id"])
    assert stored_need is not None
    stored_need.expires_at = now - timedelta(minutes=1)
    db.commit()
    run = service.run_batch(session=db)
    assert run.needs_count == 0
    assert run.offers_count == 1


def test_critical_need_wins_the_scarce_helper(client: TestClient, db: Session) -> None:
    normal = _need(client, lat=55.15, lon=40.6, urgency="normal")  # right next to the helper
    critical = _need(client, lat=55.30, lon=40.6, urgency="critical")  # about 17 km away
    _offer(client, "+79160000010", capacity=1)
    service.run_batch(session=db)
    db.commit()
    matched = [m.need_id for m in db.scalars(select(Match))]
    assert matched == [critical["id"]]
    assert normal["id"] not in matched


def test_a_need_cut_for_a_helpers_task_slots_goes_to_another_helper_in_the_same_run(
    client: TestClient, db: Session
) -> None:
    """The solve gives both needs to the nearest helper, who may take one task more: the other need
    is asked of the next helper with room at once, not a run later."""
    first = _need(client, lat=55.15, lon=40.6)
    second = _need(client, lat=55.151, lon=40.6)
    near = _offer(client, "+79160000020", capacity=5)
    far = _offer(client, "+79160000021", capacity=5, lat=55.25)  # about 11 km away
    db.execute(update(Helper).where(Helper.id == near["helper_id"]).values(max_active_tasks=1))
    db.commit()
    run = service.run_batch(session=db)
    db.commit()
    asked = {(m.need_id, m.offer_id) for m in db.scalars(select(Match).where(Match.run_id == run.id))}
    assert asked == {(first["id"], near["id"]), (second["id"], far["id"])}
    assert run.matched_needs == 2
    assert run.unmatched_needs == 0
    assert run.config["second_pass_rows"] == 1
    assert run.config["dropped_rows"] == 1  # the first solve's row for the second need
    assert run.total_distance_km == pytest.approx(
        haversine_km(55.151, 40.6, 55.25, 40.6) + haversine_km(55.15, 40.6, 55.15, 40.6), abs=0.01
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_run_under_tight_task_caps_keeps_every_limit(client: TestClient, db: Session, seed: int) -> None:
    """Random needs and helpers who may take one or two tasks: however the two passes split the
    work, no helper gets more requests than their slots, no offer more units than it has, no need
    more than it asks for, and no pair twice."""
    import numpy as np

    rng = np.random.default_rng(seed)
    quantity = {}
    for _ in range(12):
        need = _need(
            client, lat=55.1 + 0.1 * rng.random(), lon=40.5 + 0.2 * rng.random(), quantity=int(rng.integers(1, 4))
        )
        quantity[need["id"]] = need["quantity"]
    offers = [
        _offer(
            client,
            f"+7916000{k:04d}",
            capacity=int(rng.integers(2, 7)),
            lat=55.1 + 0.1 * rng.random(),
            lon=40.5 + 0.2 * rng.random(),
        )
        for k in range(10)
    ]
    caps = {o["helper_id"]: int(rng.integers(1, 3)) for o in offers}
    for helper_id, cap in caps.items():
        db.execute(update(Helper).where(Helper.id == helper_id).values(max_active_tasks=cap))
    db.commit()
    run = service.run_batch(session=db)
    db.commit()
    matches = list(db.scalars(select(Match).where(Match.run_id == run.id)))
    assert matches
    capacity = {o["id"]: o["capacity"] for o in offers}
    per_helper: dict[int, int] = {}
    per_offer: dict[int, int] = {}
    per_need: dict[int, int] = {}
    for m in matches:
        assert m.helper_id is not None
        per_helper[m.helper_id] = per_helper.get(m.helper_id, 0) + 1
        per_offer[m.offer_id] = per_offer.get(m.offer_id, 0) + m.quantity
        per_need[m.need_id] = per_need.get(m.need_id, 0) + m.quantity
    assert all(n <= caps[h] for h, n in per_helper.items())
    assert all(u <= capacity[o] for o, u in per_offer.items())
    assert all(u <= quantity[n] for n, u in per_need.items())
    assert len({(m.need_id, m.helper_id) for m in matches}) == len(matches)
    assert run.assigned_quantity == sum(m.quantity for m in matches)
    assert run.matched_needs == len(per_need)


def test_a_need_whose_only_helper_declined_is_recorded_as_all_asked(client: TestClient, db: Session) -> None:
    need = _need(client)
    _offer(client, "+79160000011", capacity=3)
    service.run_batch(session=db)
    db.commit()
    (asked,) = db.scalars(select(Match).where(Match.need_id == need["id"]))
    asked.status = MatchStatus.declined
    db.commit()
    again = service.run_batch(session=db)
    db.commit()
    # The helper still has room and is in range, but was asked already: nobody is asked again.
    assert again.assigned_quantity == 0
    assert again.unmatched_reasons == {"all_in_range_asked": 1}
    # A second helper in range is asked in the next run, and the reason goes.
    _offer(client, "+79160000012", capacity=1, lat=55.2)
    third = service.run_batch(session=db)
    db.commit()
    assert third.assigned_quantity == 1
    assert third.unmatched_reasons == {}


def test_a_need_closed_while_the_run_solves_gets_no_request(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    need = _need(client)
    _offer(client, "+79160000013", capacity=2)
    real = matching.match

    def solve_while_the_author_cancels(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        with Session(db.get_bind()) as other:  # the author's «НЕТ code», committed meanwhile
            closing = other.get(Need, need["id"])
            assert closing is not None
            needs_service.close(session=other, need=closing, fulfilled=False)
            other.commit()
        return out

    monkeypatch.setattr(matching, "match", solve_while_the_author_cancels)
    run = service.run_batch(session=db)
    db.commit()
    assert run.assigned_quantity == 0
    assert db.scalars(select(Match)).all() == []
    assert db.scalars(select(Message).where(Message.match_id.is_not(None))).all() == []


def test_an_offer_asked_while_the_run_solves_is_not_asked_past_its_capacity(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _need(client)  # before any helper: nobody asked at intake
    offer = _offer(client, "+79160000014", capacity=1)
    real = matching.match
    posted: list[dict[str, Any]] = []

    def solve_while_intake_asks(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        posted.append(_need(client, lat=55.151))  # intake asks the helper for the offer's one unit
        return out

    monkeypatch.setattr(matching, "match", solve_while_intake_asks)
    run = service.run_batch(session=db)
    db.commit()
    asked = db.scalars(select(Match).where(Match.offer_id == offer["id"])).all()
    assert [(m.need_id, m.quantity) for m in asked] == [(posted[0]["id"], 1)]
    assert run.assigned_quantity == 0
    assert run.config["dropped_rows"] == 1
    assert first["id"] not in {m.need_id for m in asked}


def test_the_run_cuts_its_rows_to_what_is_free_when_it_writes(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    near = _need(client, quantity=2)
    far = _need(client, quantity=2, lat=55.25)
    offer = _offer(client, "+79160000015", capacity=3)
    real = matching.match

    def solve_while_units_go(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        with Session(db.get_bind()) as other:  # a coordinator gives one unit of the offer away
            gone = other.get(Offer, offer["id"])
            assert gone is not None
            gone.capacity = 2
            other.commit()
        return out

    assert db.scalars(select(Match)).all() == []  # the needs came before the helper: nobody asked yet
    monkeypatch.setattr(matching, "match", solve_while_units_go)
    run = service.run_batch(session=db)
    db.commit()
    rows = db.scalars(select(Match).where(Match.run_id == run.id)).all()
    assert sum(m.quantity for m in rows) == 2  # the offer's units now, not the 3 it had when the run read
    assert {m.need_id: m.quantity for m in rows} == {near["id"]: 2}  # nearest first
    assert far["id"] not in {m.need_id for m in rows}


def test_cli_match_prints_the_run(client: TestClient, settings: Settings) -> None:
    _scene(client)
    result = CliRunner().invoke(app, ["match", "--json"], env={"AIDMATCH_DATABASE_URL": settings.database_url})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded"
    assert summary["assigned_quantity"] == 6
    assert summary["needs"] == summary["matched_needs"] + summary["unmatched_needs"]
    plain = CliRunner().invoke(app, ["match"], env={"AIDMATCH_DATABASE_URL": settings.database_url})
    assert plain.exit_code == 0
    assert "open needs matched" in plain.stdout


def test_an_offer_that_expires_while_the_run_solves_is_not_asked(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run re-reads what is open when it writes, at that moment, not at its start."""
    need = _need(client)  # before any helper: nobody asked at intake
    offer = _offer(client, "+79160000015", capacity=1)
    real = matching.match

    def solve_past_the_offers_end(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        stored = db.get(Offer, offer["id"])
        assert stored is not None
        stored.available_until = utcnow() - timedelta(seconds=1)  # its window closes during the solve
        db.flush()
        return out

    monkeypatch.setattr(matching, "match", solve_past_the_offers_end)
    run = service.run_batch(session=db, now=utcnow() - timedelta(seconds=5))  # began 5 s ago
    db.commit()
    assert run.assigned_quantity == 0
    assert db.scalars(select(Match).where(Match.need_id == need["id"])).all() == []


def test_a_need_closed_while_the_run_writes_keeps_no_request(
    client: TestClient, db: Session, sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The author withdraws the need (or upkeep expires it) as the run writes its request: the
    close waits for the run (PostgreSQL: the run locks the need first; SQLite: the write lock),
    then withdraws the request with the need, so it holds no unit and no task slot."""
    import threading

    need = _need(client)
    _offer(client, "+79160000016", capacity=1)
    real = service._write_batch_matches
    closer: list[threading.Thread] = []

    def close() -> None:
        with sessions() as other:
            needs_service.close(
                session=other, need=needs_service.get(session=other, need_id=need["id"]), fulfilled=False
            )
            other.commit()

    def write_as_the_author_cancels(**kw: Any) -> Any:
        closer.append(threading.Thread(target=close))
        closer[0].start()
        closer[0].join(0.5)  # it waits for this run (or, before the fix on PostgreSQL, closed the need now)
        return real(**kw)

    monkeypatch.setattr(service, "_write_batch_matches", write_as_the_author_cancels)
    service.run_batch(session=db)
    db.commit()
    closer[0].join(30)
    db.expire_all()
    assert db.get(Need, need["id"]).status.value == "cancelled"  # type: ignore[union-attr]
    statuses = [m.status for m in db.scalars(select(Match).where(Match.need_id == need["id"]))]
    assert MatchStatus.notified not in statuses
    assert MatchStatus.proposed not in statuses


def test_a_partly_served_need_is_matched_and_a_need_cut_at_the_write_has_a_reason(
    client: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    partly = _need(client, quantity=3)
    _offer(client, "+79160000017", capacity=1)
    run = service.run_batch(session=db)
    db.commit()
    assert (run.matched_needs, run.unmatched_needs, run.unmatched_reasons) == (1, 0, {})
    assert run.assigned_quantity == 1
    # The next run finds a helper for the rest, who is asked about it by intake while it solves.
    _offer(client, "+79160000018", capacity=2, lat=55.2, lon=40.55)
    real = matching.match

    def solve_while_intake_asks(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        with Session(db.get_bind()) as other:
            need = other.get(Need, partly["id"])
            assert need is not None
            needs_service.close(session=other, need=need, fulfilled=False)  # withdrawn meanwhile
            other.commit()
        return out

    monkeypatch.setattr(matching, "match", solve_while_intake_asks)
    again = service.run_batch(session=db)
    db.commit()
    assert (again.matched_needs, again.unmatched_needs) == (0, 1)
    assert again.unmatched_reasons == {"changed_during_run": 1}
