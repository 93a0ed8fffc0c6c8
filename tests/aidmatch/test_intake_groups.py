"""Group commit of POST /api/needs (``aidmatch.needs.intake``) against the sequential path.

The oracle: the same posts, once one by one (``intake_one``, what the route did before groups) and
once in random groups (``intake_group``, one transaction each), on two fresh databases set up the
same way, write the same needs, matches, SMS and audit rows (codes and clocks aside; the ids come
out equal) and give the same answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.audit import service as audit_service
from aidmatch.audit.models import AuditEvent
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker
from aidmatch.errors import TooManyRequestsError
from aidmatch.main import create_app
from aidmatch.matches import live as live_module
from aidmatch.matches import proposals
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.models import Match
from aidmatch.messages.models import Message
from aidmatch.needs import intake, service
from aidmatch.needs.models import Need
from aidmatch.needs.schemas import NeedIn
from geo.geocoding import GazetteerGeocoder
from tests.databases import migrated_database

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
CATEGORIES = ("water", "food", "evacuation", "medicine")
# Places near Ryazan (the helpers' area) and one far away, where no helper reaches.
PLACES = ((55.15, 40.56), (55.20, 40.60), (55.10, 40.50), (59.90, 30.30))


def _settings(url: str, **kw: Any) -> Settings:
    return Settings(
        database_url=url,
        public_url="http://testserver",
        scheduler_enabled=False,
        public_post_burst=100_000,
        sms_per_phone_burst=100_000,
        _env_file=None,
        **kw,
    )


def _offer_bodies(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    bodies = []
    for k in range(n):
        lat, lon = PLACES[k % 3]
        bodies.append(
            {
                "categories": sorted(set(rng.choice(CATEGORIES, size=int(rng.integers(1, 3))).tolist())),
                "capacity": int(rng.integers(1, 4)),
                "radius_km": float(rng.choice([5.0, 15.0, 40.0])),
                "lat": lat + float(rng.normal(0, 0.03)),
                "lon": lon + float(rng.normal(0, 0.03)),
                "phone": f"+7916{k % (n - 3):07d}",  # a few helpers with two offers
                "language": str(rng.choice(["ru", "en"])),
            }
        )
    return bodies


def _posts(rng: np.random.Generator, n: int) -> list[NeedIn]:
    """Random posts: repeats of earlier ones (same phone, category and place: merges), phones at
    their open-needs limit, critical/urgent/normal, some far from every helper, some without phone."""
    posts: list[NeedIn] = []
    for k in range(n):
        if posts and rng.random() < 0.2:
            earlier = posts[int(rng.integers(len(posts)))]
            body = earlier.model_dump(exclude_none=True)
            body["description"] = f"again {k}"
            body["urgency"] = str(rng.choice(["critical", "urgent", "normal"]))
            body["quantity"] += int(rng.integers(0, 3))  # often more units than before
            body["lat"] += float(rng.normal(0, 0.001))  # ~100 m: still a repeat
        else:
            lat, lon = PLACES[int(rng.choice(4, p=[0.35, 0.3, 0.25, 0.1]))]
            body = {
                "category": str(rng.choice(CATEGORIES)),
                "quantity": int(rng.integers(1, 4)),
                "urgency": str(rng.choice(["critical", "urgent", "normal"])),
                "lat": lat + float(rng.normal(0, 0.02)),
                "lon": lon + float(rng.normal(0, 0.02)),
                "description": f"post {k}",
                "language": str(rng.choice(["ru", "en"])),
            }
            if rng.random() < 0.85:
                body["contact_phone"] = f"+7926{int(rng.integers(0, 8)):07d}"
            if rng.random() < 0.2:
                body["max_distance_km"] = 3.0
        posts.append(NeedIn.model_validate(body))
    return posts


@contextmanager
def _database(backend: str, tmp: Path, offers: list[dict[str, Any]], gazetteer: GazetteerGeocoder) -> Iterator[str]:
    """A fresh migrated database holding these offers (created through the API, in order)."""
    tmp.mkdir()
    with migrated_database(backend, tmp) as url:
        with TestClient(create_app(_settings(url), geocoder=gazetteer)) as client:
            links: dict[str, str] = {}  # a helper's second offer comes with their private link
            for body in offers:
                r = client.post("/api/offers", json={**body, "link": links.get(str(body["phone"]))})
                assert r.status_code == 201, r.text
                links.setdefault(str(body["phone"]), r.json()["task_link"])
        yield url


_STAMP = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d UTC")


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the intake writes, clocks left out and each need's code replaced by its id."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            needs = list(s.scalars(select(Need).order_by(Need.id)))
            codes = {n.code: f"<code of {n.id}>" for n in needs}

            def plain(text: str | None) -> str | None:
                if text is None:
                    return None
                for code, mark in codes.items():
                    text = text.replace(code, mark)
                return _STAMP.sub("[clock", text)

            return {
                "needs": [
                    (
                        n.id,
                        n.category,
                        n.quantity,
                        n.quantity_assigned,
                        n.urgency,
                        n.lat,
                        n.lon,
                        n.location_accuracy_m,
                        n.max_distance_km,
                        plain(n.description),
                        n.contact_phone,
                        n.language,
                        n.source,
                        n.status,
                        n.escalation_wave,
                        n.escalation_next_at is not None,
                        n.reconfirm_requested_at,
                        len(n.code),
                        set(n.code) <= set(service.CODE_ALPHABET),
                    )
                    for n in needs
                ],
                "matches": [
                    (m.id, m.need_id, m.offer_id, m.quantity, m.distance_km, m.score, m.reason, m.status, m.wave)
                    for m in s.scalars(select(Match).order_by(Match.id))
                ],
                "messages": [
                    (
                        m.id,
                        m.direction,
                        m.status,
                        m.phone,
                        plain(m.body),
                        m.language,
                        m.idempotency_key,
                        m.need_id,
                        m.match_id,
                        m.helper_id,
                    )
                    for m in s.scalars(select(Message).order_by(Message.id))
                ],
                "audit": [
                    (e.id, e.actor, e.action, e.entity, e.entity_id, e.detail)
                    for e in s.scalars(select(AuditEvent).where(AuditEvent.entity != "offer").order_by(AuditEvent.id))
                ],
            }
    finally:
        engine.dispose()


def _answer(outcome: intake.Outcome) -> tuple[Any, ...]:
    if outcome.error is not None:
        return ("error", type(outcome.error).__name__, str(outcome.error))
    assert outcome.need is not None
    body = outcome.need.model_dump(mode="json", exclude={"code", "created_at", "updated_at", "expires_at"})
    body["description"] = _STAMP.sub("[clock", body["description"] or "")
    return ("need", outcome.merged, body)


def _sequential_and_grouped(
    backend: str,
    tmp: Path,
    offers: list[dict[str, Any]],
    posts: list[NeedIn],
    sizes_rng: np.random.Generator,
    gazetteer: GazetteerGeocoder,
    **limits: Any,
) -> tuple[list[intake.Outcome], dict[str, Any], list[intake.Outcome], dict[str, Any], list[int]]:
    """The posts written one by one and in random groups, each into a fresh database with the
    offers: (outcomes, rows) of each and the groups' sizes."""
    with _database(backend, tmp / "sequential", offers, gazetteer) as url:
        settings, live = _settings(url, **limits), LiveOfferIndex()
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        one_by_one = []
        for post in posts:
            with sessions() as session:
                try:
                    one_by_one.append(intake.intake_one(session=session, need_in=post, settings=settings, live=live))
                except TooManyRequestsError as exc:
                    one_by_one.append(intake.Outcome(error=exc))
        engine.dispose()
        expected = _rows(url)
    with _database(backend, tmp / "groups", offers, gazetteer) as url:
        settings, live = _settings(url, **limits), LiveOfferIndex()
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        grouped: list[intake.Outcome] = []
        start, sizes = 0, []
        while start < len(posts):
            size = int(sizes_rng.choice([1, 2, 3, 5, 8, 13]))
            with sessions() as session:
                grouped += intake.intake_group(
                    session=session, items=posts[start : start + size], settings=settings, live=live
                )
                session.commit()
            sizes.append(size)
            start += size
        engine.dispose()
        got = _rows(url)
    return one_by_one, expected, grouped, got, sizes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [1, 2])
