"""The unmet statistics' fast path against their slow definition, on random data in the database.

The oracle below is the definition as it was first written: every open, unexpired need loaded row
by row, its pending units subtracted in Python, reach asked for all needs at once (of every helper
however far: the unbounded nearest-capable search), the groups summed in a dict, the oldest taken
from a second query over the needs' creation times.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
import pytest
from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session, sessionmaker

import matching
from aidmatch.categories import CATEGORY_INDEX, Category
from aidmatch.database import utcnow
from aidmatch.enums import OPEN_NEED_STATUSES, MatchStatus, NeedStatus, OfferStatus, Urgency
from aidmatch.helpers.models import Helper
from aidmatch.matches import service
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.live_needs import URGENCY_INDEX, LiveNeeds
from aidmatch.matches.models import Match
from aidmatch.matches.proposals import busy_helpers, pending_units
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory
from aidmatch.query import PageParams
from geo.sphere import haversine_km

CATEGORIES = list(Category)[:4]  # a few categories, so that helpers and needs meet
NOBODYS = list(Category)[4]  # needed by some, offered by nobody


def _seed(session: Session, rng: np.random.Generator, now: datetime) -> None:
    """Random helpers, offers, needs and matches around Ryazan (ids in insert order)."""
    n_helpers, n_needs = 100, 400
    helper_ids = session.scalars(
        insert(Helper).returning(Helper.id),
        [
            {"name": f"h{i}", "phone": f"+7900{i:07d}", "max_active_tasks": int(rng.integers(1, 6))}
            for i in range(n_helpers)
        ],
    ).all()
    offer_rows = []
    for h in helper_ids:
        capacity = int(rng.integers(1, 5))
        until = None if rng.random() < 0.8 else now + timedelta(hours=float(rng.uniform(-5, 5)))
        offer_rows.append(
            {
                "helper_id": h,
                "capacity": capacity,
                "capacity_used": int(rng.integers(0, capacity + 1)),
                "lat": 54.6 + float(rng.normal(0, 0.3)),
                "lon": 39.7 + float(rng.normal(0, 0.5)),
                "radius_km": float(rng.choice([3.0, 10.0, 30.0, 80.0])),
                "available_until": until,
                "status": OfferStatus.active if rng.random() < 0.85 else OfferStatus.paused,
                "created_at": now,
                "updated_at": now,
            }
        )
    offer_ids = session.scalars(insert(Offer).returning(Offer.id), offer_rows).all()
    cats = []
    for o in offer_ids:
        for c in rng.choice(len(CATEGORIES), size=int(rng.integers(0, 3)), replace=False):
            cats.append({"offer_id": o, "category": CATEGORIES[int(c)]})
    if cats:
        session.execute(insert(OfferCategory), cats)
    need_rows = []
    statuses = [NeedStatus.open] * 6 + [NeedStatus.partially_assigned] * 2 + [NeedStatus.assigned, NeedStatus.fulfilled]
    for i in range(n_needs):
        quantity = int(rng.integers(1, 6))
        status = statuses[int(rng.integers(0, len(statuses)))]
        # Whole seconds apart at most, with ties: the order of equal ages is by id.
        created = now - timedelta(seconds=int(rng.integers(0, 50)) * 60)
        need_rows.append(
            {
                "code": f"T{i:05d}",
                "category": NOBODYS if rng.random() < 0.05 else CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
                "quantity": quantity,
                "quantity_assigned": int(rng.integers(0, quantity)) if status is NeedStatus.partially_assigned else 0,
                "urgency": list(Urgency)[int(rng.integers(0, 3))],
                "lat": 54.6 + float(rng.normal(0, 0.6)),
                "lon": 39.7 + float(rng.normal(0, 0.9)),
                "max_distance_km": None if rng.random() < 0.7 else float(rng.uniform(1, 40)),
                "status": status,
                "created_at": created,
                "updated_at": created,
                "expires_at": None if rng.random() < 0.2 else now + timedelta(hours=float(rng.uniform(-3, 48))),
            }
        )
    need_ids = session.scalars(insert(Need).returning(Need.id), need_rows).all()
    # As the service writes them: each match names its offer's helper, one per (need, helper).
    helper_of = dict(zip(offer_ids, helper_ids, strict=True))
    matches = []
    for _ in range(150):
        offer_id = int(rng.choice(offer_ids))
        matches.append(
            {
                "need_id": int(rng.choice(need_ids)),
                "offer_id": offer_id,
                "helper_id": helper_of[offer_id],
                "quantity": int(rng.integers(1, 3)),
                "distance_km": 1.0,
                "status": list(MatchStatus)[int(rng.integers(0, len(MatchStatus)))],
                "created_at": now,
                "updated_at": now,
            }
        )
    # Some needs whose every helper within reach was asked and said no: nobody is left to ask.
    offer_lat = np.array([r["lat"] for r in offer_rows])
    offer_lon = np.array([r["lon"] for r in offer_rows])
    for i in rng.choice(len(need_ids), 12, replace=False).tolist():
        km = haversine_km(need_rows[i]["lat"], need_rows[i]["lon"], offer_lat, offer_lon)
        matches += [
            {
                "need_id": need_ids[i],
                "offer_id": offer_ids[j],
                "helper_id": helper_of[offer_ids[j]],
                "quantity": 1,
                "distance_km": float(km[j]),
                "status": MatchStatus.declined,
                "created_at": now,
                "updated_at": now,
            }
            for j in np.flatnonzero(km <= 80.0).tolist()  # every radius is at most 80 km
        ]
    unique: dict[tuple[object, object], dict[str, object]] = {}
    for m in matches:
        unique.setdefault((m["need_id"], m["helper_id"]), m)
    session.execute(insert(Match), list(unique.values()))
    session.commit()


def _slow_unmet(
    session: Session, live: LiveOfferIndex, now: datetime
) -> tuple[service.OpenNeeds, list[datetime], np.ndarray, np.ndarray]:
    """The definition: (needs, created_at, nearest km, reason) for every unmet need, by id."""
    live.refresh(session=session, now=now)
    rows = session.execute(
        select(
            Need.id,
            Need.lat,
            Need.lon,
            Need.category,
            Need.quantity - Need.quantity_assigned,
            Need.urgency,
            Need.max_distance_km,
        )
        .where(Need.status.in_(OPEN_NEED_STATUSES), or_(Need.expires_at.is_(None), Need.expires_at > now))
        .order_by(Need.id)
    ).all()
    pending = pending_units(session, "need")
    remaining = np.array([r[4] - pending.get(r[0], 0) for r in rows], dtype=np.int64)
    keep = remaining > 0
    needs = service.OpenNeeds(
        id=np.array([r[0] for r in rows], dtype=np.int64)[keep],
        lat=np.array([r[1] for r in rows], dtype=np.float64)[keep],
        lon=np.array([r[2] for r in rows], dtype=np.float64)[keep],
        category=np.array([CATEGORY_INDEX[Category(r[3])] for r in rows], dtype=np.int64)[keep],
        remaining=remaining[keep],
        urgency=np.array([URGENCY_INDEX[Urgency(r[5])] for r in rows], dtype=np.int64)[keep],
        max_km=np.array([np.inf if r[6] is None else r[6] for r in rows], dtype=np.float64)[keep],
    )
    # Reach for all needs at once, the nearest qualifying helper searched however far (exact).
    offers, left = live._columns(pending_units(session, "offer"), busy_helpers(session))
    everyone = np.ones(len(left), dtype=np.int64)
    if len(needs.id) and len(live._index):
        _, nearest = live._index.knn(needs.lat, needs.lon, needs.category, 1)
        nearest_km = nearest[:, 0]
        args = (needs.lat, needs.lon, needs.category)
        anyone, _ = matching.nearest_capable(
            live._index, offers, everyone, *args, max_km=needs.max_km, k=1, max_candidates=None
        )
        room, _ = matching.nearest_capable(
            live._index, offers, left, *args, max_km=needs.max_km, k=1, max_candidates=None
        )
        in_range, with_room = anyone[:, 0] >= 0, room[:, 0] >= 0
    else:
        n = len(needs.id)
        nearest_km, in_range, with_room = np.full(n, np.inf), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    reason = np.select(
        [~np.isfinite(nearest_km), ~in_range, ~with_room],
        ["no_helper_of_category", "outside_every_radius", "all_in_range_busy"],
        default="waiting_for_helper",
    )
    # Waiting, unless every helper with room in range was asked about the need before: all pairs.
    asked = set(
        session.execute(select(Match.need_id, Offer.helper_id).join(Offer, Offer.id == Match.offer_id)).tuples()
    )
    helper_of = live._helper_id[: len(left)]
    for i in np.flatnonzero(reason == "waiting_for_helper").tolist():
        km = haversine_km(needs.lat[i], needs.lon[i], offers.lat, offers.lon)
        serves = ((offers.category_mask >> needs.category[i]) & 1) == 1
        ok = serves & offers.is_available & (left > 0) & (km <= offers.radius_km) & (km <= needs.max_km[i])
        if not any((int(needs.id[i]), int(h)) not in asked for h in helper_of[ok].tolist()):
            reason[i] = "all_in_range_asked"
    created = dict(session.execute(select(Need.id, Need.created_at)).tuples().all())
    return needs, [created[i] for i in needs.id.tolist()], nearest_km, reason


def _slow_stats(session: Session, live: LiveOfferIndex, now: datetime) -> dict[str, object]:
    needs, created_at, _, reason = _slow_unmet(session, live, now)
    urgencies = {v: k for k, v in URGENCY_INDEX.items()}
    groups: dict[tuple[str, str, str], list[int]] = {}
    for c, urg, r, units in zip(
        needs.category.tolist(), needs.urgency.tolist(), reason.tolist(), needs.remaining.tolist(), strict=True
    ):
        entry = groups.setdefault((list(Category)[c].value, urgencies[urg].value, r), [0, 0])
        entry[0] += 1
        entry[1] += units
    oldest = min(created_at, default=None)
    return {
        "unmet_needs": len(needs.id),
        "unmet_units": int(needs.remaining.sum()),
        "oldest_unmet_age_s": (now - oldest).total_seconds() if oldest is not None else None,
        "reasons": service.UNMET_REASONS,
        "groups": [
            {"category": c, "urgency": urg, "reason": r, "needs": v[0], "units": v[1]}
            for (c, urg, r), v in sorted(groups.items())
        ],
    }


def _slow_list(session: Session, live: LiveOfferIndex, now: datetime, reasons: list[str]) -> list[tuple[object, ...]]:
    needs, created_at, nearest_km, reason = _slow_unmet(session, live, now)
    pick = np.isin(reason, reasons) if reasons else np.ones(len(reason), dtype=bool)
    ordered = sorted(np.flatnonzero(pick).tolist(), key=lambda i: created_at[i])
    return [
        (
            int(needs.id[i]),
            int(needs.remaining[i]),
            str(reason[i]),
            (now - created_at[i]).total_seconds(),
            float(nearest_km[i]) if np.isfinite(nearest_km[i]) else None,
        )
        for i in ordered
    ]


@pytest.mark.parametrize("in_memory", [False, True], ids=["from-database", "live-needs"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_unmet_statistics_equal_their_slow_definition(db: Session, seed: int, in_memory: bool) -> None:
    rng = np.random.default_rng(seed)
    now = utcnow()
    _seed(db, rng, now)
    live = LiveOfferIndex()
    needs = LiveNeeds() if in_memory else None
    fast = service.unmet_stats(session=db, live=live, now=now, needs=needs)
    slow = _slow_stats(db, live, now)
    assert fast == slow
    assert int(slow["unmet_needs"]) > 0  # type: ignore[call-overload]
    assert {g["reason"] for g in slow["groups"]} == set(service.UNMET_REASONS)  # type: ignore[attr-defined]

    for reasons in ([], ["all_in_range_busy"], ["waiting_for_helper", "outside_every_radius"], ["all_in_range_asked"]):
        expected = _slow_list(db, live, now, reasons)
        for offset, limit in ((0, 1000), (3, 7)):
            items, total = service.unmet_needs(
                session=db,
                live=live,
                now=now,
                reasons=reasons,
                page=PageParams(limit=limit, offset=offset),
                needs=needs,
            )
            assert total == len(expected)
            got = [(i["id"], i["units"], i["reason"], i["age_s"], i["nearest_helper_km"]) for i in items]
            assert got == expected[offset : offset + limit]
    # The dashboard's overview: both from one computation, the same answers.
    page = PageParams(limit=25, offset=0)
    stats, items, total = service.unmet_overview(session=db, live=live, now=now, page=page, needs=needs)
    assert stats == slow
    assert (items, total) == service.unmet_needs(session=db, live=live, now=now, reasons=[], page=page, needs=needs)
    # Its filters choose among every unmet need, then the page is cut: the whole list, filtered.
    everything, _ = service.unmet_needs(
        session=db, live=live, now=now, reasons=[], page=PageParams(limit=10**6, offset=0), needs=needs
    )
    for only in (
        service.UnmetFilter(category=CATEGORIES[1]),
        service.UnmetFilter(urgency=Urgency.critical),
        service.UnmetFilter(created_since=now - timedelta(minutes=20)),
        service.UnmetFilter(category=CATEGORIES[0], urgency=Urgency.normal, created_since=now - timedelta(minutes=30)),
    ):
        want = [
            i
            for i in everything
            if (only.category is None or i["category"] == only.category.value)
            and (only.urgency is None or i["urgency"] == only.urgency.value)
            and (only.created_since is None or float(i["age_s"]) <= (now - only.created_since).total_seconds())  # type: ignore[arg-type]
        ]
        assert 0 < len(want) < len(everything), only
        small = PageParams(limit=5, offset=0)
        _, items, total = service.unmet_overview(session=db, live=live, now=now, page=small, needs=needs, only=only)
        assert (items, total) == (want[:5], len(want)), only


@pytest.mark.parametrize("in_memory", [False, True], ids=["from-database", "live-needs"])
def test_no_unmet_need_gives_empty_statistics(db: Session, in_memory: bool) -> None:
    live = LiveOfferIndex()
    needs = LiveNeeds() if in_memory else None
    now = utcnow()
    assert service.unmet_stats(session=db, live=live, now=now, needs=needs) == _slow_stats(db, live, now)
    page = PageParams(limit=10, offset=0)
    assert service.unmet_needs(session=db, live=live, now=now, reasons=[], page=page, needs=needs) == (
        [],
        0,
    )


def test_the_cache_reuses_an_answer_for_its_time_only(db: Session) -> None:
    clock = [0.0]
    cache = service.UnmetStatsCache(5.0, clock=lambda: clock[0])
    live = LiveOfferIndex()
    now = utcnow()
    _seed(db, np.random.default_rng(7), now)
    first = cache.stats(session=db, live=live, now=now)
    db.execute(insert(Need), [{**_need_row(now), "code": "LATE01"}])
    db.commit()
    later = now + timedelta(seconds=3)
    clock[0] = 3.0
    again = cache.stats(session=db, live=live, now=later)
    assert again["unmet_needs"] == first["unmet_needs"]  # the worker's copy
    assert again["oldest_unmet_age_s"] == pytest.approx(first["oldest_unmet_age_s"] + 3)  # type: ignore[operator]
    clock[0] = 5.0
    fresh = cache.stats(session=db, live=live, now=later)
    assert fresh == service.unmet_stats(session=db, live=live, now=later)
    assert fresh["unmet_needs"] == first["unmet_needs"] + 1  # type: ignore[operator]
    uncached = service.UnmetStatsCache(0.0, clock=lambda: clock[0])
    assert uncached.stats(session=db, live=live, now=later) == fresh


def _need_row(now: datetime) -> dict[str, object]:
    return {
        "category": CATEGORIES[0],
        "quantity": 1,
        "quantity_assigned": 0,
        "urgency": Urgency.normal,
        "lat": 54.6,
        "lon": 39.7,
        "status": NeedStatus.open,
        "created_at": now,
        "updated_at": now,
    }


def test_a_stale_copy_is_answered_while_the_next_is_computed_in_the_background(db: Session) -> None:
    clock = [0.0]
    live = LiveOfferIndex()
    now = utcnow()
    _seed(db, np.random.default_rng(8), now)
    sessions = _HeldSessions(sessionmaker(bind=db.get_bind()))
    sessions.release.set()
    cache = service.UnmetStatsCache(5.0, sessions=sessions, max_stale_s=60.0, stale_wait_s=30.0, clock=lambda: clock[0])
    cache.warm(live)
    cache.close()
    first, age = cache.served(session=db, live=live, now=now)  # the warm copy
    assert first == service.unmet_stats(session=db, live=live, now=now)
    assert age == 0.0
    db.execute(insert(Need), [{**_need_row(now), "code": "LATE02"}])
    db.commit()
    clock[0] = 6.0  # stale: answered as it is, renewed behind
    stale, age = cache.served(session=db, live=live, now=now)
    assert (stale["unmet_needs"], age) == (first["unmet_needs"], 6.0)
    cache.close()
    renewed, age = cache.served(session=db, live=live, now=now)
    assert renewed["unmet_needs"] == first["unmet_needs"] + 1  # type: ignore[operator]
    assert renewed == service.unmet_stats(session=db, live=live, now=now)
    assert age == 0.0  # counted from the start of its computation, at 6.0
    db.execute(insert(Need), [{**_need_row(now), "code": "LATE03"}])
    db.commit()
    clock[0] = 100.0  # too old to answer while the new one comes within the wait
    calls = sessions.calls
    assert cache.stats(session=db, live=live, now=now)["unmet_needs"] == first["unmet_needs"] + 2  # type: ignore[operator]
    assert sessions.calls == calls + 1  # renewed in the background and waited for, not by the caller


class _HeldSessions:
    """A session factory whose sessions are handed out only once ``release`` is set (a slow renewal),
    or that raises while ``fail`` is set (a renewal that fails)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions, self.release, self.asked = sessions, threading.Event(), threading.Event()
        self.fail = threading.Event()
        self.calls = 0

    def __call__(self) -> Session:
        self.calls += 1
        self.asked.set()
        if self.fail.is_set():
            raise RuntimeError("the database went away")
        assert self.release.wait(30.0)
        return self.sessions()


