"""The live needs follow the database and keep their reach current: checked against a fresh load,
against the computation from the database, and (for the reach alone) against a fresh search."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Select, func, insert, select, text, update
from sqlalchemy.orm import Session

import matching
from aidmatch import migrate
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.enums import OPEN_NEED_STATUSES, MatchStatus, NeedStatus, OfferStatus, Urgency
from aidmatch.errors import ConflictError
from aidmatch.helpers.models import Helper
from aidmatch.matches import live as live_module
from aidmatch.matches import live_needs, proposals
from aidmatch.matches import live_tasks as live_tasks_module
from aidmatch.matches import service as matches_service
from aidmatch.matches.live import ChangeFeed, LiveOfferIndex
from aidmatch.matches.live_needs import Coverage, LiveNeeds, NeedRows
from aidmatch.matches.live_tasks import LiveTasks
from aidmatch.matches.models import Match
from aidmatch.matches.pending import PENDING_MATCH_STATUSES
from aidmatch.matches.proposals import OPEN_TASK_STATUSES, busy_helpers, pending_units
from aidmatch.matches.upkeep import UpkeepReport, expire_needs
from aidmatch.needs import service as needs_service
from aidmatch.needs.models import Need
from aidmatch.needs.schemas import NeedIn
from aidmatch.offers.models import Offer
from geo.geocoding import GazetteerGeocoder
from tests.aidmatch.test_unmet_oracle import CATEGORIES, _seed
from tests.databases import fresh_postgres_database


def _need_rows(rows: np.ndarray, geometry: dict[str, np.ndarray]) -> NeedRows:
    n = len(rows)
    return NeedRows(
        rows,
        rows,
        geometry["lat"][rows],
        geometry["lon"][rows],
        geometry["category"][rows],
        np.ones(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        geometry["max_km"][rows],
        np.zeros(n, dtype=np.int64),
    )


@pytest.mark.parametrize(
    ("max_changed", "max_share", "pairs_at_once"),
    [(256, 0.25, 4_000_000), (4, 0.0, 4_000_000), (4, 0.25, 4_000_000), (256, 0.25, 0)],
    ids=["follows", "often-asks-anew", "asks-anew-past-a-share", "by-radius-bands"],
)
def test_coverage_follows_changing_offers_and_needs_like_a_fresh_search(
    monkeypatch: pytest.MonkeyPatch, max_changed: int, max_share: float, pairs_at_once: int
) -> None:
    monkeypatch.setattr(live_needs, "_MAX_CHANGED_OFFERS", max_changed)
    monkeypatch.setattr(live_needs, "_MAX_CHANGED_SHARE", max_share)
    paths: list[bool] = []  # per computation after the first: followed (True) or asked anew (False)
    follow = Coverage._follow

    def spy(self: Coverage, *args: Any) -> bool:
        paths.append(follow(self, *args))
        return paths[-1]

    monkeypatch.setattr(Coverage, "_follow", spy)
    monkeypatch.setattr(live_needs, "_PAIRS_AT_ONCE", pairs_at_once)
    monkeypatch.setattr(live_needs, "_PAIRS_PER_STEP", 5000)  # several steps per category
    rng = np.random.default_rng(11)
    m, n = 80, 600
    lat, lon = 55 + rng.normal(0, 0.4, m), 40 + rng.normal(0, 0.6, m)
    radius, mask = rng.choice([2.0, 8.0, 20.0, 45.0], m), rng.integers(0, 8, m)
    member = rng.random(m) < 0.6
    needs = {
        "lat": 55 + rng.normal(0, 0.6, 2 * n),
        "lon": 40 + rng.normal(0, 0.9, 2 * n),
        "category": rng.integers(0, 4, 2 * n),  # category 3: offered by nobody
        "max_km": np.where(rng.random(2 * n) < 0.7, np.inf, rng.uniform(1, 30, 2 * n)),
    }
    coverage = Coverage()
    for step in range(60):
        flips = int(rng.choice([0, 1, 3, 10, m]))
        member[rng.choice(len(member), flips, replace=False)] ^= True
        moved = rng.choice(len(member), int(rng.integers(0, 3)), replace=False)
        lat[moved] += rng.normal(0, 0.1, len(moved))
        radius[rng.choice(len(member), int(rng.integers(0, 3)), replace=False)] *= 1.5
        mask[rng.choice(len(member), int(rng.integers(0, 3)), replace=False)] ^= 1 << int(rng.integers(0, 3))
        if step % 7 == 3:  # new offers come at the end
            extra = int(rng.integers(1, 4))
            lat, lon = np.r_[lat, 55 + rng.normal(0, 0.4, extra)], np.r_[lon, 40 + rng.normal(0, 0.6, extra)]
            radius, mask = np.r_[radius, rng.choice([5.0, 30.0], extra)], np.r_[mask, rng.integers(1, 8, extra)]
            member = np.r_[member, np.ones(extra, dtype=bool)]
        # Some needs change place or limit; the needs asked about come and go and grow in number.
        changed = rng.choice(2 * n, 5, replace=False)
        needs["lon"][changed] += rng.normal(0, 0.2, 5)
        needs["max_km"][rng.choice(2 * n, 3, replace=False)] = rng.uniform(1, 30, 3)
        rows = np.flatnonzero(rng.random(n + 10 * step) < 0.9)
        offers = matching.Offers(lat.copy(), lon.copy(), mask.copy(), np.ones(len(lat), dtype=np.int64), radius.copy())
        asked = _need_rows(rows, needs)
        got = coverage.update(offers, member, asked)
        want = matching.in_reach(
            offers, member.astype(np.int64), asked.lat, asked.lon, asked.category, max_km=asked.max_km
        )
        assert np.array_equal(got, want), f"step {step}"
        assert 0 < want.sum() < len(want)
    # Followed, and asked anew where the limits allow it (a whole set flipped always is then); with
    # a limit of 256 offers these sets (~80 offers) are always followed.
    assert paths.count(True) > 10
    if max_changed == 256:
        assert False not in paths
    else:
        assert paths.count(False) > 10


def _answer_some(db: Session, rng: np.random.Generator, n: int, live: LiveOfferIndex | None = None) -> None:
    """Helpers answer up to ``n`` pending requests at random (accept 60 %, else decline); 3 accepted get done."""
    pending = list(db.scalars(select(Match.id).where(Match.status.in_(PENDING_MATCH_STATUSES))))
    for match_id in rng.permutation(pending)[:n].tolist():
        if rng.random() < 0.6:
            try:
                matches_service.accept(session=db, match_id=match_id)
            except ConflictError:
                db.rollback()  # a refused accept rolls back only itself
        else:
            matches_service.decline(session=db, match_id=match_id, live=live)
        db.commit()
    accepted = list(db.scalars(select(Match.id).where(Match.status == MatchStatus.accepted)))
    for match_id in rng.permutation(accepted)[:3].tolist():
        matches_service.complete(session=db, match_id=match_id)


def _compare(db: Session, live: LiveOfferIndex, kept: LiveNeeds, now: datetime) -> matches_service.Unmet:
    """The kept live needs answer like a fresh load and like the computation from the database."""
    followed = matches_service.unmet(session=db, live=live, now=now, needs=kept)
    fresh = matches_service.unmet(session=db, live=live, now=now, needs=LiveNeeds())
    direct = matches_service.unmet(session=db, live=live, now=now)
    for other in (fresh, direct):
        for column in ("id", "lat", "lon", "category", "remaining", "urgency", "max_km", "by_age"):
            assert np.array_equal(getattr(followed.needs, column), getattr(other.needs, column)), column
        assert np.array_equal(followed.reason_code, other.reason_code)
    assert matches_service.unmet_stats(session=db, live=live, now=now, needs=kept) == matches_service.unmet_stats(
        session=db, live=live, now=now
    )
    return followed


@pytest.mark.parametrize("compact_at", [4096, 1], ids=["keeping", "compacting"])
def test_live_needs_follow_random_changes_like_a_fresh_load(
    db: Session, settings: Settings, gazetteer: GazetteerGeocoder, compact_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "compacting": the rows of needs no longer open are dropped at every refresh that finds one.
    monkeypatch.setattr(live_needs, "_COMPACT_SHARE", 0.0 if compact_at == 1 else 0.5)
    rng = np.random.default_rng(5)
    _seed(db, rng, utcnow())
    live, kept = LiveOfferIndex(), LiveNeeds(compact_at=compact_at)
    seen: set[str] = set()
    for step in range(8):
        hours = 4.0 * step  # needs also expire by time alone, with no row changed
        u = _compare(db, live, kept, utcnow() + timedelta(hours=hours))
        seen.update(u.reason.tolist())
        if step % 3 == 1:
            matches_service.run_batch(session=db, time_budget_s=1.0)
        open_ids = list(db.scalars(select(Need.id).where(Need.status == NeedStatus.open)))
        need_in: NeedIn | None = None
        for k in range(6):
            if need_in is None or rng.random() < 0.7:  # else the same again: a repeat, merged
                need_in = NeedIn(
                    category=CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
                    quantity=int(rng.integers(1, 4)),
                    urgency=list(Urgency)[int(rng.integers(0, 3))],
                    lat=54.6 + float(rng.normal(0, 0.6)),
                    lon=39.7 + float(rng.normal(0, 0.9)),
                    contact_phone=f"+7901{step:03d}{k:04d}",
                    max_distance_km=None if rng.random() < 0.5 else float(rng.uniform(5, 60)),
                )
            needs_service.create_or_merge(session=db, need_in=need_in, settings=settings, geocoder=gazetteer)
        for need_id in rng.choice(open_ids, 6, replace=False).tolist():
            need = db.get(Need, need_id)
            assert need is not None
            action = int(rng.integers(0, 3))
            if action == 0:
                needs_service.close(session=db, need=need, fulfilled=bool(rng.random() < 0.5))
            elif action == 1:
                needs_service.reconfirm(session=db, need=need, settings=settings)
            else:
                of = db.get(Need, int(rng.choice(open_ids)))
                assert of is not None
                if of.id != need.id and of.status is not NeedStatus.duplicate and of.category is need.category:
                    needs_service.mark_duplicate(session=db, need=need, of=of)
        db.commit()  # a refused accept rolls back only itself
        _answer_some(db, rng, 8)
        offer_ids = list(db.scalars(select(Offer.id)))
        for offer_id in rng.choice(offer_ids, 5, replace=False).tolist():
            offer = db.get(Offer, offer_id)
            assert offer is not None
            offer.status = OfferStatus.active if rng.random() < 0.7 else OfferStatus.paused
            offer.radius_km = float(rng.choice([3.0, 10.0, 30.0, 80.0]))
        expire_needs(db, settings, utcnow() + timedelta(hours=hours), UpkeepReport())
        db.commit()
    assert seen == set(matches_service.UNMET_REASONS)
    _compare(db, live, kept, utcnow())
    if compact_at == 1:  # only the needs still open (with units not all accepted) are kept
        open_now = db.scalar(select(func.count(Need.id)).where(Need.status.in_(OPEN_NEED_STATUSES)))
        assert kept.rows <= (open_now or 0)


def test_every_change_to_a_need_moves_its_updated_at(
    db: Session, settings: Settings, gazetteer: GazetteerGeocoder
) -> None:
    _seed(db, np.random.default_rng(9), utcnow())
    stamps = dict(db.execute(select(Need.id, Need.updated_at)).tuples().all())

    def moved(*need_ids: int) -> bool:
        db.commit()
        now = dict(db.execute(select(Need.id, Need.updated_at).where(Need.id.in_(need_ids))).tuples().all())
        ok = all(now[i] > stamps[i] for i in need_ids)
        stamps.update(now)
        return ok

    def open_need(k: int = 0) -> Need:
        return db.scalars(select(Need).where(Need.status == NeedStatus.open).order_by(Need.id)).all()[k]

    need_in = NeedIn(category=Category.water, lat=54.6, lon=39.7, contact_phone="+79020000001")
    created, _ = needs_service.create_or_merge(session=db, need_in=need_in, settings=settings, geocoder=gazetteer)
    db.commit()
    stamps[created.id] = created.updated_at
    merged, was_merged = needs_service.create_or_merge(
        session=db, need_in=need_in, settings=settings, geocoder=gazetteer
    )
    assert was_merged
    assert merged.id == created.id
    assert moved(created.id)
    needs_service.reconfirm(session=db, need=open_need(), settings=settings)
    assert moved(open_need().id)
    first = open_need(0)
    second = next(
        n
        for n in db.scalars(select(Need).where(Need.status == NeedStatus.open, Need.id != first.id))
        if n.category is first.category
    )
    needs_service.mark_duplicate(session=db, need=first, of=second)
    assert moved(first.id, second.id)
    closing = open_need()
    needs_service.close(session=db, need=closing, fulfilled=False)
    assert moved(closing.id)
    matches_service.run_batch(session=db, time_budget_s=1.0)
    db.commit()
    match = db.scalars(
        select(Match)
        .join(Need, Need.id == Match.need_id)
        .join(Offer, Offer.id == Match.offer_id)
        .where(
            Match.status.in_(PENDING_MATCH_STATUSES),
            Need.status == NeedStatus.open,
            Offer.capacity_used < Offer.capacity,
        )
        .order_by(Match.id)
    ).first()
    assert match is not None
    matches_service.accept(session=db, match_id=match.id)
    assert moved(match.need_id)  # quantity_assigned and status
    db.execute(update(Need).where(Need.id == match.need_id).values(quantity=match.quantity))
    assert moved(match.need_id)  # a bare update touches it too (the column's onupdate)
    matches_service.complete(session=db, match_id=match.id)
    assert moved(match.need_id)  # fulfilled
    expiring = open_need()
    expiring.expires_at = utcnow() - timedelta(seconds=1)
    assert moved(expiring.id)
    expire_needs(db, settings, utcnow(), UpkeepReport())
    assert moved(expiring.id)
    assert db.scalar(select(Need.status).where(Need.id == expiring.id)) is NeedStatus.expired


def test_need_changes_show_at_once_and_late_commits_within_the_recheck_interval(db: Session) -> None:
    _seed(db, np.random.default_rng(4), utcnow())
    clock = [utcnow()]
    live, kept = LiveOfferIndex(), LiveNeeds(recheck=timedelta(seconds=1), clock=lambda: clock[0])

    def unmet_ids() -> set[int]:
        now = utcnow()
        return set(matches_service.unmet(session=db, live=live, now=now, needs=kept).needs.id.tolist())

    before = unmet_ids()
    closing = db.get(Need, min(before))
    assert closing is not None
    closing.status = NeedStatus.cancelled
    closing.updated_at = utcnow()
    db.commit()
    assert unmet_ids() == before - {closing.id}  # stamped after everything seen: at once
    late = db.get(Need, max(before))
    assert late is not None
    late.status = NeedStatus.cancelled
    late.updated_at = utcnow() - timedelta(seconds=20)  # committed after a later stamp was seen
    db.commit()
    assert late.id in unmet_ids()  # the clock stands still: not re-read yet
    clock[0] += timedelta(seconds=1)
    assert unmet_ids() == before - {closing.id, late.id}


def _held_by_queries(db: Session) -> tuple[dict[int, int], dict[int, int], set[int]]:
    return pending_units(db, "need"), pending_units(db, "offer"), busy_helpers(db)


def _held_kept(db: Session, tasks: LiveTasks) -> tuple[dict[int, int], dict[int, int], set[int]]:
    tasks.refresh(session=db)
    held = tasks.held(db)
    return dict(zip(held.need_id.tolist(), held.need_units.tolist(), strict=True)), held.offer_units, held.busy_helpers


def test_live_tasks_follow_random_changes_like_their_queries(
    db: Session, settings: Settings, gazetteer: GazetteerGeocoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(8)
    _seed(db, rng, utcnow())
    db.execute(update(Helper).values(max_active_tasks=Helper.max_active_tasks % 2 + 1))  # many at their cap
    db.commit()
    live, kept = LiveOfferIndex(), LiveTasks()
    monkeypatch.setattr(live_tasks_module, "_COMPACT_SHARE", 0.0)
    compacting = LiveTasks(compact_at=1)  # drops its closed matches at every refresh that finds one
    busy_seen = 0
    for step in range(8):
        want = _held_by_queries(db)
        assert _held_kept(db, kept) == want, f"step {step}"
        assert _held_kept(db, LiveTasks()) == want
        assert _held_kept(db, compacting) == want, f"step {step}"
        busy_seen += len(want[2])
        if step % 3 == 0:
            matches_service.run_batch(session=db, time_budget_s=1.0)
            db.commit()
        for k in range(4):  # intake: new needs ask their nearest helpers
            need_in = NeedIn(
                category=CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
                quantity=int(rng.integers(1, 4)),
                urgency=list(Urgency)[int(rng.integers(0, 3))],
                lat=54.6 + float(rng.normal(0, 0.4)),
                lon=39.7 + float(rng.normal(0, 0.6)),
                contact_phone=f"+7903{step:03d}{k:04d}",
            )
            need, merged = needs_service.create_or_merge(
                session=db, need_in=need_in, settings=settings, geocoder=gazetteer
            )
            if not merged:
                proposals.propose_for_need(session=db, need=need, live=live, settings=settings, now=utcnow())
            db.commit()
        _answer_some(db, rng, 10, live=live)
        open_ids = list(db.scalars(select(Need.id).where(Need.status.in_(OPEN_NEED_STATUSES))))
        for need_id in rng.choice(open_ids, 3, replace=False).tolist():
            closing = db.get(Need, need_id)
            assert closing is not None
            needs_service.close(session=db, need=closing, fulfilled=False)  # its pending requests close
        for helper in db.scalars(select(Helper).order_by(Helper.id)).all()[step::9]:
            helper.max_active_tasks = int(rng.integers(1, 4))  # caps change through the ORM
        expire_needs(db, settings, utcnow() + timedelta(hours=6.0 * step), UpkeepReport())
        db.commit()
    assert busy_seen > 0
    assert _held_kept(db, compacting) == _held_by_queries(db)
    closed = db.scalar(select(func.count(Match.id)).where(Match.status.not_in(OPEN_TASK_STATUSES)))
    assert closed
    assert compacting.rows < kept.rows  # closed matches were dropped, the answers stayed the same


def test_every_change_to_a_match_moves_its_updated_at(
    db: Session, settings: Settings, gazetteer: GazetteerGeocoder
) -> None:
    _seed(db, np.random.default_rng(12), utcnow())
    live = LiveOfferIndex()

    def rows() -> dict[int, tuple[MatchStatus, int, datetime]]:
        db.commit()
        got = db.execute(select(Match.id, Match.status, Match.quantity, Match.updated_at)).tuples().all()
        return {i: (status, quantity, at) for i, status, quantity, at in got}

    before = rows()
    changed = 0

    def check() -> None:
        nonlocal before, changed
        after = rows()
        for i, (status, quantity, at) in after.items():
            if i in before and before[i][:2] != (status, quantity):
                assert at > before[i][2], (i, before[i], after[i])
                changed += 1
        before = after

    matches_service.run_batch(session=db, time_budget_s=1.0)  # insert, then a bare update to "notified"
    check()
    need = needs_service.create_or_merge(
        session=db,
        need_in=NeedIn(category=CATEGORIES[0], urgency=Urgency.critical, lat=54.6, lon=39.7),
        settings=settings,
        geocoder=gazetteer,
    )[0]
    proposals.propose_for_need(session=db, need=need, live=live, settings=settings, now=utcnow())
    check()
    pending = sorted(i for i, (status, _, _) in before.items() if status in PENDING_MATCH_STATUSES)
    for match_id in pending[:6]:
        try:
            matches_service.accept(session=db, match_id=match_id)
        except ConflictError:
            db.rollback()
        check()
    matches_service.decline(session=db, match_id=pending[6], live=live)
    check()
    accepted = sorted(i for i, (status, _, _) in before.items() if status is MatchStatus.accepted)
    matches_service.complete(session=db, match_id=accepted[0])
    check()
    waiting = db.scalars(
        select(Need).join(Match, Match.need_id == Need.id).where(Match.status.in_(PENDING_MATCH_STATUSES))
    ).first()
    assert waiting is not None
    needs_service.close(session=db, need=waiting, fulfilled=False)
    check()
    need.escalation_next_at = utcnow()
    proposals.escalate(session=db, need=need, live=live, settings=settings, now=utcnow())  # next wave or time out
    check()
    expire_needs(db, settings, utcnow() + timedelta(days=30), UpkeepReport())
    check()
    assert changed > 10


@pytest.mark.parametrize("prune_min", [4096, 1], ids=["remembering", "forgetting"])
def test_task_changes_show_at_once_and_late_commits_within_the_recheck_interval(
    db: Session, monkeypatch: pytest.MonkeyPatch, prune_min: int
) -> None:
    # "forgetting": the change feeds drop every stamp older than their window at each wide re-read.
    monkeypatch.setattr(live_module, "_PRUNE_MIN", prune_min)
    _seed(db, np.random.default_rng(4), utcnow())
    db.execute(update(Match).values(updated_at=utcnow() - timedelta(minutes=5)))
    db.commit()
    clock = [utcnow()]
    kept = LiveTasks(recheck=timedelta(seconds=1), clock=lambda: clock[0])
    first = _held_kept(db, kept)
    assert first == _held_by_queries(db)
    pending = list(db.scalars(select(Match).where(Match.status.in_(PENDING_MATCH_STATUSES)).order_by(Match.id)))
    pending[0].status = MatchStatus.declined
    pending[0].updated_at = utcnow()
    db.commit()
    assert _held_kept(db, kept) == _held_by_queries(db)  # stamped after everything seen: at once
    late = pending[1]
    late.status = MatchStatus.cancelled
    late.updated_at = utcnow() - timedelta(seconds=20)  # committed after a later stamp was seen
    db.commit()
    assert _held_kept(db, kept)[0] != _held_by_queries(db)[0]  # the clock stands still: not re-read yet
    clock[0] += timedelta(seconds=1)
    assert _held_kept(db, kept) == _held_by_queries(db)


def test_a_helper_seen_late_has_its_cap_read_from_the_database(db: Session) -> None:
    _seed(db, np.random.default_rng(4), utcnow())
    clock = [utcnow()]
    kept = LiveTasks(recheck=timedelta(seconds=1), clock=lambda: clock[0])
    kept.refresh(session=db)
    db.execute(update(Helper).where(Helper.id == db.scalar(select(func.min(Helper.id)))).values(updated_at=utcnow()))
    db.commit()
    kept.refresh(session=db)  # the newest helper stamp seen is now
    # A helper whose row commits after that stamp was seen, with an older stamp, and a request to it.
    helper = Helper(name="late", phone="+79049999999", max_active_tasks=1, updated_at=utcnow() - timedelta(seconds=20))
    db.add(helper)
    db.flush()
    offer = Offer(helper_id=helper.id, capacity=2, lat=54.6, lon=39.7, radius_km=10.0)
    db.add(offer)
    db.flush()
    need_id = db.scalar(select(func.min(Need.id)))
    db.add(Match(need_id=need_id, offer_id=offer.id, quantity=1, distance_km=1.0, status=MatchStatus.notified))
    db.commit()
    got = _held_kept(db, kept)
    assert helper.id in got[2]  # at its cap of one open task, though its row was not read
    assert got == _held_by_queries(db)


@pytest.mark.postgres
def test_change_reads_use_the_stamp_index_without_planner_statistics() -> None:
    """A table that grew since its last ANALYZE (autovacuum off): an open ``updated_at > x`` is planned
    as a scan of the table, the feeds' bounded window as a scan of the index on the stamps."""
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as db:
                db.execute(text("ANALYZE matches"))  # statistics of the table while it was empty (as after seeding)
                db.commit()
                _seed(db, np.random.default_rng(3), utcnow())
                need_id, offer_id = db.execute(select(Match.need_id, Match.offer_id).limit(1)).one()
                stamp = utcnow() - timedelta(hours=1)
                rows = [
                    {"need_id": need_id, "offer_id": offer_id, "distance_km": 1.0, "updated_at": stamp}
                    for _ in range(5000)
                ]
                db.execute(insert(Match), rows)
                db.commit()
                feed = ChangeFeed(Match.id, Match.updated_at, recheck=timedelta(seconds=1), clock=utcnow)

                def plan(stmt: Select[Any]) -> str:
                    sql = stmt.compile(engine, compile_kwargs={"literal_binds": True}).string
                    return "\n".join(db.execute(text("EXPLAIN " + sql)).scalars())

                now = utcnow()
                assert "Seq Scan on matches" in plan(select(Match.id).where(Match.updated_at > now))
                for stmt in (feed._narrow, feed._wide):
                    bound = stmt.params(since=now)
                    assert "ix_matches_updated_at" in plan(bound), plan(bound)
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_a_wide_reread_skips_what_the_last_one_saw_but_not_a_late_commit() -> None:
    """PostgreSQL: the wide re-read leaves out row versions of transactions that had finished before
    the previous one began, and still catches a change committed late by a transaction running then."""
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        try:
            with sessions() as db, sessions() as late:
                _seed(db, np.random.default_rng(2), utcnow())
                db.commit()
                clock = [utcnow()]
                kept = LiveNeeds(recheck=timedelta(seconds=1), clock=lambda: clock[0])

                def unmet_ids() -> set[int]:
                    u = matches_service.unmet(session=db, live=LiveOfferIndex(), now=utcnow(), needs=kept)
                    db.commit()
                    return set(u.needs.id.tolist())

                before = unmet_ids()
                feed = kept._feed
                window = {"since": clock[0] - timedelta(days=3650)}
                everything = len(db.execute(feed._wide, window).all())
                assert everything >= len(before)
                # A transaction that stamps a need now and commits only after the next wide re-read began.
                slow = late.get(Need, min(before))
                assert slow is not None
                slow.status = NeedStatus.cancelled
                slow.updated_at = utcnow() - timedelta(seconds=5)
                late.flush()
                clock[0] += timedelta(seconds=1)
                assert unmet_ids() == before  # a wide re-read: the slow change is not committed yet
                assert feed._horizon is not None
                seen_already = db.execute(feed._wide_since, {**window, "horizon": feed._horizon}).all()
                db.commit()
                assert len(seen_already) < everything  # the seeded rows were seen: left out
                fresh = db.get(Need, max(before))
                assert fresh is not None
                fresh.status = NeedStatus.cancelled
                fresh.updated_at = utcnow()
                db.commit()
                assert unmet_ids() == before - {fresh.id}  # stamped after everything seen: at once
                late.commit()
                assert unmet_ids() == before - {fresh.id}  # older than the newest stamp seen: not yet
                clock[0] += timedelta(seconds=1)
                assert unmet_ids() == before - {fresh.id, slow.id}  # the next wide re-read catches it
        finally:
            engine.dispose()