def test_groups_write_what_the_sequential_path_writes(
    backend: str, seed: int, tmp_path: Path, gazetteer: GazetteerGeocoder
) -> None:
    rng = np.random.default_rng(seed)
    offers = _offer_bodies(rng, 30)
    posts = _posts(rng, 70)
    # A small per-phone limit, so some posts are refused (429) and others merge.
    one_by_one, expected, grouped, got, sizes = _sequential_and_grouped(
        backend, tmp_path, offers, posts, rng, gazetteer, max_open_needs_per_phone=4
    )
    assert max(sizes) > 1
    answers = [_answer(o) for o in one_by_one]
    assert [_answer(o) for o in grouped] == answers
    # The random posts reach every branch: new needs with and without helpers, merges, refusals, waves.
    kinds = Counter(a[0] if a[0] == "error" else ("merged" if a[1] else "new") for a in answers)
    assert kinds["new"] > 20
    assert kinds["merged"] > 3
    assert kinds["error"] > 0
    assert any(a[0] == "need" and a[2]["helpers_in_range"] == 0 and not a[1] for a in answers)
    assert any(m[8] is not None for m in expected["matches"])  # escalation waves
    assert any(m[8] is None for m in expected["matches"])  # nearest helpers asked
    assert any(m[6].startswith("after a repeat") for m in expected["matches"])  # a repeat asked for more
    assert len(expected["messages"]) > 40
    for table in ("needs", "matches", "messages", "audit"):
        assert got[table] == expected[table], table


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_that_search_second_rounds_ahead_write_what_the_sequential_path_writes(
    backend: str, tmp_path: Path, gazetteer: GazetteerGeocoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many posts for few helpers: the nearest are soon full, most lookups widen, and a group
    searches their second rounds ahead and reads those helpers at once (``helpers_further``).
    What it writes and answers stays what the posts one by one write and get. The groups' index
    forgets at once what it noted busy, as if another worker had filled the offers."""
    monkeypatch.setattr(live_module, "BUSY_MEMORY_S", 0.0)
    rng = np.random.default_rng(7)
    lat, lon = PLACES[0]
    offers = [
        {
            "categories": ["water"],
            "capacity": 1,
            "radius_km": 40.0,
            "lat": lat + float(rng.normal(0, 0.05)),
            "lon": lon + float(rng.normal(0, 0.05)),
            "phone": f"+7916{k:07d}",
        }
        for k in range(60)
    ]
    posts = [
        NeedIn.model_validate(
            {
                "category": "water",
                "quantity": int(rng.integers(1, 4)),
                "lat": lat + float(rng.normal(0, 0.03)),
                "lon": lon + float(rng.normal(0, 0.03)),
                "contact_phone": f"+7926{k:07d}",
            }
        )
        for k in range(60)
    ]
    ahead = [0]  # lookups whose second round a group searched ahead
    real = LiveOfferIndex._search_rounds

    def search(self: LiveOfferIndex, *args: Any) -> set[int]:
        if args[3].min() > 16:  # a second round's width (the first's is 16 here)
            ahead[0] += len(args[0])
        return real(self, *args)

    monkeypatch.setattr(LiveOfferIndex, "_search_rounds", search)
    one_by_one, expected, grouped, got, sizes = _sequential_and_grouped(
        backend, tmp_path, offers, posts, rng, gazetteer
    )
    assert max(sizes) > 1
    assert [_answer(o) for o in grouped] == [_answer(o) for o in one_by_one]
    for table in ("needs", "matches", "messages", "audit"):
        assert got[table] == expected[table], table
    assert ahead[0] > 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_that_read_critical_needs_later_waves_ahead_write_what_the_sequential_path_writes(
    backend: str, tmp_path: Path, gazetteer: GazetteerGeocoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Critical posts with no helper within the first waves' radii: each goes from wave to wave,
    then to its nearest helpers, soon all busy. A group searches those later lookups ahead and reads
    their helpers together: fewer reads of the helpers' facts than a group that reads ahead only
    the first waves, and the same writes and answers as the posts one by one."""
    monkeypatch.setattr(live_module, "BUSY_MEMORY_S", 0.0)
    rng = np.random.default_rng(8)
    towns = [(55.15, 40.56), (56.0, 38.0), (54.5, 42.0), (59.9, 30.3)]  # each with helpers of its own
    offers = [
        {
            "categories": ["water"],
            "capacity": 1,
            "radius_km": 90.0,
            "lat": lat + float(rng.normal(0, 0.03)),
            # ~25 km east: beyond waves 1 and 2; ~65 km: beyond wave 3, for the nearest helpers after it
            "lon": lon + (0.4 if k < 10 else 1.0) + float(rng.normal(0, 0.03)),
            "phone": f"+7916{t}{k:06d}",
        }
        for t, (lat, lon) in enumerate(towns)
        for k in range(18)
    ]
    posts = []
    for k in range(48):
        lat, lon = towns[k % len(towns)]
        body = {
            "category": "water",
            "urgency": "critical",
            "quantity": int(rng.integers(1, 3)),
            "lat": lat + float(rng.normal(0, 0.01)),
            "lon": lon + float(rng.normal(0, 0.01)),
            "contact_phone": f"+7926{k:07d}",
        }
        posts.append(NeedIn.model_validate(body))
    reads = [0]
    real_read = proposals.CandidateFacts._read

    def read(self: proposals.CandidateFacts, *args: Any) -> None:
        reads[0] += 1
        real_read(self, *args)

    monkeypatch.setattr(proposals.CandidateFacts, "_read", read)
    runs = {}  # reads of both paths; the sequential path's are the same in both runs
    real_lookups = proposals.intake_lookups
    for ahead in ("every lookup", "first waves only"):
        if ahead == "first waves only":
            monkeypatch.setattr(proposals, "intake_lookups", lambda **kw: real_lookups(**kw)[:1])
        (tmp_path / ahead).mkdir()
        one_by_one, expected, grouped, got, sizes = _sequential_and_grouped(
            backend, tmp_path / ahead, offers, posts, np.random.default_rng(3), gazetteer
        )
        assert max(sizes) > 1
        assert [_answer(o) for o in grouped] == [_answer(o) for o in one_by_one]
        for table in ("needs", "matches", "messages", "audit"):
            assert got[table] == expected[table], (ahead, table)
        waves = Counter(m[8] for m in expected["matches"])
        assert waves[3] > 0  # nobody within waves 1 and 2: wave 3 asks, then the nearest helpers
        assert waves[None] > 0
        assert waves[1] == waves[2] == 0
        runs[ahead] = reads[0]
        reads[0] = 0
    assert runs["every lookup"] < runs["first waves only"], runs


def _post(lat: float = 55.15, lon: float = 40.56, **kw: Any) -> NeedIn:
    body = {"category": "water", "quantity": 1, "urgency": "normal", "lat": lat, "lon": lon, **kw}
    return NeedIn.model_validate(body)


def _group(url: str, items: list[NeedIn], live: LiveOfferIndex | None = None) -> list[intake.Outcome]:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            out = intake.intake_group(
                session=session, items=items, settings=_settings(url), live=live or LiveOfferIndex()
            )
            session.commit()
    finally:
        engine.dispose()
    return out


def test_a_repeat_in_the_same_group_merges_into_the_first(client: TestClient, database_url: str, db: Session) -> None:
    r = client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 5,
            "radius_km": 20,
            "lat": 55.15,
            "lon": 40.56,
            "phone": "+79160000001",
        },
    )
    assert r.status_code == 201
    phone = "+79261234567"
    first, again, other = _group(
        database_url,
        [
            _post(contact_phone=phone, description="two bottles"),
            _post(lat=55.152, contact_phone=phone, description="still no water", urgency="critical", quantity=3),
            _post(contact_phone="+79267654321", description="someone else"),
        ],
    )
    assert first.need is not None
    assert again.need is not None
    assert other.need is not None
    assert (first.merged, again.merged, other.merged) == (False, True, False)
    assert again.need.id == first.need.id
    assert other.need.id != first.need.id
    assert first.need.helpers_in_range == 1
    assert again.need.helpers_in_range == 0
    # Each answer says what the need was when that post was handled.
    assert first.need.description == "two bottles"
    assert first.need.urgency.value == "normal"
    assert again.need.description is not None
    assert again.need.description.startswith("two bottles\n[")
    assert again.need.description.endswith("api] still no water")
    assert (again.need.urgency.value, again.need.quantity) == ("critical", 3)
    (need,) = db.scalars(select(Need).where(Need.contact_phone == phone))
    assert (need.urgency.value, need.quantity) == ("critical", 3)
    assert need.description is not None
    assert need.description.startswith("two bottles\n[")
    assert need.description.endswith("UTC, api] still no water")
    actions = db.execute(
        select(AuditEvent.action, AuditEvent.entity_id).where(AuditEvent.entity == "need").order_by(AuditEvent.id)
    ).all()
    assert [tuple(a) for a in actions] == [("created", need.id), ("repeat_merged", need.id), ("created", other.need.id)]
    # The merge asked nobody and sent nothing more: one request and one "received" SMS per new need.
    assert [m.need_id for m in db.scalars(select(Match).order_by(Match.id))] == [need.id, other.need.id]
    received = [m.need_id for m in db.scalars(select(Message).where(Message.idempotency_key.like("need:%")))]
    assert Counter(received) == Counter([need.id, other.need.id])


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeats_asking_for_more_within_a_group_ask_as_one_by_one(
    backend: str, tmp_path: Path, gazetteer: GazetteerGeocoder
) -> None:
    """A need created and bumped in one group, and a stored need bumped twice in one group: the
    bumps ask the next helpers for the added units (never one asked before in the group or the
    database), as the same posts one by one do."""
    offers = [
        {"categories": ["water"], "capacity": 1, "radius_km": 30, "lat": 55.15, "lon": 40.56 + km / 63.8}
        | {"phone": f"+7916000{km:04d}"}
        for km in range(1, 7)
    ]
    phone = "+79261234567"
    groups = [
        [
            _post(contact_phone=phone, quantity=1),
            _post(contact_phone=phone, quantity=2),  # created above in this group: one more unit
            _post(lat=55.6, contact_phone="+79267654321"),  # someone else, out of everyone's reach
            _post(contact_phone=phone, quantity=4),  # bumped twice in this group: two more
        ],
        [_post(contact_phone=phone, quantity=5), _post(contact_phone=phone, quantity=5)],  # stored: one more, then none
    ]
    written, answered = [], []
    for way in ("one by one", "groups"):
        with _database(backend, tmp_path / way.replace(" ", "-"), offers, gazetteer) as url:
            settings, live = _settings(url), LiveOfferIndex()
            engine = make_engine(url)
            out: list[intake.Outcome] = []
            with make_sessionmaker(engine)() as session:
                for group in groups:
                    if way == "groups":
                        out += intake.intake_group(session=session, items=group, settings=settings, live=live)
                        session.commit()
                    else:
                        out += [
                            intake.intake_one(session=session, need_in=p, settings=settings, live=live) for p in group
                        ]
            engine.dispose()
            written.append(_rows(url))
            answered.append([_answer(o) for o in out])
    assert answered[1] == answered[0]
    for table in ("needs", "matches", "messages", "audit"):
        assert written[1][table] == written[0][table], table
    need_id = answered[0][0][2]["id"]
    asks = [(m[2], m[3], m[6].split(":")[0]) for m in written[0]["matches"] if m[1] == need_id]
    # Offers 1..6 are the helpers 1..6 km away, in order.
    # The first group: the nearest at intake, one more for the second unit, two more for the
    # fourth; the second group: one more for the fifth unit, then nobody.
    assert asks == [(1, 1, "at intake")] + [(k, 1, "after a repeat") for k in (2, 3, 4, 5)]
    assert [a[1] for a in answered[0]] == [False, True, False, True, True, True]


