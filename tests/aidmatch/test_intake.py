"""At intake: proposals from the live index, wave 1 by SMS for critical needs, unmet statistics."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.audit.models import AuditEvent
from aidmatch.config import Settings
from aidmatch.enums import MatchStatus, MessageDirection, MessageStatus
from aidmatch.main import create_app
from aidmatch.matches.models import Match
from aidmatch.matches.service import UnmetStatsCache
from aidmatch.messages.models import Message
from geo.geocoding import GazetteerGeocoder


def _offers(
    client: TestClient, n: int, *, category: str = "evacuation", start: int = 0, **kw: Any
) -> list[dict[str, Any]]:
    out = []
    for k in range(start, start + n):
        body = {
            "categories": [category],
            "capacity": 1,
            "radius_km": 40,
            "lat": 55.148 + 0.01 * (k % 6),
            "lon": 40.554 + 0.01 * (k // 6),
            "phone": f"+7916{k:07d}",
            **kw,
        }
        r = client.post("/api/offers", json=body)
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def _need(client: TestClient, **kw: Any) -> dict[str, Any]:
    body = {"category": "evacuation", "quantity": 1, "urgency": "critical", "lat": 55.15, "lon": 40.56, **kw}
    r = client.post("/api/needs", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_critical_need_notifies_wave_one_through_the_outbox(
    client: TestClient, db: Session, coordinator_headers: dict[str, str], settings: Settings
) -> None:
    _offers(client, 12)
    need = _need(client)
    radius_km, helpers, _ = settings.escalation_waves.split(",")[0].split(":")
    matches = list(db.scalars(select(Match).where(Match.need_id == need["id"]).order_by(Match.distance_km)))
    assert need["helpers_in_range"] == len(matches) == int(helpers)
    assert all(m.status is MatchStatus.notified and m.wave == 1 for m in matches)
    assert all(m.distance_km <= float(radius_km) for m in matches)
    signed_up = list(db.scalars(select(Message).where(Message.match_id.is_(None))))
    assert [m.idempotency_key for m in signed_up] == [f"helper:{m.helper_id}:signed-up" for m in signed_up]
    messages = list(db.scalars(select(Message).where(Message.match_id.is_not(None)).order_by(Message.id)))
    assert len(messages) == len(matches)
    assert {m.match_id for m in messages} == {m.id for m in matches}
    for message in messages:
        assert message.direction is MessageDirection.outbound
        assert message.status is MessageStatus.queued
        assert message.idempotency_key == f"match:{message.match_id}:wave:1"
        assert f"ДА {message.match_id}" in message.body
    log = client.get("/api/messages?limit=50", headers=coordinator_headers)
    assert log.status_code == 200
    assert log.json()["total"] == len(messages) + len(signed_up)
    assert client.get("/api/messages").status_code == 401


def test_other_needs_ask_their_nearest_helpers_for_what_they_can_take(client: TestClient, db: Session) -> None:
    _offers(client, 5, category="water")  # capacity 1 each
    need = _need(client, category="water", urgency="normal", quantity=2)
    matches = list(db.scalars(select(Match).where(Match.need_id == need["id"]).order_by(Match.distance_km)))
    assert need["helpers_in_range"] >= 2
    assert [m.quantity for m in matches] == [1, 1]  # two nearest helpers, one unit each
    assert all(m.status is MatchStatus.notified and m.wave is None for m in matches)
    messages = list(db.scalars(select(Message).where(Message.match_id.is_not(None)).order_by(Message.id)))
    assert [m.idempotency_key for m in messages] == [f"match:{m.id}:ask" for m in sorted(matches, key=lambda m: m.id)]
    assert all(m.body.startswith("Нужна помощь") for m in messages)
    big = _offers(client, 1, category="food", start=10, capacity=10)
    more = _need(client, category="food", urgency="normal", quantity=4)
    (one,) = db.scalars(select(Match).where(Match.need_id == more["id"]))
    assert (one.offer_id, one.quantity) == (big[0]["id"], 4)  # one helper who can take all of it
    lonely = _need(client, category="shelter", urgency="normal")
    assert lonely["helpers_in_range"] == 0


def test_a_helper_added_through_another_worker_is_seen(
    client: TestClient, settings: Settings, gazetteer: GazetteerGeocoder, db: Session
) -> None:
    assert _need(client)["helpers_in_range"] == 0  # builds this worker's index: nobody yet
    with TestClient(create_app(settings, geocoder=gazetteer)) as other:
        _offers(other, 2)
    assert _need(client)["helpers_in_range"] == 2
    # Capacity now pending for the second need: a third need finds nobody free.
    assert _need(client)["helpers_in_range"] == 0


def test_unmet_stats_explain_every_open_need(
    settings: Settings, gazetteer: GazetteerGeocoder, coordinator_headers: dict[str, str]
) -> None:
    # Computed on every call: the worker's copy, made at start-up, would answer for 5 s.
    uncached = settings.model_copy(update={"unmet_stats_cache_s": 0.0})
    with TestClient(create_app(uncached, geocoder=gazetteer)) as client:
        _explain_every_open_need(client, coordinator_headers)


def test_unmet_stats_from_a_kept_copy_give_its_age(
    settings: Settings, gazetteer: GazetteerGeocoder, coordinator_headers: dict[str, str]
) -> None:
    clock = [0.0]
    with TestClient(create_app(settings, geocoder=gazetteer)) as client:
        client.app.state.unmet_stats = UnmetStatsCache(3600.0, clock=lambda: clock[0])  # type: ignore[attr-defined]
        first = client.get("/api/stats/unmet", headers=coordinator_headers)
        _need(client, category="shelter", urgency="urgent")  # nobody offers shelter
        clock[0] = 42.5
        again = client.get("/api/stats/unmet", headers=coordinator_headers)
    assert (first.headers["Age"], first.json()["stats_age_s"]) == ("0", 0.0)
    assert again.json()["unmet_needs"] == first.json()["unmet_needs"]  # the copy, not the new need
    assert (again.headers["Age"], again.json()["stats_age_s"]) == ("42", 42.5)
    assert again.headers["Cache-Control"] == "no-store"


def _explain_every_open_need(client: TestClient, coordinator_headers: dict[str, str]) -> None:
    _offers(client, 1, category="water")  # capacity 1, 40 km, near the needs
    _need(client, category="water", urgency="normal", quantity=3)  # one unit asked for, two left
    _need(client, category="shelter", urgency="urgent")  # nobody offers shelter
    far = _need(client, category="food", urgency="normal", lat=55.15 + 20 / 111.195)  # 20 km north of the helper
    _offers(client, 1, category="food", start=20, radius_km=5, lat=55.15, lon=40.56)
    waiting = _need(client, category="medicine", urgency="critical")  # posted before its helper
    _offers(client, 1, category="medicine", start=30, capacity=5)
    _offers(client, 1, category="clothing", start=40, capacity=5)
    refused = _need(client, category="clothing", urgency="normal")  # its only helper is asked at once
    asked = client.get(f"/api/matches?need_id={refused['id']}", headers=coordinator_headers).json()["items"]
    assert len(asked) == 1
    r = client.post(f"/api/matches/{asked[0]['id']}/decline", headers=coordinator_headers)  # and says no
    assert r.status_code == 200, r.text
    assert client.get("/api/stats/unmet").status_code == 401
    answer = client.get("/api/stats/unmet", headers=coordinator_headers)
    assert answer.headers["Age"] == "0"  # computed for this request (no copy kept)
    stats = answer.json()
    groups = {(g["category"], g["urgency"], g["reason"]): (g["needs"], g["units"]) for g in stats["groups"]}
    assert groups == {
        ("water", "normal", "all_in_range_busy"): (1, 2),
        ("shelter", "urgent", "no_helper_of_category"): (1, 1),
        ("food", "normal", "outside_every_radius"): (1, 1),
        ("medicine", "critical", "waiting_for_helper"): (1, 1),
        # A helper with room is in range, but the only one was asked and declined: nobody will ask again.
        ("clothing", "normal", "all_in_range_asked"): (1, 1),
    }
    assert set(stats["reasons"]) == {g[2] for g in groups}
    assert stats["unmet_needs"] == 5
    assert stats["unmet_units"] == 6
    assert stats["oldest_unmet_age_s"] >= 0
    listed = client.get("/api/stats/unmet/needs", headers=coordinator_headers).json()
    assert listed["total"] == 5
    assert [i["reason"] for i in listed["items"]] == [
        "all_in_range_busy",
        "no_helper_of_category",
        "outside_every_radius",
        "waiting_for_helper",
        "all_in_range_asked",
    ]  # oldest first
    food = client.get("/api/stats/unmet/needs?reason=outside_every_radius", headers=coordinator_headers).json()
    assert [i["id"] for i in food["items"]] == [far["id"]]
    assert abs(food["items"][0]["nearest_helper_km"] - 20.0) < 0.1
    assert "contact_phone" not in food["items"][0]
    shelter = client.get("/api/stats/unmet/needs?reason=no_helper_of_category", headers=coordinator_headers).json()
    assert shelter["items"][0]["nearest_helper_km"] is None
    medicine = client.get("/api/stats/unmet/needs?reason=waiting_for_helper", headers=coordinator_headers).json()
    assert [i["code"] for i in medicine["items"]] == [waiting["code"]]
    asked = client.get("/api/stats/unmet/needs?reason=all_in_range_asked", headers=coordinator_headers).json()
    assert [i["reason"] for i in asked["items"]] == ["all_in_range_asked"]
    assert client.get("/api/stats/unmet/needs?reason=bogus", headers=coordinator_headers).status_code == 422
    # By category and urgency too, chosen before the page is cut (the total counts those chosen).
    by_category = client.get("/api/stats/unmet/needs?category=food&limit=1", headers=coordinator_headers).json()
    assert (by_category["total"], [i["id"] for i in by_category["items"]]) == (1, [far["id"]])
    normal = client.get("/api/stats/unmet/needs?urgency=normal&limit=2", headers=coordinator_headers).json()
    assert normal["total"] == 3
    assert [i["reason"] for i in normal["items"]] == ["all_in_range_busy", "outside_every_radius"]
    none = "/api/stats/unmet/needs?urgency=critical&reason=no_helper_of_category"
    assert client.get(none, headers=coordinator_headers).json()["total"] == 0
    assert client.get("/api/stats/unmet/needs?category=bogus", headers=coordinator_headers).status_code == 422


def test_a_change_through_one_worker_reaches_the_other(settings: Settings, gazetteer: GazetteerGeocoder) -> None:
    with (
        TestClient(create_app(settings, geocoder=gazetteer)) as first,
        TestClient(create_app(settings, geocoder=gazetteer)) as second,
    ):
        assert _need(second, category="water", urgency="normal")["helpers_in_range"] == 0  # builds its index
        _offers(first, 1, category="water", capacity=2)
        assert _need(second, category="water", urgency="normal")["helpers_in_range"] == 1
        # The rest of its capacity asked for through the first worker: the second finds no one.
        assert _need(first, category="water", urgency="normal")["helpers_in_range"] == 1
        assert _need(second, category="water", urgency="normal")["helpers_in_range"] == 0


def test_the_audit_log_records_the_need_before_its_requests(client: TestClient, db: Session) -> None:
    _offers(client, 3, category="water")
    need = _need(client, category="water", urgency="normal", quantity=2)
    asked = set(db.scalars(select(Match.id).where(Match.need_id == need["id"])))
    events = db.execute(
        select(AuditEvent.action, AuditEvent.entity, AuditEvent.entity_id).order_by(AuditEvent.id)
    ).all()
    mine = [(a, e, i) for a, e, i in events if (e, i) == ("need", need["id"]) or (e == "match" and i in asked)]
    assert [(a, e) for a, e, _ in mine] == [("created", "need"), ("asked", "match"), ("asked", "match")]