def test_change_feeds_forget_stamps_no_window_can_hold_and_still_see_every_change(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "_PRUNE_MIN", 1)
    _seed(db, np.random.default_rng(5), utcnow())
    db.execute(update(Match).values(updated_at=utcnow() - timedelta(minutes=5)))
    db.commit()
    clock = [utcnow()]
    kept = LiveTasks(recheck=timedelta(seconds=1), clock=lambda: clock[0])
    assert _held_kept(db, kept) == _held_by_queries(db)
    assert kept._matches.remembered == 0  # every stamp is older than any later window
    pending = list(db.scalars(select(Match).where(Match.status.in_(PENDING_MATCH_STATUSES)).order_by(Match.id)))
    assert len(pending) >= 4

    def change(match: Match, status: MatchStatus) -> None:
        clock[0] += timedelta(seconds=1)  # each refresh below is a wide re-read
        match.status = status
        match.updated_at = clock[0]
        db.commit()

    for step, match in enumerate(pending[:3]):
        change(match, MatchStatus.declined)
        assert _held_kept(db, kept) == _held_by_queries(db), f"change {step}"
        assert 1 <= kept._matches.remembered <= step + 1  # within the window: kept
    assert kept._matches.remembered == 3
    clock[0] += timedelta(minutes=2)  # the windows move past those three stamps
    change(pending[3], MatchStatus.declined)
    change(pending[0], MatchStatus.accepted)  # forgotten, changed again: read again
    assert _held_kept(db, kept) == _held_by_queries(db)
    # The map reached twice its size after the last forgetting (2, then 4 with these two): the old
    # stamps go, the two rows changed within the last window stay.
    assert kept._matches.remembered == 2