def test_the_next_group_passes_over_offers_the_last_one_filled_without_reading_them(
    client: TestClient, database_url: str, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    offers = [
        client.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": capacity,
                "radius_km": 20,
                "lat": 55.15 + 0.01 * k,
                "lon": 40.56,
                "phone": f"+7916000000{k}",
            },
        ).json()
        for k, capacity in enumerate((1, 5))
    ]
    read: list[list[int]] = []
    real = proposals.CandidateFacts._read

    def recording(self: proposals.CandidateFacts, stmt: Any, ids: list[int]) -> None:
        read.append(list(ids))
        real(self, stmt, ids)

    monkeypatch.setattr(proposals.CandidateFacts, "_read", recording)
    live = LiveOfferIndex()
    (first,) = _group(database_url, [_post(contact_phone="+79260000001")], live)
    assert first.need is not None
    assert first.need.helpers_in_range == 2  # the nearer is asked: its one unit now awaits an answer
    full_helper = offers[0]["helper_id"]
    assert any(full_helper in ids for ids in read)
    read.clear()
    (second,) = _group(database_url, [_post(contact_phone="+79260000002")], live)
    assert second.need is not None
    assert second.need.helpers_in_range == 1  # the same as a fresh lookup finds ...
    assert not any(full_helper in ids for ids in read)  # ... without reading the full offer's helper again
    asked = db.execute(select(Match.need_id, Match.offer_id).order_by(Match.id)).all()
    assert [tuple(a) for a in asked] == [(first.need.id, offers[0]["id"]), (second.need.id, offers[1]["id"])]


