"""Matches: the one seam between rows and arrays (rows → columns → ``matching`` → rows).

A batch run proposes matches for the units nobody has taken yet: a need's remaining units are its
quantity minus accepted units minus units in matches still pending (proposed or notified); an
offer's remaining capacity likewise. So a run never changes what was accepted or is awaiting an
answer. Services flush; the caller (CLI command, job, request) commits once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import any_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

import matching
from aidmatch.audit import service as audit
from aidmatch.auth.service import hash_secret
from aidmatch.categories import CATEGORY_INDEX, Category, label
from aidmatch.config import Settings
from aidmatch.database import IdArray, utcnow
from aidmatch.enums import (
    OPEN_NEED_STATUSES,
    MatchRunStatus,
    MatchStatus,
    MessageDirection,
    MessageStatus,
    NeedStatus,
    OfferStatus,
    Urgency,
)
from aidmatch.errors import ConflictError, NotFoundError, TaskLimitError
from aidmatch.helpers.models import Helper
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.live_needs import URGENCY_INDEX, LiveNeeds
from aidmatch.matches.models import Match, MatchRun
from aidmatch.matches.pending import PENDING_MATCH_STATUSES, close_pending, give_back_units
from aidmatch.matches.proposals import (
    INSERT_NEW_PAIRS,
    ask_again,
    asked_pairs,
    busy_helpers,
    offer_to_next_helpers,
    open_tasks,
    pending_units,
)
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message
from aidmatch.needs import service as needs_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory
from aidmatch.query import PageParams, paginate
from geo.index import SpatialIndex
from notifications.templates import helper_cannot_come, task_request

log = logging.getLogger("aidmatch.matches")

_ACCEPT_TRIES = 5
_CUT_AT_WRITE = -1
REASON_NAMES = {
    matching.NO_OFFER_IN_RANGE: "no_helper_in_range",
    matching.ALL_IN_RANGE_AT_CAPACITY: "all_in_range_at_capacity",
    matching.ONLY_TOO_FAR: "only_too_far",
    # Every helper with room in range was asked about the need before: nobody left to ask.
    matching.ALL_IN_RANGE_EXCLUDED: "all_in_range_asked",
    # A batch run's own: the matcher served the need, but while it solved its helpers were asked
    # about it, took other work up to their cap or their offers' units, or the need was taken or closed.
    _CUT_AT_WRITE: "changed_during_run",
}


@dataclass(frozen=True, slots=True)
class OpenNeeds:
    """Needs with units still to place, as columns (shape (n,)); ``id`` the database ids."""

    id: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    category: np.ndarray
    remaining: np.ndarray
    urgency: np.ndarray
    max_km: np.ndarray
    # Positions of the rows from the oldest need to the newest (equal ages: lower id first).
    by_age: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class OpenOffers:
    """Offers with capacity still free, as columns (shape (m,)); ``id`` the database ids."""

    id: np.ndarray
    helper_id: np.ndarray
    task_slots: np.ndarray  # the offer's helper: how many more tasks it may be asked to take
    lat: np.ndarray
    lon: np.ndarray
    category_mask: np.ndarray
    remaining: np.ndarray
    radius_km: np.ndarray


def load_open_needs(*, session: Session, now: datetime) -> OpenNeeds:
    """Open, unexpired needs with units not yet accepted nor pending.

    Two plain queries (the needs oldest first, the pending units per need) joined in numpy: no
    per-row enum or datetime conversion, and no plan that depends on the tables' statistics, so
    100k needs load in a fraction of a second.
    """
    category = case({c: CATEGORY_INDEX[c] for c in Category}, value=Need.category, else_=-1)
    urgency = case(dict(URGENCY_INDEX), value=Need.urgency, else_=-1)
    stmt = (
        select(
            Need.id, Need.lat, Need.lon, category, Need.quantity - Need.quantity_assigned, urgency, Need.max_distance_km
        )
        .where(
            Need.status.in_(OPEN_NEED_STATUSES),
            or_(Need.expires_at.is_(None), Need.expires_at > now),
            Need.quantity > Need.quantity_assigned,
        )
        .order_by(Need.created_at, Need.id)
    )
    # The rows are plain numbers: taken from the driver's cursor as they come (no per-row result
    # processing) straight into one array. A need without a distance limit has NULL, so NaN
    # here, so no limit (inf).
    result = session.connection().execute(stmt)
    table = np.array(result.cursor.fetchall(), dtype=np.float64).reshape(-1, 7)
    result.close()
    ids = table[:, 0].astype(np.int64)
    remaining = table[:, 4].astype(np.int64)
    pending = pending_units(session, "need")
    if pending:
        held_ids = np.fromiter(pending.keys(), dtype=np.int64, count=len(pending))
        held = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
        order = np.argsort(held_ids)
        remaining -= _room(held_ids[order], held[order], ids)
    aged = np.flatnonzero(remaining > 0)  # oldest first
    rows = aged[np.argsort(ids[aged], kind="stable")]  # by id
    rank = np.empty(len(aged), dtype=np.int64)
    rank[np.argsort(ids[aged], kind="stable")] = np.arange(len(aged))
    return OpenNeeds(
        id=ids[rows],
        lat=table[rows, 1],
        lon=table[rows, 2],
        category=table[rows, 3].astype(np.int64),
        remaining=remaining[rows],
        urgency=table[rows, 5].astype(np.int64),
        max_km=np.where(np.isnan(table[rows, 6]), np.inf, table[rows, 6]),
        by_age=rank,
    )


def load_open_offers(*, session: Session, now: datetime) -> OpenOffers:
    """Active offers inside their availability window with capacity not accepted nor pending.

    Offers of helpers at their cap of open tasks (``max_active_tasks``) are left out;
    ``task_slots`` says how many more tasks each offer's helper may take.
    """
    rows = session.execute(
        select(
            Offer.id,
            Offer.lat,
            Offer.lon,
            Offer.capacity - Offer.capacity_used,
            Offer.radius_km,
            Offer.helper_id,
            Helper.max_active_tasks,
        )
        .join(Helper, Helper.id == Offer.helper_id)
        .where(
            Offer.status == OfferStatus.active,
            or_(Offer.available_from.is_(None), Offer.available_from <= now),
            or_(Offer.available_until.is_(None), Offer.available_until > now),
        )
        .order_by(Offer.id)
    ).all()
    pending = pending_units(session, "offer")
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    masks = np.zeros(len(ids), dtype=np.int64)
    if len(ids):
        cats = session.execute(select(OfferCategory.offer_id, OfferCategory.category)).all()
        cat_offer = np.array([c[0] for c in cats], dtype=np.int64)
        bit = np.array([1 << CATEGORY_INDEX[Category(c[1])] for c in cats], dtype=np.int64)
        pos = np.minimum(np.searchsorted(ids, cat_offer), len(ids) - 1)
        known = ids[pos] == cat_offer  # categories of offers that are not open are skipped
        np.bitwise_or.at(masks, pos[known], bit[known])
    tasks = open_tasks(session)
    slots = np.array([r[6] - tasks.get(r[5], (0, 0))[0] for r in rows], dtype=np.int64)
    remaining = np.array([r[3] - pending.get(r[0], 0) for r in rows], dtype=np.int64)
    keep = (remaining > 0) & (masks != 0) & (slots > 0)
    return OpenOffers(
        id=ids[keep],
        helper_id=np.array([r[5] for r in rows], dtype=np.int64)[keep],
        task_slots=slots[keep],
        lat=np.array([r[1] for r in rows], dtype=np.float64)[keep],
        lon=np.array([r[2] for r in rows], dtype=np.float64)[keep],
        category_mask=masks[keep],
        remaining=remaining[keep],
        radius_km=np.array([r[4] for r in rows], dtype=np.float64)[keep],
    )


# The batch runs every minute in emergency mode: the matcher's improvement rounds stop in time for that
# (the run's config then says "complete": false); the first solve always runs. The default of the
# AIDMATCH_BATCH_TIME_BUDGET_S setting.
BATCH_TIME_BUDGET_S = 40.0


def run_batch(
    *,
    session: Session,
    trigger: str = "cli",
    now: datetime | None = None,
    time_budget_s: float | None = BATCH_TIME_BUDGET_S,
) -> MatchRun:
    """One global batch assignment over everything open; asks the chosen helpers and records the run.

    Writes the run, its matches and their outbox messages without committing: the caller commits
    once, so a crash leaves nothing of the run behind. A (need, helper) pair asked before is never
    asked again: such rows are dropped from the assignment (the units wait for the next helper).
    """
    now = now or utcnow()
    started = time.perf_counter()
    run = MatchRun(status=MatchRunStatus.running, trigger=trigger, started_at=now)
    needs = load_open_needs(session=session, now=now)
    offers = load_open_offers(session=session, now=now)
    asked = asked_pairs(session)
    loaded = time.perf_counter()
    result = matching.match(
        matching.Needs(needs.lat, needs.lon, needs.category, needs.remaining, needs.urgency, needs.max_km),
        matching.Offers(offers.lat, offers.lon, offers.category_mask, offers.remaining, offers.radius_km),
        time_budget_s=time_budget_s,
        # A helper asked about a need before (whatever the answer) is not asked again, through any
        # of their offers: the matcher looks past them to the next helpers.
        excluded=_excluded_rows(needs.id, offers.helper_id, asked),
    )
    matched_at = time.perf_counter()
    # The first write: on SQLite the write lock is taken here, not held through the solve.
    session.add(run)
    session.flush()
    need_ids = needs.id[result.need_index]
    helper_ids = offers.helper_id[result.offer_index]
    pairs = (need_ids << 32) | helper_ids
    asked = asked_pairs(session)  # again: another worker may have asked some meanwhile
    fresh = ~np.isin(pairs, asked) if len(asked) else np.ones(len(need_ids), dtype=bool)
    offer_ids = offers.id[result.offer_index]
    # One request per (need, helper): when two of a helper's offers serve one need, the row with the
    # most units (then the nearer) is asked; the rest goes to other helpers in the next run.
    fresh &= _one_per_pair(pairs, result)
    # The solve took up to its time budget; meanwhile intake, escalation waves and declines asked
    # helpers, needs closed or were accepted, offers were withdrawn or expired and helpers reached
    # their cap. Read what is free now (this transaction holds the write lock on SQLite) and cut
    # the rows to it, nearest first, so no offer is asked for more than it has left. PostgreSQL:
    # the needs to be asked about are locked first, in id order (as upkeep and accept take them),
    # so a need closed from now on is closed after this run's requests are in, and closes them too.
    _lock_needs(session, need_ids[fresh])
    reread_at = max(now, utcnow())
    quantity = np.where(fresh, result.quantity, 0)
    now_needs = load_open_needs(session=session, now=reread_at)
    now_offers = load_open_offers(session=session, now=reread_at)
    quantity = _fit(offer_ids, quantity, result.distance_km, _room(now_offers.id, now_offers.remaining, offer_ids))
    quantity = _fit(need_ids, quantity, result.distance_km, _room(now_needs.id, now_needs.remaining, need_ids))
    fresh &= quantity > 0
    # Task slots count only the requests really made, against the helpers' open tasks now.
    slots = _room(now_offers.id, now_offers.task_slots, offer_ids)
    within = fresh.copy()
    within[fresh] = _within_task_slots(helper_ids[fresh], result.distance_km[fresh], slots[fresh])
    cut_for_slots = np.unique(need_ids[fresh & ~within])
    fresh = within
    rows = _Rows(
        need_row=result.need_index[fresh],
        need_id=need_ids[fresh],
        helper_id=helper_ids[fresh],
        offer_id=offer_ids[fresh],
        quantity=quantity[fresh],
        distance_km=result.distance_km[fresh],
        radius_km=offers.radius_km[result.offer_index][fresh],
    )
    if len(cut_for_slots):
        # The solve does not see task slots: a helper it gave more needs than they may take keeps
        # the nearest; the needs cut go, in a second solve of their own, to the offers with room
        # and slots left (not at the next run).
        rows = rows.plus(
            _second_pass(cut_for_slots, rows, needs=now_needs, offers=now_offers, asked=asked, all_needs=needs)
        )
    kept, written = _write_batch_matches(
        session=session,
        run_id=run.id,
        now=now,
        need_ids=rows.need_id,
        helper_ids=rows.helper_id,
        offer_ids=rows.offer_id,
        quantity=rows.quantity,
        distance_km=rows.distance_km,
        radius_km=rows.radius_km,
    )
    # A pair another worker asked while this run solved was skipped by the database: not this run's.
    served = np.zeros(len(needs.id), dtype=np.int64)
    np.add.at(served, rows.need_row[kept], rows.quantity[kept])
    # Why each need the run asked nobody about was left (as many as ``unmatched_needs``): the
    # matcher's reason, or its rows cut at the write (``CUT_AT_WRITE``).
    unserved = served == 0
    codes = np.where(result.reason == matching.SERVED, _CUT_AT_WRITE, result.reason)[unserved]
    reasons = {
        REASON_NAMES[int(code)]: int(count) for code, count in zip(*np.unique(codes, return_counts=True), strict=True)
    }
    run.status = MatchRunStatus.succeeded
    run.needs_count = len(needs.id)
    run.offers_count = len(offers.id)
    run.matched_needs = int((served > 0).sum())
    run.unmatched_needs = int((served == 0).sum())
    run.assigned_quantity = int(served.sum())
    run.total_distance_km = float(np.dot(rows.quantity[kept], rows.distance_km[kept]))
    run.unmatched_reasons = reasons
    run.config = {
        "solver": "matching.match",
        "objective": float(result.objective),
        "complete": result.complete,
        # How far above the optimum the assignment can be at most (0: proven optimal; None: unknown).
        "gap_bound": result.gap_bound,
        "time_budget_s": time_budget_s,
        "dropped_rows": int(len(fresh) - kept[: int(fresh.sum())].sum()),
        "second_pass_rows": int(kept[int(fresh.sum()) :].sum()),
        "messages": written,
    }
    run.timings_s = {
        "load": round(loaded - started, 4),
        "match": round(matched_at - loaded, 4),
        "write": round(time.perf_counter() - matched_at, 4),
    }
    run.finished_at = utcnow()
    session.flush()
    audit.record(session, "finished", "run", run.id, matches=int(kept.sum()), units=run.assigned_quantity)
    return run


@dataclass(frozen=True, slots=True)
class _Rows:
    """A batch run's requests to write, as columns; ``need_row`` the need's row in the run's load."""

    need_row: np.ndarray
    need_id: np.ndarray
    helper_id: np.ndarray
    offer_id: np.ndarray
    quantity: np.ndarray
    distance_km: np.ndarray
    radius_km: np.ndarray

    @staticmethod
    def none() -> _Rows:
        empty = np.zeros(0, dtype=np.int64)
        return _Rows(empty, empty, empty, empty, empty, np.zeros(0), np.zeros(0))

    def plus(self, other: _Rows) -> _Rows:
        return _Rows(*(np.concatenate((getattr(self, f), getattr(other, f))) for f in self.__dataclass_fields__))


