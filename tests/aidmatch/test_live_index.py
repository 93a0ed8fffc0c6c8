"""The live offer index follows the database: random changes, late commits, checked by brute force."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

import matching
from aidmatch.categories import Category
from aidmatch.database import utcnow
from aidmatch.enums import OfferStatus
from aidmatch.helpers.models import Helper
from aidmatch.matches import live as live_module
from aidmatch.matches.live import Candidate, LiveOfferIndex, Points
from aidmatch.offers.models import Offer, OfferCategory
from geo.sphere import haversine_km

CATS = [Category.water, Category.food, Category.shelter]


def _brute(db: Session, lat: float, lon: float, category: Category, k: int) -> list[tuple[int, float]]:
    rows = db.execute(
        select(Offer.id, Offer.lat, Offer.lon, Offer.radius_km, Offer.capacity - Offer.capacity_used)
        .join(OfferCategory, OfferCategory.offer_id == Offer.id)
        .where(OfferCategory.category == category, Offer.status == OfferStatus.active)
    ).all()
    found = []
    for offer_id, olat, olon, radius, left in rows:
        d = float(haversine_km(lat, lon, olat, olon))
        if d <= radius and left > 0:
            found.append((offer_id, d))
    return sorted(found, key=lambda x: (x[1], x[0]))[:k]


def _helpers(db: Session, n: int) -> list[int]:
    """n helpers, inserted at once; their ids in order."""
    now = utcnow()
    rows = [{"name": f"h{i}", "phone": f"+7916{i:07d}", "created_at": now, "updated_at": now} for i in range(n)]
    return list(db.scalars(insert(Helper).returning(Helper.id, sort_by_parameter_order=True), rows))


def test_the_live_index_answers_like_brute_force_over_the_database_after_random_changes(db: Session) -> None:
    rng = np.random.default_rng(7)
    now = utcnow()
    helper_ids = _helpers(db, 200)
    # 200 offers stamped with one and the same time, as a bulk import does.
    offer_ids = list(
        db.scalars(
            insert(Offer).returning(Offer.id, sort_by_parameter_order=True),
            [
                {
                    "helper_id": h,
                    "lat": 55 + rng.uniform(-0.5, 0.5),
                    "lon": 40 + rng.uniform(-0.8, 0.8),
                    "radius_km": float(rng.uniform(5, 40)),
                    "capacity": int(rng.integers(1, 4)),
                    "capacity_used": 0,
                    "status": OfferStatus.active,
                    "created_at": now,
                    "updated_at": now,
                }
                for h in helper_ids
            ],
        )
    )
    db.execute(
        insert(OfferCategory),
        [{"offer_id": o, "category": CATS[int(rng.integers(0, 3))]} for o in offer_ids],
    )
    db.commit()
    live = LiveOfferIndex(recheck=timedelta(0))  # every refresh re-reads the window of late commits
    for step in range(6):
        live.refresh(session=db, now=utcnow())
        for _ in range(20):
            lat, lon = 55 + rng.uniform(-0.5, 0.5), 40 + rng.uniform(-0.8, 0.8)
            category = CATS[int(rng.integers(0, 3))]
            got = live.nearest(lat=lat, lon=lon, category=category, k=5, max_km=np.inf, pending=lambda ids: {})
            want = _brute(db, lat, lon, category, 5)
            assert [c.offer_id for c in got] == [w[0] for w in want], (step, lat, lon, category)
            assert np.allclose([c.km for c in got], [w[1] for w in want])
        # Change some offers: capacity taken, paused, moved; one commits "late" with a stamp
        # older than changes already seen (a slow transaction), which must still be picked up.
        stamp = utcnow()
        for offer_id in rng.choice(offer_ids, size=15, replace=False).tolist():
            offer = db.get(Offer, offer_id)
            assert offer is not None
            kind = int(rng.integers(0, 3))
            if kind == 0:
                offer.capacity_used = offer.capacity
            elif kind == 1:
                offer.status = OfferStatus.paused if offer.status is OfferStatus.active else OfferStatus.active
            else:
                offer.lat += float(rng.uniform(-0.1, 0.1))
            offer.updated_at = stamp
        late = db.get(Offer, int(offer_ids[step]))
        assert late is not None
        late.radius_km = 0.001  # nobody can reach it any more
        late.updated_at = stamp - timedelta(seconds=20)
        db.commit()


def _water_offer(db: Session, phone: str, lat: float, stamp: datetime) -> int:
    helper = Helper(name=phone, phone=phone, created_at=stamp, updated_at=stamp)
    db.add(helper)
    db.flush()
    offer = Offer(
        helper_id=helper.id,
        lat=lat,
        lon=40.0,
        radius_km=40.0,
        capacity=1,
        capacity_used=0,
        status=OfferStatus.active,
        created_at=stamp,
        updated_at=stamp,
    )
    db.add(offer)
    db.flush()
    db.add(OfferCategory(offer_id=offer.id, category=Category.water))
    db.commit()
    return offer.id


def test_changes_show_at_once_and_late_commits_within_the_recheck_interval(db: Session) -> None:
    clock = [utcnow()]
    live = LiveOfferIndex(recheck=timedelta(seconds=1), clock=lambda: clock[0])

    def nearest() -> list[int]:
        live.refresh(session=db, now=utcnow())
        found = live.nearest(lat=55.0, lon=40.0, category=Category.water, k=5, max_km=np.inf, pending=lambda ids: {})
        return [c.offer_id for c in found]

    first = _water_offer(db, "+79160000001", 55.01, utcnow())
    assert nearest() == [first]
    # A change stamped after everything seen shows at the next lookup, the clock standing still.
    second = _water_offer(db, "+79160000002", 55.005, utcnow())
    assert nearest() == [second, first]
    offer = db.get(Offer, first)
    assert offer is not None
    offer.capacity_used = 1
    offer.updated_at = utcnow()
    db.commit()
    assert nearest() == [second]
    # A late commit (stamped before changes already seen) shows once the recheck interval passed.
    offer = db.get(Offer, second)
    assert offer is not None
    offer.radius_km = 0.001
    offer.updated_at = utcnow() - timedelta(seconds=20)
    db.commit()
    clock[0] += timedelta(seconds=1)
    assert nearest() == []


def test_offers_enter_and_leave_the_index_as_their_window_opens_and_closes_without_a_row_change(
    db: Session,
) -> None:
    now = utcnow()
    helper = Helper(name="h", phone="+79160000001", created_at=now, updated_at=now)
    db.add(helper)
    db.flush()
    windows = {  # offer name: (available_from, available_until) in hours from now
        "open": (None, None),
        "tomorrow": (24.0, None),
        "until_noon": (None, 2.0),
        "evening": (6.0, 8.0),
    }
    ids = {}
    for name, (start, end) in windows.items():
        offer = Offer(
            helper_id=helper.id,
            lat=55.0,
            lon=40.0,
            radius_km=30.0,
            capacity=1,
            capacity_used=0,
            status=OfferStatus.active,
            available_from=None if start is None else now + timedelta(hours=start),
            available_until=None if end is None else now + timedelta(hours=end),
            created_at=now,
            updated_at=now,
        )
        db.add(offer)
        db.flush()
        db.add(OfferCategory(offer_id=offer.id, category=Category.water))
        ids[name] = offer.id
    db.commit()
    live = LiveOfferIndex()

    def usable_at(hours: float) -> set[str]:
        live.refresh(session=db, now=now + timedelta(hours=hours))
        got = live.nearest(
            lat=55.0, lon=40.01, category=Category.water, k=10, max_km=np.inf, pending=lambda offer_ids: {}
        )
        return {name for name, i in ids.items() if i in {c.offer_id for c in got}}

    assert usable_at(0) == {"open", "until_noon"}
    assert usable_at(3) == {"open"}
    assert usable_at(7) == {"open", "evening"}
    assert usable_at(9) == {"open"}
    assert usable_at(25) == {"open", "tomorrow"}


def _count_searches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on ``[0]`` counts the k-d searches of every live index (``matching.nearest_capable``)."""
    searches = [0]
    real = matching.nearest_capable

    def counted(*args: Any, **kwargs: Any) -> Any:
        searches[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(matching, "nearest_capable", counted)
    return searches


def test_lookups_after_helpers_near_answer_as_a_fresh_search(db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """``helpers_near`` keeps each point's first round for ``nearest`` (a group intake searches its
    points once): the answers equal those of an index that never kept any, also after a change."""
    rng = np.random.default_rng(11)
    now = utcnow()
    offer_ids = [_water_offer(db, f"+7916{i:07d}", 55 + float(rng.uniform(-0.3, 0.3)), now) for i in range(60)]
    kept, plain = LiveOfferIndex(recheck=timedelta(0)), LiveOfferIndex(recheck=timedelta(0))
    searches = _count_searches(monkeypatch)
    for step in range(3):
        kept.refresh(session=db, now=utcnow())
        plain.refresh(session=db, now=utcnow())
        lat = 55 + rng.uniform(-0.3, 0.3, size=12)
        lon = np.full(12, 40.0) + rng.uniform(-0.2, 0.2, size=12)
        k = rng.choice([1, 3, 5], size=12)
        max_km = rng.choice([np.inf, 15.0], size=12)
        kept.helpers_near(lat=lat, lon=lon, category=np.zeros(12, dtype=np.int64), k=k, max_km=max_km)
        taken: dict[int, int] = {}

        def look(
            index: LiveOfferIndex,
            i: int,
            pending: Callable[[list[int]], dict[int, int]],
            at: Any = (lat, lon, k, max_km),
        ) -> list[Candidate]:
            la, lo, kk, km = at
            return index.nearest(
                lat=float(la[i]),
                lon=float(lo[i]),
                category=Category.water,
                k=int(kk[i]),
                max_km=float(km[i]),
                pending=pending,
            )

        def held(ids: list[int], taken: dict[int, int] = taken) -> dict[int, int]:
            return {o: taken[o] for o in ids if o in taken}

        for i in range(12):
            before = searches[0]
            got = look(kept, i, held)
            assert searches[0] == before  # its first round was kept (and was enough)
            assert got == look(plain, i, held), (step, i)
            for c in got[:1]:
                taken[c.offer_id] = taken.get(c.offer_id, 0) + 1  # later lookups see it held
        # A change drops what was kept: the next lookups see it.
        for offer_id in rng.choice(offer_ids, size=10, replace=False).tolist():
            offer = db.get(Offer, offer_id)
            assert offer is not None
            offer.capacity_used = offer.capacity
            offer.updated_at = utcnow()
        db.commit()
        kept.refresh(session=db, now=utcnow())
        plain.refresh(session=db, now=utcnow())
        for i in range(12):
            before = searches[0]
            got = look(kept, i, lambda ids: {})
            assert searches[0] > before  # searched again
            assert got == look(plain, i, lambda ids: {})
            if max_km[i] == np.inf:
                want = _brute(db, float(lat[i]), float(lon[i]), Category.water, int(k[i]))
                assert [c.offer_id for c in got] == [w[0] for w in want]


def test_second_rounds_searched_by_helpers_further_answer_as_a_fresh_search(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most helpers busy: the lookups widen. ``helpers_further`` searches the second rounds of the
    points whose first round falls short (and only those) and returns their helpers; the lookups
    then search nothing and answer as an index that kept nothing."""
    rng = np.random.default_rng(12)
    now = utcnow()
    offer_ids = [_water_offer(db, f"+7917{i:07d}", 55 + float(rng.uniform(-0.2, 0.2)), now) for i in range(120)]
    helper_of = dict(db.execute(select(Offer.id, Offer.helper_id)).tuples().all())
    busy = set(rng.choice([helper_of[o] for o in offer_ids], size=105, replace=False).tolist())
    kept, plain = LiveOfferIndex(recheck=timedelta(0)), LiveOfferIndex(recheck=timedelta(0))
    kept.refresh(session=db, now=utcnow())
    plain.refresh(session=db, now=utcnow())
    searches = _count_searches(monkeypatch)
    n = 16
    points: Points = {
        "lat": 55 + rng.uniform(-0.1, 0.1, size=n),
        "lon": np.full(n, 40.0) + rng.uniform(-0.1, 0.1, size=n),
        "category": np.zeros(n, dtype=np.int64),
        "k": rng.choice([1, 3, 5], size=n, p=[0.2, 0.4, 0.4]),
        "max_km": np.full(n, np.inf),
    }
    asked: list[list[int]] = []

    def blocked(helpers: list[int]) -> set[int]:
        asked.append(helpers)
        return {h for h in helpers if h in busy}

    first = kept.helpers_near(**points)
    further = kept.helpers_further(**points, pending=lambda ids: {}, blocked=blocked)
    assert len(asked) == n  # each point's first round judged
    assert further - first  # the second rounds reach helpers the first did not
    searched = searches[0]
    widened = 0
    for i in range(n):
        args: dict[str, Any] = {
            "lat": float(points["lat"][i]),
            "lon": float(points["lon"][i]),
            "category": Category.water,
            "k": int(points["k"][i]),
            "max_km": np.inf,
            "pending": lambda ids: {},
            "blocked": blocked,
        }
        calls = len(asked)
        got = kept.nearest(**args)
        widened += len(asked) - calls - 1
        assert len(asked) - calls <= 2  # at most two rounds: the first and the one searched ahead
        assert got == plain.nearest(**args), i
        assert {c.helper_id for c in got} <= first | further
    assert searches[0] - searched == widened + n  # only the plain index searched: once a round
    assert widened > n // 2  # most lookups widened


def test_noted_busy_helpers_and_full_offers_are_passed_over_until_the_memory_lapses(db: Session) -> None:
    now = utcnow()
    helper_ids = _helpers(db, 4)
    offer_ids = list(
        db.scalars(
            insert(Offer).returning(Offer.id, sort_by_parameter_order=True),
            [
                {
                    "helper_id": h,
                    "lat": 55 + 0.01 * i,
                    "lon": 40.0,
                    "radius_km": 30.0,
                    "capacity": 2,
                    "capacity_used": 0,
                    "status": OfferStatus.active,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, h in enumerate(helper_ids)
            ],
        )
    )
    db.execute(insert(OfferCategory), [{"offer_id": o, "category": Category.water} for o in offer_ids])
    db.commit()
    clock = [100.0]
    live = LiveOfferIndex(busy_clock=lambda: clock[0])
    asked_helpers: list[int] = []
    asked_offers: list[int] = []

    def blocked(ids: list[int]) -> set[int]:
        asked_helpers.extend(ids)
        return set()

    def pending(ids: list[int]) -> dict[int, int]:
        asked_offers.extend(ids)
        return {}

    def look() -> list[int]:
        live.refresh(session=db, now=utcnow())
        found = live.nearest(
            lat=55.0, lon=40.0, category=Category.water, k=4, max_km=np.inf, pending=pending, blocked=blocked
        )
        return [c.offer_id for c in found]

    assert look() == offer_ids
    # Helper 0 at its cap; offer 1 with both units asked for, offer 2 with one of two (not full).
    live.note_busy({helper_ids[0]}, {offer_ids[1]: 2, offer_ids[2]: 1})
    asked_helpers.clear()
    asked_offers.clear()
    assert look() == [offer_ids[2], offer_ids[3]]
    assert helper_ids[0] not in asked_helpers  # passed over without asking the database
    assert offer_ids[1] not in asked_offers
    clock[0] += live_module.BUSY_MEMORY_S - 0.1
    assert look() == [offer_ids[2], offer_ids[3]]
    clock[0] += 0.2  # the memory lapses: everyone is looked at (and asked about) again
    assert look() == offer_ids
    assert helper_ids[0] in asked_helpers


def test_a_look_reads_exactly_the_rows_asked_for_and_nothing_when_none_changed(db: Session) -> None:
    """``Look.statements``: no statement when no row changed (a look that finds nothing costs no
    round trip); otherwise statements (one ``= ANY`` on PostgreSQL, chunks elsewhere) that read
    exactly those rows."""
    now = utcnow()
    offer_ids = [_water_offer(db, f"+7919{i:07d}", 55 + 0.01 * i, now) for i in range(5)]
    stmt = select(Offer.id).order_by(Offer.id)
    assert live_module.Look(now, False, [], None, db).statements(stmt, Offer.id) == []
    wanted = [*offer_ids[1:4:2], 10**6]  # one id no row has
    statements = live_module.Look(now, False, wanted, None, db).statements(stmt, Offer.id)
    assert [i for s in statements for i in db.scalars(s)] == offer_ids[1:4:2]
    if db.get_bind().dialect.name == "postgresql":
        (one,) = statements  # one statement, the ids as one array parameter
        assert "ANY" in str(one.compile(dialect=db.get_bind().dialect))
    assert live_module.Look(now, True, None, None, db).statements(stmt, Offer.id) == [stmt]


def test_kept_searches_follow_the_busy_memory_as_it_is_noted_and_lapses(db: Session) -> None:
    """A search kept by ``helpers_near`` passed over the helpers noted busy at the time: noting one
    more, or the memory lapsing, drops it, so ``nearest`` answers as an index that kept nothing."""
    now = utcnow()
    offer_ids = [_water_offer(db, f"+7918{i:07d}", 55 + 0.01 * i, now) for i in range(8)]
    helper_of = dict(db.execute(select(Offer.id, Offer.helper_id)).tuples().all())
    clock = [100.0]
    kept = LiveOfferIndex(recheck=timedelta(0), busy_clock=lambda: clock[0])
    plain = LiveOfferIndex(recheck=timedelta(0), busy_clock=lambda: clock[0])
    point = {"lat": np.array([55.0]), "lon": np.array([40.0]), "category": np.zeros(1, dtype=np.int64)}

    def answers() -> tuple[list[int], list[int]]:
        args: dict[str, Any] = {"lat": 55.0, "lon": 40.0, "category": Category.water, "k": 2, "max_km": np.inf}
        got = [c.offer_id for c in kept.nearest(**args, pending=lambda ids: {})]
        return got, [c.offer_id for c in plain.nearest(**args, pending=lambda ids: {})]

    for index in (kept, plain):
        index.refresh(session=db, now=utcnow())
    # Noted busy after the search was kept: the nearest helper is passed over at once.
    kept.helpers_near(**point, k=np.array([2]), max_km=np.array([np.inf]))
    for index in (kept, plain):
        index.note_busy({helper_of[offer_ids[0]]})
    got, fresh = answers()
    assert got == fresh == offer_ids[1:3]
    # Kept while it was busy, then the memory lapses (a refresh that finds no change): it is back.
    kept.helpers_near(**point, k=np.array([2]), max_km=np.array([np.inf]))
    clock[0] += live_module.BUSY_MEMORY_S + 0.1
    for index in (kept, plain):
        index.refresh(session=db, now=utcnow())
    got, fresh = answers()
    assert got == fresh == offer_ids[:2]


@pytest.mark.parametrize("ending", ["rollback", "close"])
def test_what_a_transaction_wrote_and_then_undid_is_read_again(db: Session, sessions: Any, ending: str) -> None:
    """The index reads inside its session's transaction, so it sees that transaction's own writes.
    When the transaction ends without a commit, those rows are read again, although their real
    stamps are older than anything a later look would ask for."""
    clock = [utcnow()]
    live = LiveOfferIndex(recheck=timedelta(seconds=1), clock=lambda: clock[0])

    def nearest(session: Session) -> list[int]:
        live.refresh(session=session, now=utcnow())
        found = live.nearest(lat=55.0, lon=40.0, category=Category.water, k=5, max_km=np.inf, pending=lambda ids: {})
        return [c.offer_id for c in found]

    old = utcnow() - timedelta(minutes=5)
    full = _water_offer(db, "+79160000001", 55.01, old)
    offer = db.get(Offer, full)
    assert offer is not None
    offer.capacity_used = 1
    db.commit()
    with sessions() as s:
        assert nearest(s) == []
    undone = sessions()
    offer = undone.get(Offer, full)
    offer.capacity_used = 0  # "I cannot come after all"…
    offer.updated_at = utcnow()
    undone.flush()
    assert nearest(undone) == [full]  # seen inside the transaction
    if ending == "rollback":  # …and the request failed after all
        undone.rollback()
    undone.close()
    for _ in range(2):  # past the wide re-read too: nothing in the database moved
        clock[0] += timedelta(seconds=2)
        with sessions() as s:
            assert nearest(s) == []


def test_offers_whose_insert_was_undone_leave_the_index(db: Session, sessions: Any) -> None:
    """Read inside the transaction that inserted them, then rolled back: gone at the next look,
    whether that first look read every offer or only what changed."""
    live = LiveOfferIndex()

    def nearest(session: Session) -> list[int]:
        live.refresh(session=session, now=utcnow())
        found = live.nearest(lat=55.0, lon=40.0, category=Category.water, k=5, max_km=np.inf, pending=lambda ids: {})
        return [c.offer_id for c in found]

    kept = _water_offer(db, "+79160000001", 55.01, utcnow())
    for first_read in (True, False):
        with sessions() as s:
            if not first_read:
                assert nearest(s) == [kept]
            helper = Helper(name="x", phone=f"+7916000001{int(first_read)}", created_at=utcnow(), updated_at=utcnow())
            s.add(helper)
            s.flush()
            phantom = Offer(
                helper_id=helper.id,
                lat=55.0,
                lon=40.0,
                radius_km=40.0,
                capacity=1,
                capacity_used=0,
                status=OfferStatus.active,
                created_at=utcnow(),
                updated_at=utcnow() - timedelta(hours=1),
            )
            s.add(phantom)
            s.flush()
            s.add(OfferCategory(offer_id=phantom.id, category=Category.water))
            s.flush()
            phantom.updated_at = utcnow()
            s.flush()
            assert nearest(s) == [phantom.id, kept]
            s.rollback()
        with sessions() as s:
            assert nearest(s) == [kept]