def test_the_open_needs_limit_counts_earlier_posts_of_the_group(database_url: str, db: Session) -> None:
    phone = "+79261234567"
    items = [_post(lat=55.0 + 0.1 * k, contact_phone=phone) for k in range(12)]  # 11 km apart: no repeats
    out = _group(database_url, items)
    limit = _settings(database_url).max_open_needs_per_phone
    assert [o.error is None for o in out] == [True] * limit + [False] * (12 - limit)
    refused = out[-1].error
    assert isinstance(refused, TooManyRequestsError)
    assert str(refused).startswith(f"this phone already has {limit} open needs")
    assert len(list(db.scalars(select(Need.id)))) == limit


def _runner(url: str, engine_sessions: sessionmaker[Session]) -> intake.Runner:
    settings = _settings(url)
    return intake.make_runner(sessions=engine_sessions, settings=lambda: settings, live=LiveOfferIndex())


def test_a_failing_group_answers_each_post_and_loses_none(
    database_url: str, db: Session, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    build = service.build

    def bad_build(need_in: NeedIn, **kw: Any) -> Need:
        if need_in.description == "boom":
            raise RuntimeError("this post breaks the intake")
        return build(need_in, **kw)

    monkeypatch.setattr(service, "build", bad_build)
    engine = make_engine(database_url)
    try:
        run = _runner(database_url, make_sessionmaker(engine))
        items = [_post(lat=55.0 + 0.1 * k, contact_phone=f"+792600000{k:02d}", description=f"p{k}") for k in range(5)]
        items[2] = _post(description="boom")
        out = run(items)
    finally:
        engine.dispose()
    assert "retrying them one by one" in caplog.text
    assert isinstance(out[2].error, RuntimeError)
    good = [o for k, o in enumerate(out) if k != 2]
    assert all(o.error is None and o.need is not None and not o.merged for o in good)
    stored = {n.id: n for n in db.scalars(select(Need))}
    assert sorted(stored) == sorted(o.need.id for o in good if o.need is not None)
    assert sorted(n.description or "" for n in stored.values()) == ["p0", "p1", "p3", "p4"]
    created = Counter(db.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "created")))
    assert created == Counter(stored.keys())
    received = Counter(db.scalars(select(Message.need_id).where(Message.idempotency_key.like("need:%"))))
    assert received == Counter(stored.keys())