def test_a_read_only_first_look_closed_without_a_commit_misses_no_later_change(db: Session, sessions: Any) -> None:
    """The statistics read the live needs in sessions that never commit (the warm-up at start, the
    dashboard's GETs). Nothing of such a look is read again, and a need closed after it is seen
    closed, however late the next look comes."""
    now = utcnow()
    for code in ("RO0001", "RO0002"):
        db.add(Need(code=code, category=Category.water, lat=54.6, lon=39.7, quantity=1, created_at=now, updated_at=now))
    db.commit()
    first, second = db.scalars(select(Need.id).order_by(Need.id)).all()
    clock = [utcnow()]
    needs = LiveNeeds(recheck=timedelta(seconds=1), clock=lambda: clock[0])
    live = LiveOfferIndex()

    def unmet_ids() -> set[int]:
        with sessions() as s:
            return set(matches_service.unmet(session=s, live=live, now=utcnow(), needs=needs).needs.id.tolist())

    assert unmet_ids() == {first, second}  # a session closed without a commit
    db.execute(update(Need).where(Need.id == first).values(status=NeedStatus.cancelled, updated_at=utcnow()))
    db.commit()
    db.execute(update(Need).where(Need.id == second).values(description="x", updated_at=utcnow()))
    db.commit()
    for step in range(3):  # an idle dashboard: the next look five minutes on, then wide ones
        clock[0] = utcnow() + timedelta(seconds=300 + 2 * step)
        assert unmet_ids() == {second}
