"""Matches: the one seam between rows and arrays (rows → columns → ``matching`` → rows).

A batch run proposes matches for the units nobody has taken yet: a need's remaining units are its
quantity minus accepted units minus units in matches still pending (proposed or notified); an
offer's remaining capacity likewise. So a run never changes what was accepted or is awaiting an
answer. Services flush; the caller (CLI command, job, request) commits once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import case, func, insert, or_, select, update
from sqlalchemy.orm import Session

import matching
from aidmatch.auth.service import hash_secret
from aidmatch.categories import CATEGORY_INDEX, Category, label
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import OPEN_NEED_STATUSES, MatchRunStatus, MatchStatus, NeedStatus, OfferStatus, Urgency
from aidmatch.errors import ConflictError, NotFoundError
from aidmatch.helpers.models import Helper
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.models import Match, MatchRun
from aidmatch.messages import service as messages_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory
from aidmatch.query import PageParams, paginate
from notifications.templates import urgent_request

PENDING_MATCH_STATUSES = (MatchStatus.proposed, MatchStatus.notified)
URGENCY_INDEX = {Urgency.critical: matching.CRITICAL, Urgency.urgent: matching.URGENT, Urgency.normal: matching.NORMAL}
_INTAKE_PROPOSALS = 3  # nearest helpers proposed at once for a need that is not critical
REASON_NAMES = {
    matching.NO_OFFER_IN_RANGE: "no_helper_in_range",
    matching.ALL_IN_RANGE_AT_CAPACITY: "all_in_range_at_capacity",
    matching.ONLY_TOO_FAR: "only_too_far",
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


@dataclass(frozen=True, slots=True)
class OpenOffers:
    """Offers with capacity still free, as columns (shape (m,)); ``id`` the database ids."""

    id: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    category_mask: np.ndarray
    remaining: np.ndarray
    radius_km: np.ndarray


def _pending_units(session: Session, column: str) -> dict[int, int]:
    key = Match.need_id if column == "need" else Match.offer_id
    rows = session.execute(
        select(key, func.sum(Match.quantity)).where(Match.status.in_(PENDING_MATCH_STATUSES)).group_by(key)
    )
    return {int(k): int(v) for k, v in rows}


def load_open_needs(*, session: Session, now: datetime) -> OpenNeeds:
    """Open, unexpired needs with units not yet accepted nor pending."""
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
    pending = _pending_units(session, "need")
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    remaining = np.array([r[4] - pending.get(r[0], 0) for r in rows], dtype=np.int64)
    keep = remaining > 0
    return OpenNeeds(
        id=ids[keep],
        lat=np.array([r[1] for r in rows], dtype=np.float64)[keep],
        lon=np.array([r[2] for r in rows], dtype=np.float64)[keep],
        category=np.array([CATEGORY_INDEX[Category(r[3])] for r in rows], dtype=np.int64)[keep],
        remaining=remaining[keep],
        urgency=np.array([URGENCY_INDEX[Urgency(r[5])] for r in rows], dtype=np.int64)[keep],
        max_km=np.array([np.inf if r[6] is None else r[6] for r in rows], dtype=np.float64)[keep],
    )


def load_open_offers(*, session: Session, now: datetime) -> OpenOffers:
    """Active offers inside their availability window with capacity not accepted nor pending."""
    rows = session.execute(
        select(Offer.id, Offer.lat, Offer.lon, Offer.capacity - Offer.capacity_used, Offer.radius_km)
        .where(
            Offer.status == OfferStatus.active,
            or_(Offer.available_from.is_(None), Offer.available_from <= now),
            or_(Offer.available_until.is_(None), Offer.available_until > now),
        )
        .order_by(Offer.id)
    ).all()
    pending = _pending_units(session, "offer")
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    masks = np.zeros(len(ids), dtype=np.int64)
    if len(ids):
        cats = session.execute(select(OfferCategory.offer_id, OfferCategory.category)).all()
        cat_offer = np.array([c[0] for c in cats], dtype=np.int64)
        bit = np.array([1 << CATEGORY_INDEX[Category(c[1])] for c in cats], dtype=np.int64)
        pos = np.minimum(np.searchsorted(ids, cat_offer), len(ids) - 1)
        known = ids[pos] == cat_offer  # categories of offers that are not open are skipped
        np.bitwise_or.at(masks, pos[known], bit[known])
    remaining = np.array([r[3] - pending.get(r[0], 0) for r in rows], dtype=np.int64)
    keep = (remaining > 0) & (masks != 0)
    return OpenOffers(
        id=ids[keep],
        lat=np.array([r[1] for r in rows], dtype=np.float64)[keep],
        lon=np.array([r[2] for r in rows], dtype=np.float64)[keep],
        category_mask=masks[keep],
        remaining=remaining[keep],
        radius_km=np.array([r[4] for r in rows], dtype=np.float64)[keep],
    )


def run_batch(*, session: Session, trigger: str = "cli", now: datetime | None = None) -> MatchRun:
    """One global batch assignment over everything open; proposes matches and records the run."""
    now = now or utcnow()
    started = time.perf_counter()
    run = MatchRun(status=MatchRunStatus.running, trigger=trigger, started_at=now)
    session.add(run)
    session.flush()
    needs = load_open_needs(session=session, now=now)
    offers = load_open_offers(session=session, now=now)
    loaded = time.perf_counter()
    result = matching.match(
        matching.Needs(needs.lat, needs.lon, needs.category, needs.remaining, needs.urgency, needs.max_km),
        matching.Offers(offers.lat, offers.lon, offers.category_mask, offers.remaining, offers.radius_km),
    )
    matched_at = time.perf_counter()
    if len(result.need_index):
        session.execute(
            insert(Match),
            [
                {
                    "need_id": int(needs.id[i]),
                    "offer_id": int(offers.id[j]),
                    "run_id": run.id,
                    "quantity": int(q),
                    "distance_km": float(d),
                    "score": float(d),
                    "reason": f"batch run {run.id}: capable helper {d:.1f} km away, within its {offers.radius_km[j]:g} km",
                    "status": MatchStatus.proposed,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, j, q, d in zip(
                    result.need_index.tolist(),
                    result.offer_index.tolist(),
                    result.quantity.tolist(),
                    result.distance_km.tolist(),
                    strict=True,
                )
            ],
        )
    unserved = result.reason != matching.SERVED
    reasons = {
        REASON_NAMES[int(code)]: int(count)
        for code, count in zip(*np.unique(result.reason[unserved], return_counts=True), strict=True)
    }
    run.status = MatchRunStatus.succeeded
    run.needs_count = len(needs.id)
    run.offers_count = len(offers.id)
    run.matched_needs = int((result.served > 0).sum())
    run.unmatched_needs = int((result.served == 0).sum())
    run.assigned_quantity = int(result.quantity.sum())
    run.total_distance_km = float(np.dot(result.quantity, result.distance_km))
    run.unmatched_reasons = reasons
    run.config = {"solver": "matching.match", "objective": float(result.objective)}
    run.timings_s = {
        "load": round(loaded - started, 4),
        "match": round(matched_at - loaded, 4),
        "write": round(time.perf_counter() - matched_at, 4),
    }
    run.finished_at = utcnow()
    session.flush()
    return run


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


def accept(*, session: Session, match_id: int) -> Match:
    """Take the match's units: three conditional updates, so the last unit can never go twice.

    Each UPDATE re-checks its condition under the row lock (PostgreSQL) or the database write
    lock (SQLite); if any finds nothing to update, everything is rolled back and 409 follows.
    """
    now = utcnow()
    match = get(session=session, match_id=match_id)
    quantity, need_id, offer_id = match.quantity, match.need_id, match.offer_id
    took = session.execute(
        update(Match)
        .where(Match.id == match_id, Match.status.in_(PENDING_MATCH_STATUSES))
        .values(status=MatchStatus.accepted, responded_at=now, updated_at=now)
    )
    if took.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise ConflictError(f"match {match_id} is no longer open to accept")
    assigned = Need.quantity_assigned + quantity
    need_done = session.execute(
        update(Need)
        .where(Need.id == need_id, Need.status.in_(OPEN_NEED_STATUSES), assigned <= Need.quantity)
        .values(
            quantity_assigned=assigned,
            status=case((assigned >= Need.quantity, NeedStatus.assigned), else_=NeedStatus.partially_assigned),
            updated_at=now,
        )
    )
    if need_done.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise ConflictError(f"need {need_id} has no unit left for match {match_id}")
    offer_done = session.execute(
        update(Offer)
        .where(Offer.id == offer_id, Offer.capacity_used + quantity <= Offer.capacity)
        .values(capacity_used=Offer.capacity_used + quantity, updated_at=now)
    )
    if offer_done.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise ConflictError(f"offer {offer_id} has no capacity left for match {match_id}")
    session.flush()
    session.refresh(match)
    return match


def decline(*, session: Session, match_id: int) -> Match:
    """The helper says no: the match closes and its units go back to the pool."""
    now = utcnow()
    done = session.execute(
        update(Match)
        .where(Match.id == match_id, Match.status.in_(PENDING_MATCH_STATUSES))
        .values(status=MatchStatus.declined, responded_at=now, updated_at=now)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        get(session=session, match_id=match_id)
        raise ConflictError(f"match {match_id} is not waiting for an answer")
    match = get(session=session, match_id=match_id)
    session.refresh(match)
    return match


def complete(*, session: Session, match_id: int) -> Match:
    """The help was delivered; the need is fulfilled once all its units are delivered."""
    now = utcnow()
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
    delivered = session.scalar(
        select(func.coalesce(func.sum(Match.quantity), 0)).where(
            Match.need_id == match.need_id, Match.status == MatchStatus.completed
        )
    )
    session.execute(
        update(Need)
        .where(Need.id == match.need_id, Need.quantity <= (delivered or 0))
        .values(status=NeedStatus.fulfilled, updated_at=now)
    )
    session.flush()
    return match


@dataclass(frozen=True, slots=True)
class Wave:
    radius_km: float
    helpers: int
    wait_s: float


def parse_waves(spec: str) -> list[Wave]:
    """``km:helpers:seconds`` per wave, comma separated (AIDMATCH_ESCALATION_WAVES)."""
    waves = []
    for part in spec.split(","):
        try:
            km, count, wait = part.strip().split(":")
            waves.append(Wave(float(km), int(count), float(wait)))
        except ValueError:
            raise ValueError(f"escalation wave {part.strip()!r} is not km:helpers:seconds") from None
    return waves


def propose_for_need(*, session: Session, need: Need, live: LiveOfferIndex, settings: Settings) -> int:
    """Proposals for a new need from the live index, at once; returns helpers found in range.

    A critical need notifies the first escalation wave (its nearest helpers within the wave's
    radius) by SMS through the outbox; any other need gets its nearest helpers proposed for up
    to its quantity, for the coordinators and the next batch run to confirm.
    """
    now = utcnow()
    live.refresh(session=session, now=now)
    pending = _pending_units(session, "offer")
    limit_km = need.max_distance_km if need.max_distance_km is not None else np.inf
    critical = need.urgency is Urgency.critical
    if critical:
        wave = parse_waves(settings.escalation_waves)[0]
        k, limit_km = wave.helpers, min(limit_km, wave.radius_km)
    else:
        k = _INTAKE_PROPOSALS
    found = live.nearest(lat=need.lat, lon=need.lon, category=need.category, k=k, max_km=limit_km, pending=pending)
    # Each helper of a critical wave is asked for everything (the first to accept takes it);
    # otherwise the nearest helpers are proposed one unit each, up to the need's quantity.
    rows = [(o, d, need.quantity) for o, d in found] if critical else [(o, d, 1) for o, d in found[: need.quantity]]
    matches = []
    for offer_id, d_km, quantity in rows:
        match = Match(
            need_id=need.id,
            offer_id=offer_id,
            quantity=quantity,
            distance_km=d_km,
            score=d_km,
            reason=f"at intake: capable helper {d_km:.1f} km away" + (", wave 1" if critical else ""),
            status=MatchStatus.notified if critical else MatchStatus.proposed,
            wave=1 if critical else None,
            created_at=now,
            updated_at=now,
            notified_at=now if critical else None,
        )
        session.add(match)
        matches.append(match)
    session.flush()
    if critical:
        helper_of = dict(
            session.execute(
                select(Offer.id, Helper)
                .join(Helper, Offer.helper_id == Helper.id)
                .where(Offer.id.in_([m.offer_id for m in matches]))
            )
            .tuples()
            .all()
        )
        for match in matches:
            helper = helper_of[match.offer_id]
            if not helper.sms_consent:
                continue
            messages_service.queue(
                session=session,
                phone=helper.phone,
                body=urgent_request(
                    language=helper.language.value,
                    what=label(need.category, helper.language.value),
                    quantity=match.quantity,
                    distance_km=match.distance_km,
                    match_id=match.id,
                ),
                language=helper.language.value,
                idempotency_key=f"match:{match.id}:wave:1",
                need_id=need.id,
                match_id=match.id,
                helper_id=helper.id,
            )
    return len(found)


def unmet_stats(*, session: Session, live: LiveOfferIndex, now: datetime) -> dict[str, object]:
    """Open needs with units nobody has taken, by category × urgency × reason, and the oldest one.

    Reasons: ``no_helper_in_range`` (no usable helper of the category reaches the need),
    ``all_in_range_at_capacity`` (some do, none has room left), ``waiting_for_batch`` (a helper
    with room reaches it; the next batch run will propose).
    """
    live.refresh(session=session, now=now)
    needs = load_open_needs(session=session, now=now)
    in_range, with_room = live.reachable(
        lat=needs.lat,
        lon=needs.lon,
        category=needs.category,
        max_km=needs.max_km,
        pending=_pending_units(session, "offer"),
    )
    reason = np.where(
        ~in_range, "no_helper_in_range", np.where(~with_room, "all_in_range_at_capacity", "waiting_for_batch")
    )
    categories = list(Category)
    urgencies = {v: k for k, v in URGENCY_INDEX.items()}
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i in range(len(needs.id)):
        key = (categories[int(needs.category[i])].value, urgencies[int(needs.urgency[i])].value, str(reason[i]))
        entry = groups.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += int(needs.remaining[i])
    oldest = None
    if len(needs.id):
        first = session.scalar(select(func.min(Need.created_at)).where(Need.id.in_(needs.id.tolist())))
        oldest = (now - first).total_seconds() if first is not None else None
    return {
        "unmet_needs": len(needs.id),
        "unmet_units": int(needs.remaining.sum()),
        "oldest_unmet_age_s": oldest,
        "groups": [
            {"category": c, "urgency": u, "reason": r, "needs": v[0], "units": v[1]}
            for (c, u, r), v in sorted(groups.items())
        ],
    }