def test_a_group_whose_writes_fail_is_written_post_by_post(
    database_url: str, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    record_each = audit_service.record_each

    def failing(session: Session, events: Any) -> None:
        calls.append(1)
        raise OperationalError("INSERT INTO audit_events", {}, RuntimeError("connection lost"))

    monkeypatch.setattr(audit_service, "record_each", failing)
    engine = make_engine(database_url)
    try:
        run = _runner(database_url, make_sessionmaker(engine))
        phone = "+79261234567"
        # The second repeats the first: one by one it still merges into it.
        out = run([_post(contact_phone=phone, description="a"), _post(contact_phone=phone, description="b"), _post()])
    finally:
        engine.dispose()
    monkeypatch.setattr(audit_service, "record_each", record_each)
    assert calls == [1]  # the group was tried once, then each post on its own
    assert [(o.error, o.merged) for o in out] == [(None, False), (None, True), (None, False)]
    assert out[0].need is not None
    assert out[1].need is not None
    assert out[1].need.id == out[0].need.id
    needs = list(db.scalars(select(Need).order_by(Need.id)))
    assert len(needs) == 2
    assert needs[0].description is not None
    assert needs[0].description.startswith("a\n")
    actions = [a for (a,) in db.execute(select(AuditEvent.action).order_by(AuditEvent.id))]
    assert actions == ["created", "repeat_merged", "created"]


def test_an_error_of_one_post_keeps_its_shape_over_http(client: TestClient) -> None:
    phone = "+79261234567"
    for k in range(10):
        assert (
            client.post(
                "/api/needs", json={"category": "water", "lat": 55.0 + 0.1 * k, "lon": 40.5, "contact_phone": phone}
            ).status_code
            == 201
        )
    r = client.post("/api/needs", json={"category": "water", "lat": 56.5, "lon": 40.5, "contact_phone": phone})
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"].startswith("this phone already has 10 open needs")
    again = client.post("/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.5, "contact_phone": phone})
    assert again.status_code == 200
    assert again.json()["merged"] is True
    bad = client.post("/api/needs", json={"category": "water", "address": "Nowhere-at-all-xyz"})
    assert bad.status_code == 422


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(base: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextmanager
def _served(settings: Settings, gazetteer: GazetteerGeocoder) -> Iterator[tuple[str, Any]]:
    app = create_app(settings, geocoder=gazetteer)
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_many_clients_at_once_each_need_stored_exactly_once(
    settings: Settings, gazetteer: GazetteerGeocoder, db: Session
) -> None:
    clients, per_client = 16, 12
    with _served(settings, gazetteer) as (base, app):
        for k in range(6):
            status, _ = _call(
                base,
                "/api/offers",
                {
                    "categories": ["water", "food"],
                    "capacity": 3,
                    "radius_km": 30,
                    "lat": 55.15 + 0.01 * k,
                    "lon": 40.56,
                    "phone": f"+791600000{k:02d}",
                },
            )
            assert status == 201

        def client(c: int) -> list[tuple[int, Any]]:
            out = []
            for k in range(per_client):
                body = {
                    "category": "water" if k % 2 else "food",
                    "urgency": ("critical", "urgent", "normal")[k % 3],
                    "lat": 55.0 + 0.05 * k,  # 5.5 km apart: no repeats
                    "lon": 40.5 + 0.02 * c,
                    "contact_phone": f"+7926{c:03d}{k:04d}",
                    "description": f"client {c} post {k}",
                }
                out.append(_call(base, "/api/needs", body))
            return out

        with ThreadPoolExecutor(clients) as pool:
            answers = [a for batch in pool.map(client, range(clients)) for a in batch]
        groups = app.state.intake
        assert groups.posts == clients * per_client
        assert groups.largest > 1  # posts did share transactions
    assert [s for s, _ in answers] == [201] * (clients * per_client)
    ids = [a["id"] for _, a in answers]
    assert len(set(ids)) == len(ids)
    stored = {n.id: n for n in db.scalars(select(Need))}
    assert sorted(stored) == sorted(ids)
    for _, a in answers:
        need = stored[a["id"]]
        assert (need.code, need.description) == (a["code"], a["description"])
    received = Counter(db.scalars(select(Message.need_id).where(Message.idempotency_key.like("need:%"))))
    assert received == Counter(ids)
    created = Counter(
        db.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "created", AuditEvent.entity == "need"))
    )
    assert created == Counter(ids)
    asked = Counter(db.execute(select(Match.need_id, Match.offer_id)).all())
    assert max(asked.values()) == 1
    assert sum(a["helpers_in_range"] > 0 for _, a in answers) > 0


def test_groups_are_capped_and_every_post_gets_its_own_answer() -> None:
    sizes: list[int] = []
    release = threading.Event()

    def run(items: list[NeedIn]) -> list[intake.Outcome]:
        release.wait(10)  # the first group holds the thread while the others queue
        sizes.append(len(items))
        if any(i.description == "bad" for i in items):
            raise RuntimeError("the runner itself failed")
        return [intake.Outcome(merged=i.description == "merged") for i in items]

    groups = intake.IntakeGroups(run, max_items=3, wait_s=0.0, gap_s=0.0)

    async def post_all() -> list[intake.Outcome | BaseException]:
        first = asyncio.ensure_future(groups.submit(_post(description="first")))
        await asyncio.sleep(0.05)
        rest = [groups.submit(_post(description="merged" if k % 2 else f"p{k}")) for k in range(7)]
        tasks = [asyncio.ensure_future(r) for r in rest]
        await asyncio.sleep(0.05)
        release.set()
        return list(await asyncio.gather(first, *tasks, return_exceptions=True))

    answers = asyncio.run(post_all())
    assert sizes[0] == 1
    assert sizes[1:] == [3, 3, 1]  # what queued meanwhile, three at a time
    assert [a.merged for a in answers if isinstance(a, intake.Outcome)] == [False] + [k % 2 == 1 for k in range(7)]
    # A runner that raises (a bug: it answers every post) still answers each post with the error.
    bad = asyncio.run(groups.submit(_post(description="bad")))
    assert isinstance(bad.error, RuntimeError)
    groups.close()
    assert groups.groups == 5
    assert groups.posts == 9
    assert groups.largest == 3


def _group_sizes(*, wait_s: float, gap_s: float, pauses: list[float]) -> list[int]:
    """The groups ``IntakeGroups`` forms, under load, of posts submitted with these pauses before
    each but the first. Under load: a first post's group is held until two more have queued, and
    those form the second group (of two)."""
    sizes: list[int] = []
    release = threading.Event()

    def run(items: list[NeedIn]) -> list[intake.Outcome]:
        release.wait(10)
        sizes.append(len(items))
        return [intake.Outcome() for _ in items]

    groups = intake.IntakeGroups(run, max_items=64, wait_s=wait_s, gap_s=gap_s)

    async def post_all() -> None:
        first = asyncio.ensure_future(groups.submit(_post()))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(groups.submit(_post())) for _ in range(2)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, *queued)
        tasks = [asyncio.ensure_future(groups.submit(_post()))]
        for pause in pauses:
            await asyncio.sleep(pause)
            tasks.append(asyncio.ensure_future(groups.submit(_post())))
        await asyncio.gather(*tasks)

    try:
        asyncio.run(post_all())
    finally:
        groups.close()
    assert groups.posts == len(pauses) + 4
    assert sizes[:2] == [1, 2]
    return sizes[2:]