# The second pass is small (the needs one pass cut): it needs no budget of the run's.
_SECOND_PASS_BUDGET_S = 5.0


def _second_pass(
    need_ids: np.ndarray, first: _Rows, *, needs: OpenNeeds, offers: OpenOffers, asked: np.ndarray, all_needs: OpenNeeds
) -> _Rows:
    """Requests for the needs ``need_ids`` (cut from the first pass for their helpers' task slots)
    from the offers with units and task slots left after ``first``, none to a helper asked about
    the need before or in ``first``; within the slots, nearest first. ``needs``/``offers`` as
    re-read at the write (pending units and open tasks taken out), ``all_needs`` the run's load."""
    take = np.flatnonzero(np.isin(needs.id, need_ids))
    need_left = needs.remaining[take] - _sums(first.need_id, first.quantity, needs.id[take])
    take, need_left = take[need_left > 0], need_left[need_left > 0]
    offer_left = offers.remaining - _sums(first.offer_id, first.quantity, offers.id)
    slots_left = offers.task_slots - _sums(
        first.helper_id, np.ones(len(first.helper_id), dtype=np.int64), offers.helper_id
    )
    usable = np.flatnonzero((offer_left > 0) & (slots_left > 0))
    if len(take) == 0 or len(usable) == 0:
        return _Rows.none()
    ids = needs.id[take]
    helper_ids = offers.helper_id[usable]
    before = np.union1d(asked, (first.need_id << 32) | first.helper_id)
    result = matching.match(
        matching.Needs(
            needs.lat[take], needs.lon[take], needs.category[take], need_left, needs.urgency[take], needs.max_km[take]
        ),
        matching.Offers(
            offers.lat[usable],
            offers.lon[usable],
            offers.category_mask[usable],
            offer_left[usable],
            offers.radius_km[usable],
        ),
        time_budget_s=_SECOND_PASS_BUDGET_S,
        excluded=_excluded_rows(ids, helper_ids, before),
    )
    need_id = ids[result.need_index]
    helper_id = helper_ids[result.offer_index]
    # One request per (need, helper), the one with the most units (then the nearer), as the first pass.
    pairs = (need_id << 32) | helper_id
    keep = _one_per_pair(pairs, result)
    keep[keep] = _within_task_slots(
        helper_id[keep], result.distance_km[keep], slots_left[usable][result.offer_index][keep]
    )
    return _Rows(
        need_row=np.searchsorted(all_needs.id, need_id[keep]),
        need_id=need_id[keep],
        helper_id=helper_id[keep],
        offer_id=offers.id[usable][result.offer_index][keep],
        quantity=result.quantity[keep],
        distance_km=result.distance_km[keep],
        radius_km=offers.radius_km[usable][result.offer_index][keep],
    )