class _Warmed(NamedTuple):
    clock: list[float]
    live: LiveOfferIndex
    now: datetime
    held: _HeldSessions
    cache: service.UnmetStatsCache
    first: dict[str, object]  # the warm copy's statistics, from before a need came


def _warmed(db: Session, seed: int, *, stale_wait_s: float, late_code: str) -> _Warmed:
    """A cache (ttl 1 s, max_stale 60 s, a stepped clock at 0) with its warm copy, then one new need."""
    clock = [0.0]
    live = LiveOfferIndex()
    now = utcnow()
    _seed(db, np.random.default_rng(seed), now)
    held = _HeldSessions(sessionmaker(bind=db.get_bind()))
    held.release.set()
    cache = service.UnmetStatsCache(
        1.0, sessions=held, max_stale_s=60.0, stale_wait_s=stale_wait_s, clock=lambda: clock[0]
    )
    cache.warm(live)
    cache.close()
    first = cache.stats(session=db, live=live, now=now)
    db.execute(insert(Need), [{**_need_row(now), "code": late_code}])
    db.commit()
    return _Warmed(clock, live, now, held, cache, first)


def test_a_request_waits_only_so_long_for_a_copy_too_old_to_answer_at_once(db: Session) -> None:
    clock, live, now, held, cache, first = _warmed(db, 9, stale_wait_s=0.05, late_code="LATE04")
    held.release.clear()
    held.asked.clear()
    calls = held.calls
    clock[0] = 3600.0  # an hour with nobody asking; the renewal is slow (held)
    try:
        started = time.monotonic()
        old, age = cache.served(session=db, live=live, now=now)
        waited = time.monotonic() - started
        assert held.asked.wait(5.0)  # the renewal started …
        assert (old["unmet_needs"], age) == (first["unmet_needs"], 3600.0)  # … and the old copy was answered
        assert 0.05 <= waited < 5.0
        old_again, _ = cache.served(session=db, live=live, now=now)  # waits for the same renewal
        assert old_again["unmet_needs"] == first["unmet_needs"]
        assert held.calls == calls + 1  # not a second one
    finally:
        held.release.set()
        cache.close()
    renewed, age = cache.served(session=db, live=live, now=now)
    assert renewed == service.unmet_stats(session=db, live=live, now=now)
    assert renewed["unmet_needs"] == first["unmet_needs"] + 1  # type: ignore[operator]
    assert age == 0.0


def test_after_a_failed_renewal_a_copy_too_old_is_computed_by_its_caller(
    db: Session, caplog: pytest.LogCaptureFixture
) -> None:
    clock, live, now, held, cache, first = _warmed(db, 10, stale_wait_s=5.0, late_code="LATE05")
    held.fail.set()
    clock[0] = 2.0  # stale but young enough: answered, renewed behind (and the renewal fails)
    assert cache.stats(session=db, live=live, now=now) == first
    cache.close()
    clock[0] = 3.0
    assert cache.stats(session=db, live=live, now=now) == first  # fails again, not logged again
    cache.close()
    assert len([r for r in caplog.records if "unmet statistics" in r.getMessage()]) == 1
    clock[0] = 100.0  # too old, and the last renewal failed: the caller computes it
    calls = held.calls
    fresh, age = cache.served(session=db, live=live, now=now)
    assert held.calls == calls  # in the caller's own session, no renewal in the background
    assert fresh == service.unmet_stats(session=db, live=live, now=now)
    assert fresh["unmet_needs"] == first["unmet_needs"] + 1  # type: ignore[operator]
    assert age == 0.0