def test_under_load_a_group_takes_the_posts_that_follow_within_the_gap() -> None:
    # Posts 50 ms apart, a 1 s gap: one group, although none had queued when the first was taken.
    assert _group_sizes(wait_s=5.0, gap_s=1.0, pauses=[0.05, 0.05, 0.05]) == [4]


def test_a_pause_longer_than_the_gap_starts_a_new_group() -> None:
    assert _group_sizes(wait_s=5.0, gap_s=0.1, pauses=[0.01, 0.01, 0.6, 0.01]) == [3, 2]


def test_a_group_stops_taking_posts_after_its_wait() -> None:
    # Posts keep coming within the gap, but a group takes them for 0.3 s at most.
    sizes = _group_sizes(wait_s=0.3, gap_s=1.0, pauses=[0.1] * 9)
    assert len(sizes) >= 2
    assert max(sizes) <= 5  # the first post and those within 0.3 s of it (three, four with slack)


def test_a_post_after_a_lone_post_is_written_at_once() -> None:
    # One client posting one at a time: nothing to wait for (a 5 s gap would show).
    sizes: list[int] = []

    def run(items: list[NeedIn]) -> list[intake.Outcome]:
        sizes.append(len(items))
        return [intake.Outcome() for _ in items]

    groups = intake.IntakeGroups(run, max_items=64, wait_s=10.0, gap_s=5.0)

    async def one_at_a_time() -> float:
        started = time.monotonic()
        for _ in range(3):
            await groups.submit(_post())
        return time.monotonic() - started

    try:
        took = asyncio.run(one_at_a_time())
    finally:
        groups.close()
    assert sizes == [1, 1, 1]
    assert took < 2.0


def test_a_commit_lost_on_the_way_back_stores_the_group_once(database_url: str, db: Session) -> None:
    engine = make_engine(database_url)
    made = make_sessionmaker(engine)
    lost = [True]

    def sessions() -> Session:
        session = made()
        commit = session.commit

        def commit_then_fail() -> None:
            commit()
            if lost[0]:
                lost[0] = False
                raise OperationalError("COMMIT", {}, RuntimeError("server closed the connection unexpectedly"))

        session.commit = commit_then_fail  # type: ignore[method-assign]
        return session

    try:
        run = _runner(database_url, sessions)  # type: ignore[arg-type]
        out = run([_post(lat=55.0 + 0.1 * k, contact_phone=f"+792611100{k:02d}") for k in range(4)])
    finally:
        engine.dispose()
    assert not lost[0]
    assert all(o.error is None and o.need is not None and not o.merged for o in out)
    stored = sorted(db.scalars(select(Need.id)))
    assert stored == sorted(o.need.id for o in out if o.need is not None)  # four needs, not eight
    assert len(stored) == 4