def _one_per_pair(pairs: np.ndarray, result: matching.Assignment) -> np.ndarray:
    """Per assignment row: whether it is its (need, helper) pair's row with the most units (then
    the nearer); a helper is asked once about a need, however many of their offers serve it."""
    order = np.lexsort((result.distance_km, -result.quantity, pairs))
    first = np.zeros(len(pairs), dtype=bool)
    first[order[np.unique(pairs[order], return_index=True)[1]]] = True
    return first


def _sums(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Per ``wanted`` key (shape like it): the sum of ``values`` over the rows of that key."""
    if len(keys) == 0:
        return np.zeros(len(wanted), dtype=np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    totals = np.bincount(inverse, weights=values).astype(np.int64)
    return _room(unique, totals, wanted)


_LOCK_CHUNK = 5000


def _lock_needs(session: Session, ids: np.ndarray) -> None:
    """Row-lock these needs (PostgreSQL, ``FOR NO KEY UPDATE`` as everywhere), in id order."""
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite: the run holds the write lock since its first write
    wanted = np.unique(ids).tolist()
    for k in range(0, len(wanted), _LOCK_CHUNK):
        session.execute(
            select(Need.id)
            .where(Need.id.in_(wanted[k : k + _LOCK_CHUNK]))
            .order_by(Need.id)
            .with_for_update(key_share=True)
        ).all()


def _room(ids: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` of ``wanted`` ids (shape like ``wanted``) from columns sorted by ``ids``; 0 when absent."""
    if len(ids) == 0:
        return np.zeros(len(wanted), dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return np.where(ids[pos] == wanted, values[pos], 0).astype(np.int64)


def _fit(owner: np.ndarray, quantity: np.ndarray, distance_km: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Row quantities (shape (r,)) cut so that each ``owner``'s rows, nearest first, take at most its
    ``room`` (per row: the room of the row's owner)."""
    order = np.lexsort((distance_km, owner))
    ranked, q = owner[order], quantity[order]
    before = np.cumsum(q) - q
    first = np.r_[True, ranked[1:] != ranked[:-1]] if len(ranked) else np.zeros(0, dtype=bool)
    before -= before[first][np.cumsum(first) - 1]  # units the owner's nearer rows took
    out = np.empty_like(quantity)
    out[order] = np.clip(room[order] - before, 0, q)
    return out


def _excluded_rows(need_id: np.ndarray, helper_id: np.ndarray, asked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(need rows, offer rows) of every loaded offer whose helper was asked about the loaded need
    before; ``asked`` holds keys ``need_id << 32 | helper_id`` (``asked_pairs``)."""
    empty = np.zeros(0, dtype=np.int64)
    if len(asked) == 0 or len(need_id) == 0 or len(helper_id) == 0:
        return empty, empty
    ask_need, ask_helper = asked >> 32, asked & 0xFFFFFFFF
    by_need = np.argsort(need_id, kind="stable")
    row = by_need[np.minimum(np.searchsorted(need_id, ask_need, sorter=by_need), len(need_id) - 1)]
    loaded = need_id[row] == ask_need
    row, ask_helper = row[loaded], ask_helper[loaded]
    by_helper = np.argsort(helper_id, kind="stable")
    ranked = helper_id[by_helper]
    lo = np.searchsorted(ranked, ask_helper, "left")
    count = np.searchsorted(ranked, ask_helper, "right") - lo
    # The count offers of each pair's helper: positions lo … lo + count - 1 of the helper ranking.
    shift = np.repeat(lo - (np.cumsum(count) - count), count)
    return np.repeat(row, count), by_helper[np.arange(int(count.sum())) + shift]


def _within_task_slots(helper_ids: np.ndarray, distance_km: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Per row (shape (r,)): among its helper's rows, nearest first, within the helper's task slots."""
    kept: np.ndarray = _fit(helper_ids, np.ones(len(helper_ids), dtype=np.int64), distance_km, slots) > 0
    return kept


def _write_batch_matches(
    *,
    session: Session,
    run_id: int,
    now: datetime,
    need_ids: np.ndarray,
    helper_ids: np.ndarray,
    offer_ids: np.ndarray,
    quantity: np.ndarray,
    distance_km: np.ndarray,
    radius_km: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Insert the run's matches and queue one SMS per match whose helper takes SMS.

    Returns which rows were written (a (need, helper) pair that exists already is skipped) and
    the SMS count.
    """
    if len(need_ids) == 0:
        return np.zeros(0, dtype=bool), 0
    # In (need, helper) order, as ``proposals.ask`` inserts (one need, helpers in order): see there.
    order = np.lexsort((helper_ids, need_ids))
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    need_ids, helper_ids, offer_ids = need_ids[order], helper_ids[order], offer_ids[order]
    quantity, distance_km, radius_km = quantity[order], distance_km[order], radius_km[order]
    # Stamped when written, not at the run's start: a run can take longer than the workers' change
    # feeds look back (their late-commit window), and they would never see these rows.
    written = utcnow()
    rows = [
        {
            "need_id": n,
            "helper_id": h,
            "offer_id": o,
            "run_id": run_id,
            "quantity": q,
            "distance_km": d,
            "score": d,
            "reason": f"batch run {run_id}: capable helper {d:.1f} km away, within its {r:g} km",
            "status": MatchStatus.proposed,
            "created_at": now,
            "updated_at": written,
        }
        for n, h, o, q, d, r in zip(
            need_ids.tolist(),
            helper_ids.tolist(),
            offer_ids.tolist(),
            quantity.tolist(),
            distance_km.tolist(),
            radius_km.tolist(),
            strict=True,
        )
    ]
    stmt = INSERT_NEW_PAIRS[session.get_bind().dialect.name].returning(Match.need_id, Match.helper_id, Match.id)
    inserted = np.array(session.execute(stmt, rows).tuples().all(), dtype=np.int64).reshape(-1, 3)
    kept = np.isin((need_ids << 32) | helper_ids, (inserted[:, 0] << 32) | inserted[:, 1])[back]
    audit.record_many(session, "asked", "match", np.sort(inserted[:, 2]).tolist(), run=run_id)
    consenting = select(Offer.id).join(Helper, Offer.helper_id == Helper.id).where(Helper.sms_consent.is_(True))
    session.execute(
        update(Match)
        .where(Match.run_id == run_id, Match.offer_id.in_(consenting.scalar_subquery()))
        .values(status=MatchStatus.notified, notified_at=now)
    )
    notified = session.execute(
        select(Match.id, Match.need_id, Match.quantity, Match.distance_km, Need.category, Helper)
        .join(Need, Need.id == Match.need_id)
        .join(Offer, Offer.id == Match.offer_id)
        .join(Helper, Helper.id == Offer.helper_id)
        .where(Match.run_id == run_id, Match.status == MatchStatus.notified)
        .order_by(Match.id)
    ).tuples()
    messages = [
        {
            "direction": MessageDirection.outbound,
            "status": MessageStatus.queued,
            "channel": "sms",
            "phone": helper.phone,
            "body": task_request(
                language=helper.language.value,
                what=label(category, helper.language.value),
                quantity=units,
                distance_km=km,
                match_id=match_id,
            ),
            "language": helper.language.value,
            "idempotency_key": messages_service.request_key(match_id),
            "need_id": need_id,
            "match_id": match_id,
            "helper_id": helper.id,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for match_id, need_id, units, km, category, helper in notified
    ]
    if messages:
        session.execute(insert(Message), messages)
    return kept, len(messages)


@dataclass(frozen=True, slots=True)
class MatchFilters:
    need_id: int | None = None
    offer_id: int | None = None
    run_id: int | None = None
    status: tuple[MatchStatus, ...] = ()


def list_matches(*, session: Session, filters: MatchFilters, page: PageParams) -> tuple[list[Match], int]:
    stmt = select(Match)
    if filters.need_id is not None:
        stmt = stmt.where(Match.need_id == filters.need_id)
    if filters.offer_id is not None:
        stmt = stmt.where(Match.offer_id == filters.offer_id)
    if filters.run_id is not None:
        stmt = stmt.where(Match.run_id == filters.run_id)
    if filters.status:
        stmt = stmt.where(Match.status.in_(filters.status))
    return paginate(session, stmt.order_by(Match.id), page)


def list_runs(*, session: Session, page: PageParams) -> tuple[list[MatchRun], int]:
    return paginate(session, select(MatchRun).order_by(MatchRun.id.desc()), page)


def get(*, session: Session, match_id: int) -> Match:
    match = session.get(Match, match_id)
    if match is None:
        raise NotFoundError(f"no match with id {match_id}")
    return match


def helper_owns(*, session: Session, match: Match, link_secret: str) -> bool:
    """Whether the private task link belongs to the helper behind the match's offer."""
    owner = session.scalar(
        select(Helper.link_hash).join(Offer, Offer.helper_id == Helper.id).where(Offer.id == match.offer_id)
    )
    return owner is not None and owner == hash_secret(link_secret)


def helper_of(*, session: Session, match: Match) -> int:
    """The id of the helper behind the match's offer."""
    return int(session.scalar(select(Offer.helper_id).where(Offer.id == match.offer_id)) or 0)


def accept(*, session: Session, match_id: int) -> Match:
    """Take the match's units (or what is left of them): conditional updates, so no unit goes twice.

    The need's row is updated first, so concurrent accepts for one need queue on it (row lock on
    PostgreSQL, the write lock on SQLite) and each re-checks its condition after the one before.
    A helper asked for more than is still missing takes only what is missing. When the need is
    fully taken, the other requests for it are cancelled and its escalation stops. A helper holds
    at most ``max_active_tasks`` accepted tasks: their row is locked last (after the need, the
    request and the offer), so two of their YES at once are counted one after the other.
    """
    for _ in range(_ACCEPT_TRIES):
        now = utcnow()
        match = session.get(Match, match_id, populate_existing=True)
        if match is None:
            raise NotFoundError(f"no match with id {match_id}")
        if match.status not in PENDING_MATCH_STATUSES:
            raise ConflictError(f"match {match_id} is {match.status.value}, no longer open to accept")
        need = session.get(Need, match.need_id, populate_existing=True)
        offer = session.get(Offer, match.offer_id, populate_existing=True)
        assert need is not None  # foreign key
        assert offer is not None  # foreign key
        status_before = need.status
        need_left = need.quantity - need.quantity_assigned if need.status in OPEN_NEED_STATUSES else 0
        if need_left <= 0:
            raise ConflictError(f"need {need.id} has no unit left for match {match_id}")
        if need.expires_at is not None and need.expires_at <= now:
            raise ConflictError(f"need {need.id} expired at {need.expires_at:%Y-%m-%d %H:%M} UTC; it is no longer open")
        if offer.status is not OfferStatus.active:
            raise ConflictError(f"offer {offer.id} is {offer.status.value}; make it active again to accept")
        if offer.available_until is not None and offer.available_until <= now:
            raise ConflictError(f"offer {offer.id} was available until {offer.available_until:%Y-%m-%d %H:%M} UTC")
        offer_left = offer.capacity - offer.capacity_used
        if offer_left <= 0:
            raise ConflictError(f"offer {offer.id} has no capacity left for match {match_id}")
        take = min(match.quantity, need_left, offer_left)
        assigned = Need.quantity_assigned + take
        need_done = session.execute(
            update(Need)
            .where(
                Need.id == need.id,
                Need.status.in_(OPEN_NEED_STATUSES),
                assigned <= Need.quantity,
                or_(Need.expires_at.is_(None), Need.expires_at > now),
            )
            .values(
                quantity_assigned=assigned,
                status=case((assigned >= Need.quantity, NeedStatus.assigned), else_=NeedStatus.partially_assigned),
                updated_at=now,
            )
        )
        if need_done.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()  # someone took units in between: look again
            continue
        took = session.execute(
            update(Match)
            .where(Match.id == match_id, Match.status.in_(PENDING_MATCH_STATUSES))
            .values(status=MatchStatus.accepted, quantity=take, responded_at=now, updated_at=now)
        )
        if took.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            raise ConflictError(f"match {match_id} is no longer open to accept")
        offer_done = session.execute(
            update(Offer)
            .where(
                Offer.id == offer.id,
                Offer.capacity_used + take <= Offer.capacity,
                Offer.status == OfferStatus.active,
                or_(Offer.available_until.is_(None), Offer.available_until > now),
            )
            .values(capacity_used=Offer.capacity_used + take, updated_at=now)
        )
        if offer_done.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            continue
        cap = session.scalar(
            select(Helper.max_active_tasks).where(Helper.id == offer.helper_id).with_for_update(key_share=True)
        )
        holding = session.scalar(
            select(func.count(Match.id)).where(Match.helper_id == offer.helper_id, Match.status == MatchStatus.accepted)
        )
        if cap is not None and (holding or 0) > cap:
            session.rollback()
            raise TaskLimitError(
                f"match {match_id}: the helper has {cap} accepted task{'s' if cap != 1 else ''} already, "
                "their limit; complete one or give one back first",
                limit=cap,
            )
        session.refresh(need)
        audit.record(session, "accepted", "match", match_id, need=need.id, quantity=take)
        if need.status is not status_before:
            audit.record(session, need.status.value, "need", need.id, match=match_id)
        if need.quantity_assigned >= need.quantity:
            close_pending(session, (Match.need_id == need.id) & (Match.id != match_id), now=now, why="need taken")
            need.escalation_next_at = None
        session.flush()
        session.refresh(match)
        return match
    raise ConflictError(f"match {match_id}: the need or the offer kept changing; try again")


def decline(
    *, session: Session, match_id: int, live: LiveOfferIndex | None = None, settings: Settings | None = None
) -> Match:
    """The helper says no: the match closes and its units go to the next helper (given the live index).

    A helper who accepted and cannot come after all says no too: the task is given back
    (``give_back``). A critical need in escalation waits for its next wave instead.
    """
    now = utcnow()
    status = session.scalar(select(Match.status).where(Match.id == match_id))
    if status is None:
        raise NotFoundError(f"no match with id {match_id}")
    if status is MatchStatus.accepted:
        match = give_back(session=session, match_id=match_id, now=now, settings=settings)
    else:
        # A request called off since (others took the need) is declined too: its helper said no,
        # so a give-back does not ask them again (``ask_again`` revives only cancelled requests).
        done = session.execute(
            update(Match)
            .where(Match.id == match_id, Match.status.in_((*PENDING_MATCH_STATUSES, MatchStatus.cancelled)))
            .values(status=MatchStatus.declined, responded_at=now, updated_at=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(f"match {match_id} is not waiting for an answer")
        match = get(session=session, match_id=match_id)
        session.refresh(match)
        audit.record(session, "declined", "match", match_id, need=match.need_id)
    need = session.get(Need, match.need_id)
    if live is not None and need is not None and need.escalation_next_at is None:
        live.refresh(session=session, now=now)
        offer_to_next_helpers(session=session, need=need, live=live, now=now, reason="after a decline")
    return match


def give_back(*, session: Session, match_id: int, now: datetime, settings: Settings | None = None) -> Match:
    """An accepted task its helper cannot do after all: declined (the helper is not asked for this
    need again), its units back to the need (open, or partly taken, again) and to the offer, and
    the need's author told by SMS that another helper is being looked for.

    The need's row is locked first (SQLite: the write lock), as ``accept`` and ``complete`` take
    it. The need, open again, gets a full lifetime from now (``need_expiry_hours``, given
    ``settings``; a wholly taken need did not expire, and its expiry may be long past) so that the
    search for another helper is not cut short, unless a «still needed?» waits for its author's
    answer (it stands as asked; a «has help arrived?» no longer fits and is dropped). The helpers
    whose requests were withdrawn when it was taken are asked again (``ask_again``), and a
    critical need starts its escalation waves again.
    """
    need_id = session.scalar(select(Match.need_id).where(Match.id == match_id))
    if need_id is None:
        raise NotFoundError(f"no match with id {match_id}")
    need = needs_service.get_locked(session, need_id)
    rows = session.execute(
        update(Match)
        .where(Match.id == match_id, Match.status == MatchStatus.accepted)
        .values(status=MatchStatus.declined, responded_at=now, updated_at=now)
        .returning(Match.offer_id, Match.quantity)
    ).all()
    if len(rows) != 1:
        raise ConflictError(f"match {match_id} is not accepted, so there is nothing to give back")
    ((offer_id, quantity),) = rows
    was = need.status
    help_came_asked = needs_service.asked_if_help_came(need)
    need.quantity_assigned = max(need.quantity_assigned - int(quantity), 0)
    if need.status in (NeedStatus.assigned, NeedStatus.partially_assigned):
        need.status = NeedStatus.partially_assigned if need.quantity_assigned > 0 else NeedStatus.open
    if need.status in OPEN_NEED_STATUSES:
        if help_came_asked:
            need.reconfirm_requested_at = None  # «has help arrived?» no longer fits
        if settings is not None and need.expires_at is not None and need.reconfirm_requested_at is None:
            # A new search: not cut short by an expiry near or past (a wholly taken need's expiry
            # may be long past), and asked «still needed?» again before the new one. A «still
            # needed?» waiting for its answer stands as it was asked, expiry and all.
            need.expires_at = max(need.expires_at, now + timedelta(hours=settings.need_expiry_hours))
        if need.urgency is Urgency.critical and need.escalation_next_at is None:
            # Its waves start again at the next upkeep pass (their helpers, once taken, stopped).
            need.escalation_wave = 0
            need.escalation_next_at = now
    need.updated_at = now
    session.flush()  # the need's row, then the offer's: the order accept takes them in
    give_back_units(session, {int(offer_id): int(quantity)}, now=now)
    audit.record(session, "given_back", "match", match_id, need=need.id, quantity=int(quantity))
    if need.status is not was:
        audit.record(session, need.status.value, "need", need.id, was=was.value, after=f"task {match_id} given back")
    if need.contact_phone is not None and need.status in OPEN_NEED_STATUSES:
        language = need.language.value
        messages_service.queue(
            session=session,
            phone=need.contact_phone,
            body=helper_cannot_come(language=language, code=need.code),
            language=language,
            idempotency_key=f"match:{match_id}:given-back",
            need_id=need.id,
            match_id=match_id,
        )
    if need.status in OPEN_NEED_STATUSES:
        ask_again(session, need, now=now, after=match_id)
    match = get(session=session, match_id=match_id)
    session.refresh(match)
    return match


def complete(*, session: Session, match_id: int) -> Match:
    """The help was delivered; the need is fulfilled once all its units are delivered.

    The need's row is locked first (PostgreSQL; SQLite: the write lock), as ``accept`` takes it: two
    helpers finishing their parts of one need at once are counted one after the other, so the second
    sees the first's delivery and the need is fulfilled.
    """
    now = utcnow()
    need_id = session.scalar(select(Match.need_id).where(Match.id == match_id))
    if need_id is None:
        raise NotFoundError(f"no match with id {match_id}")
    session.execute(select(Need.id).where(Need.id == need_id).with_for_update(key_share=True))
    done = session.execute(
        update(Match)
        .where(Match.id == match_id, Match.status == MatchStatus.accepted)
        .values(status=MatchStatus.completed, updated_at=now)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        get(session=session, match_id=match_id)
        raise ConflictError(f"match {match_id} is not accepted, so it cannot be completed")
    match = get(session=session, match_id=match_id)
    session.refresh(match)
    audit.record(session, "completed", "match", match_id, need=match.need_id)
    delivered = session.scalar(
        select(func.coalesce(func.sum(Match.quantity), 0)).where(
            Match.need_id == match.need_id, Match.status == MatchStatus.completed
        )
    )
    fulfilled = session.execute(
        update(Need)
        .where(Need.id == match.need_id, Need.quantity <= (delivered or 0), Need.status != NeedStatus.fulfilled)
        .values(status=NeedStatus.fulfilled, updated_at=now)
    )
    if fulfilled.rowcount == 1:  # type: ignore[attr-defined]
        audit.record(session, "fulfilled", "need", match.need_id, match=match_id)
    session.flush()
    return match


UNMET_REASONS = {
    "no_helper_of_category": "no available helper offers this category anywhere",
    "outside_every_radius": "helpers of this category exist, but none travels this far (or the need's limit is shorter)",
    "all_in_range_busy": "helpers in range, but all at capacity or at their limit of open tasks",
    "waiting_for_helper": "a helper with room is in range; the next batch run or the next-helper step will ask",
    "all_in_range_asked": "every helper with room in range was asked already (declined or did not answer); "
    "nobody will be asked again until another helper comes in range: call someone",
}


_REASON_KEYS = tuple(UNMET_REASONS)  # codes 0..3 of the reasons, in this order


@dataclass(frozen=True, slots=True)
class Unmet:
    """Open needs with units nobody holds, as columns (shape (n,)), each with why."""

    needs: OpenNeeds
    reason: np.ndarray  # keys of UNMET_REASONS
    reason_code: np.ndarray  # the same as positions in UNMET_REASONS


def unmet(*, session: Session, live: LiveOfferIndex, now: datetime, needs: LiveNeeds | None = None) -> Unmet:
    """Why each open need still has units nobody holds (accepted or awaiting an answer).

    With ``needs`` (the worker's live needs) the needs and their reach come from memory, brought up
    to date with what changed; without, every open need is read from the database and searched.
    Both give the same answer.
    """
    live.refresh(session=session, now=now)
    if needs is None:
        open_needs = load_open_needs(session=session, now=now)
        offer_units, busy = pending_units(session, "offer"), busy_helpers(session)
        nearest_km, in_range, with_room = live.reachable(
            lat=open_needs.lat,
            lon=open_needs.lon,
            category=open_needs.category,
            max_km=open_needs.max_km,
            pending=offer_units,
            blocked_helpers=busy,
        )
        has_helper = np.isfinite(nearest_km)
    else:
        needs.refresh(session=session)
        held = needs.tasks.held(session)
        offer_units, busy = held.offer_units, held.busy_helpers
        offers, left = live.snapshot(offer_units, busy)
        reach = needs.reach(now=now, pending=(held.need_id, held.need_units), offers=offers, left=left)
        has_helper, in_range, with_room = reach.has_helper, reach.in_range, reach.with_room
        rows = reach.needs
        open_needs = OpenNeeds(
            id=rows.id,
            lat=rows.lat,
            lon=rows.lon,
            category=rows.category,
            remaining=rows.left,
            urgency=rows.urgency,
            max_km=rows.max_km,
            by_age=np.lexsort((rows.id, rows.created_us)),
        )
    code = np.select([~has_helper, ~in_range, ~with_room], [0, 1, 2], default=3)
    waiting = np.flatnonzero(code == 3)
    if len(waiting):
        code[waiting[_all_asked(session, live, open_needs, waiting, offer_units, busy)]] = 4
    return Unmet(needs=open_needs, reason=np.array(_REASON_KEYS)[code], reason_code=code)


_ASKED_OF = {
    # One statement whatever the number of needs: the ids as an array (PostgreSQL) or in chunks (SQLite).
    # matches.helper_id is set on every row but the repeats of a pair from before migration 0007, whose
    # first row has it: the index on (need_id, helper_id) answers alone.
    "postgresql": select(Match.need_id, Match.helper_id).where(
        Match.need_id == any_(bindparam("ids", type_=IdArray())), Match.helper_id.is_not(None)
    ),
    "sqlite": select(Match.need_id, Match.helper_id).where(
        Match.need_id.in_(bindparam("ids", expanding=True)), Match.helper_id.is_not(None)
    ),
}


def _asked_keys(session: Session, need_ids: np.ndarray) -> np.ndarray:
    """Sorted keys ``need_id << 32 | helper_id`` of every helper asked about these needs."""
    stmt = _ASKED_OF[session.get_bind().dialect.name]
    step = len(need_ids) if session.get_bind().dialect.name == "postgresql" else 500
    parts = [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(need_ids), max(step, 1)):
        rows = session.execute(stmt, {"ids": need_ids[start : start + step].tolist()}).all()
        if rows:
            pairs = np.array(rows, dtype=np.int64)
            parts.append((pairs[:, 0] << 32) | pairs[:, 1])
    return np.unique(np.concatenate(parts))


def _all_asked(
    session: Session,
    live: LiveOfferIndex,
    needs: OpenNeeds,
    rows: np.ndarray,
    offer_units: dict[int, int],
    busy: Collection[int],
) -> np.ndarray:
    """Among needs ``rows`` (each with a helper with room in range): whether every such helper was
    asked about it before (shape like ``rows``), when the next-helper step and the batch pass over
    them all.

    Only needs with someone asked are searched: their nearest offers with room within their limit,
    four times as many while every one in range belongs to a helper asked, until one does not or
    none is left.
    """
    out = np.zeros(len(rows), dtype=bool)
    ids = needs.id[rows]
    asked = _asked_keys(session, ids)  # need_id << 32 | helper_id of these needs, sorted
    if len(asked) == 0:
        return out
    check = np.flatnonzero(np.isin(ids, asked >> 32))
    if len(check) == 0:
        return out
    offers, left, helper = live.snapshot_with_helpers(offer_units, busy)
    room = np.flatnonzero(offers.is_available & (left > 0) & (offers.category_mask != 0))
    if len(room) == 0:
        return out
    index = SpatialIndex(room, offers.lat[room], offers.lon[room], offers.category_mask[room])
    k = 8
    while len(check):
        at = rows[check]
        found, km = index.knn(
            needs.lat[at], needs.lon[at], needs.category[at], min(k, len(room)), max_km=needs.max_km[at]
        )
        hit = found >= 0
        row = np.where(hit, found, 0)
        hit &= km <= offers.radius_km[row]
        keys = (ids[check][:, None] << 32) | helper[row]
        open_ = (hit & ~np.isin(keys, asked)).any(axis=1)
        full = found[:, -1] >= 0  # the k-th was in the limit: farther ones may be someone else's
        done = open_ | ~full | (k >= len(room))
        out[check[done & ~open_]] = True
        check, k = check[~done], 4 * k
    return out


def _created_at(session: Session, need_ids: list[int]) -> dict[int, tuple[str, datetime]]:
    """Code and creation time of some needs."""
    rows = session.execute(select(Need.id, Need.code, Need.created_at).where(Need.id.in_(need_ids)))
    return {i: (code, created) for i, code, created in rows}


def _unmet_groups(u: Unmet) -> list[dict[str, object]]:
    """Needs and units per (category, urgency, reason), sorted by those three names."""
    needs = u.needs
    if len(needs.id) == 0:
        return []
    categories = [c.value for c in Category]
    urgencies = {code: urgency.value for urgency, code in URGENCY_INDEX.items()}
    key = (needs.category * 16 + needs.urgency) * 16 + u.reason_code
    keys, inverse = np.unique(key, return_inverse=True)
    count = np.bincount(inverse, minlength=len(keys))
    units = np.zeros(len(keys), dtype=np.int64)
    np.add.at(units, inverse, needs.remaining)
    groups = [
        {
            "category": categories[int(k) // 256],
            "urgency": urgencies[int(k) // 16 % 16],
            "reason": _REASON_KEYS[int(k) % 16],
            "needs": int(n),
            "units": int(w),
        }
        for k, n, w in zip(keys.tolist(), count.tolist(), units.tolist(), strict=True)
    ]
    return sorted(groups, key=lambda g: (g["category"], g["urgency"], g["reason"]))


@dataclass(frozen=True, slots=True)
class UnmetSummary:
    """The unmet statistics without their clock: the age of the oldest is taken when served."""

    unmet_needs: int
    unmet_units: int
    oldest: datetime | None
    groups: list[dict[str, object]]

    def at(self, now: datetime) -> dict[str, object]:
        """The statistics as the API answers them, the oldest one's age counted to ``now``."""
        return {
            "unmet_needs": self.unmet_needs,
            "unmet_units": self.unmet_units,
            "oldest_unmet_age_s": (now - self.oldest).total_seconds() if self.oldest is not None else None,
            "reasons": UNMET_REASONS,
            "groups": self.groups,
        }


def _oldest(session: Session, needs: OpenNeeds) -> datetime | None:
    """When the oldest of these needs was posted (None: there is none)."""
    if len(needs.id) == 0:
        return None
    oldest = int(needs.id[needs.by_age[0]])
    return _created_at(session, [oldest])[oldest][1]


def unmet_summary(
    *, session: Session, live: LiveOfferIndex, now: datetime, needs: LiveNeeds | None = None
) -> UnmetSummary:
    """Open needs with units nobody holds, by category × urgency × reason, and the oldest one."""
    return _summarize(session, unmet(session=session, live=live, now=now, needs=needs))


def _summarize(session: Session, u: Unmet) -> UnmetSummary:
    return UnmetSummary(
        unmet_needs=len(u.needs.id),
        unmet_units=int(u.needs.remaining.sum()),
        oldest=_oldest(session, u.needs),
        groups=_unmet_groups(u),
    )


def unmet_stats(
    *, session: Session, live: LiveOfferIndex, now: datetime, needs: LiveNeeds | None = None
) -> dict[str, object]:
    """Open needs with units nobody holds, by category × urgency × reason, and the oldest one."""
    return unmet_summary(session=session, live=live, now=now, needs=needs).at(now)


_MAX_STALE_S = 60.0
_STALE_WAIT_S = 0.1


class UnmetStatsCache:
    """One worker's unmet statistics, reused for ``ttl_s`` seconds (0: computed on every call).

    With ``sessions`` (a session factory) the copy is renewed off the request path: a caller finding
    it older than ``ttl_s`` gets it at once and a background thread computes the next one (one at a
    time); ``warm`` computes the first one the same way at start-up. A copy older than
    ``max_stale_s`` is renewed the same way, but each caller waits up to ``stale_wait_s`` for the new
    one while it runs and gets the old one if it is not ready by then: after a long spell with nobody
    asking, the next copy catches up with every need and request changed meanwhile (seconds after a
    minute of heavy intake), and a request should not wait for that. So a copy's age has no upper
    bound while renewals run long. If the last renewal in the background failed, a caller finding the
    copy older than ``max_stale_s`` computes it itself (the error reaches it) instead of being
    answered an ever older copy. Without ``sessions``, or without any copy yet, the caller computes
    it; callers arriving while a computation runs wait for it instead of starting their own. A copy's
    age is counted from the start of its computation and given with the statistics (``served``). The
    age of the oldest unmet need is always counted to the caller's ``now``. With ``needs`` (the
    worker's live needs) each computation takes the fast path of ``unmet``.
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        sessions: Callable[[], Session] | None = None,
        needs: LiveNeeds | None = None,
        max_stale_s: float = _MAX_STALE_S,
        stale_wait_s: float = _STALE_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_stale_s, self._sessions, self._clock = ttl_s, max_stale_s, sessions, clock
        self.stale_wait_s = stale_wait_s
        self._needs = needs
        self._lock = threading.Lock()  # held by whoever computes
        self._state = threading.Lock()  # guards the fields below
        self._summary: UnmetSummary | None = None
        self._at = 0.0
        self._worker: threading.Thread | None = None
        self._failed = False  # the last computation in the background raised

    def _copy(self) -> tuple[UnmetSummary | None, float]:
        with self._state:
            return self._summary, self._clock() - self._at

    def _compute(self, session: Session, live: LiveOfferIndex, now: datetime) -> None:
        """A new copy, unless one younger than ``ttl_s`` appeared meanwhile (call under ``_lock``)."""
        summary, age = self._copy()
        if summary is not None and age < self.ttl_s:
            return
        started = self._clock()
        summary = unmet_summary(session=session, live=live, now=now, needs=self._needs)
        with self._state:
            self._summary, self._at = summary, started

    def stats(self, *, session: Session, live: LiveOfferIndex, now: datetime) -> dict[str, object]:
        return self.served(session=session, live=live, now=now)[0]

    def served(self, *, session: Session, live: LiveOfferIndex, now: datetime) -> tuple[dict[str, object], float]:
        """The statistics, and the age in seconds of the copy they come from."""
        if self.ttl_s <= 0:
            return unmet_stats(session=session, live=live, now=now, needs=self._needs), 0.0
        summary, age = self._copy()
        if summary is not None and age < self.ttl_s:
            return summary.at(now), age
        too_old = age >= self.max_stale_s
        if summary is not None and self._sessions is not None and not (too_old and self._failed):
            worker = self.refresh_in_background(live)
            if too_old and worker is not None:
                worker.join(self.stale_wait_s)
                summary, age = self._copy()
                assert summary is not None
            return summary.at(now), age
        with self._lock:
            self._compute(session, live, now)
            self._failed = False
        summary, age = self._copy()
        assert summary is not None
        return summary.at(now), age

    def refresh_in_background(self, live: LiveOfferIndex) -> threading.Thread | None:
        """Start computing a new copy in a thread of its own, unless one is running already (that
        one is returned then; None without ``sessions`` or with ``ttl_s`` 0)."""
        if self._sessions is None or self.ttl_s <= 0:
            return None
        with self._state:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._refresh, args=(live,), name="unmet-stats", daemon=True)
                self._worker.start()
            return self._worker

    warm = refresh_in_background

    def _refresh(self, live: LiveOfferIndex) -> None:
        assert self._sessions is not None
        try:
            with self._lock, self._sessions() as session:
                self._compute(session, live, utcnow())
        except Exception:  # the next request asks again, or computes itself once the copy is too old
            if not self._failed:  # logged once until a computation succeeds again
                log.exception("computing the unmet statistics in the background failed")
            self._failed = True
        else:
            self._failed = False

    def close(self, timeout_s: float = 30.0) -> None:
        """Wait for a background computation (before the engine goes)."""
        with self._state:
            worker = self._worker
        if worker is not None:
            worker.join(timeout_s)


def unmet_needs(
    *,
    session: Session,
    live: LiveOfferIndex,
    now: datetime,
    reasons: Sequence[str],
    page: PageParams,
    needs: LiveNeeds | None = None,
    only: UnmetFilter | None = None,
) -> tuple[list[dict[str, object]], int]:
    """Unmet needs one by one, oldest first (ties by id), with why (optionally only some reasons, and
    ``only`` those of a category, an urgency, an age; chosen before the page is cut)."""
    u = unmet(session=session, live=live, now=now, needs=needs)
    return _unmet_rows(session, live, u, now, reasons, page, only)


@dataclass(frozen=True, slots=True)
class UnmetFilter:
    """Which unmet needs to list: of a category, of an urgency, posted since a moment (None: any)."""

    category: Category | None = None
    urgency: Urgency | None = None
    created_since: datetime | None = None


def unmet_overview(
    *,
    session: Session,
    live: LiveOfferIndex,
    now: datetime,
    page: PageParams,
    needs: LiveNeeds | None = None,
    only: UnmetFilter | None = None,
) -> tuple[dict[str, object], list[dict[str, object]], int]:
    """``unmet_stats`` and the first ``page`` of ``unmet_needs`` from one computation (the dashboard).
    ``only`` chooses the needs listed before the page is cut (the total counts them); the
    statistics stay those of every unmet need."""
    u = unmet(session=session, live=live, now=now, needs=needs)
    items, total = _unmet_rows(session, live, u, now, (), page, only)
    return _summarize(session, u).at(now), items, total


def _unmet_rows(
    session: Session,
    live: LiveOfferIndex,
    u: Unmet,
    now: datetime,
    reasons: Sequence[str],
    page: PageParams,
    only: UnmetFilter | None = None,
) -> tuple[list[dict[str, object]], int]:
    order = u.needs.by_age
    if reasons:
        order = order[np.isin(u.reason[order], list(reasons))]
    if only is not None and only.category is not None:
        order = order[u.needs.category[order] == CATEGORY_INDEX[only.category]]
    if only is not None and only.urgency is not None:
        order = order[u.needs.urgency[order] == URGENCY_INDEX[only.urgency]]
    if only is not None and only.created_since is not None and len(order):
        # The columns carry no creation time: the open needs posted since, from the database.
        recent = session.scalars(
            select(Need.id).where(Need.created_at >= only.created_since, Need.status.in_(OPEN_NEED_STATUSES))
        ).all()
        order = order[np.isin(u.needs.id[order], np.fromiter(recent, dtype=np.int64, count=len(recent)))]
    total = len(order)
    rows = order[page.offset : page.offset + page.limit]
    about = _created_at(session, u.needs.id[rows].tolist())
    # The nearest helper of the category however far, for the rows shown only (a k-d tree query each).
    nearest_km = dict(
        zip(
            rows.tolist(),
            live.nearest_km(u.needs.lat[rows], u.needs.lon[rows], u.needs.category[rows]).tolist(),
            strict=True,
        )
    )
    categories = list(Category)
    urgencies = {v: k for k, v in URGENCY_INDEX.items()}
    items: list[dict[str, object]] = [
        {
            "id": int(u.needs.id[i]),
            "code": about[int(u.needs.id[i])][0] if int(u.needs.id[i]) in about else None,
            "category": categories[int(u.needs.category[i])].value,
            "urgency": urgencies[int(u.needs.urgency[i])].value,
            "units": int(u.needs.remaining[i]),
            "lat": float(u.needs.lat[i]),
            "lon": float(u.needs.lon[i]),
            "age_s": (now - about[int(u.needs.id[i])][1]).total_seconds() if int(u.needs.id[i]) in about else 0.0,
            "reason": str(u.reason[i]),
            "nearest_helper_km": nearest_km[i] if np.isfinite(nearest_km[i]) else None,
        }
        for i in rows.tolist()
    ]
    return items, total
