"""The open needs that each worker keeps in memory for the unmet statistics, with their reach.

Kept like the live offer index (``live.py``): loaded on first use, then brought up to date by
reading only the needs whose ``updated_at`` moved, through the same ``ChangeFeed`` (so with the same
late-commit re-read). Every change to a need touches ``updated_at``: creating, merging a repeat,
assigning units, closing, marking a duplicate, re-confirming and expiring. Expiry is by time, so
``expires_at`` is compared at each computation; units awaiting an answer come from the caller.

Reach (is some usable offer in range, does one of those have room) is kept per need as well, with
the offers it was computed against (``Coverage``): a computation asks ``matching.in_reach`` only
about the needs that are new or changed and about the offers that came or went since the last one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import String, case, cast, select
from sqlalchemy.orm import Session

import matching
from aidmatch.categories import CATEGORY_INDEX, Category
from aidmatch.database import utcnow
from aidmatch.enums import OPEN_NEED_STATUSES, Urgency
from aidmatch.matches.live import _RECHECK, ChangeFeed
from aidmatch.matches.live_tasks import LiveTasks
from aidmatch.needs.models import Need
from geo.sphere import chord_to_km, lat_lon_to_xyz

_GROW = 1024
_COMPACT_AT = 4096  # rows of needs no longer open dropped once there are this many, and half the rows
_COMPACT_SHARE = 0.5  # … and at least this share of the rows (so compacting costs O(1) a row)
_COLUMNS = ("_id", "_lat", "_lon", "_category", "_left", "_urgency", "_max_km", "_created", "_expires")
_NEVER = np.iinfo(np.int64).max  # expires_at of a need that never expires, in µs
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Offers changed since the last computation beyond which Coverage asks about every need again: at
# least this many, or this share of the offers in the set (the larger). Following costs a search of
# the covered needs against the offers that left, then of those they covered against the whole set;
# asking anew, a search of every need against the set. Which is cheaper depends on where the set's
# offers are (measured, session 19; both give the same answers): in the service's scenario during
# intake the offers with room are far from most needs (those near the fires fill first), and after
# 3,000–12,000 posts (110–463 of ~6,500–8,800 offers gone) following took 0.03–0.28 s against
# 0.7–1.0 s asking 130–145k needs anew; in a random set near every need, asking anew took 0.04 s and
# following 0.09–0.19 s whatever the share (2–35 %) that left. A whole set replaced is asked anew.
_MAX_CHANGED_OFFERS = 256
_MAX_CHANGED_SHARE = 0.25
# Needs × offers up to which Coverage compares every pair instead of searching by radius bands.
_PAIRS_AT_ONCE = 4_000_000
_PAIRS_PER_STEP = 250_000
URGENCY_INDEX = {Urgency.critical: matching.CRITICAL, Urgency.urgent: matching.URGENT, Urgency.normal: matching.NORMAL}


def _us(moment: datetime) -> int:
    """Microseconds since the epoch: exact, so comparing them compares the datetimes."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class NeedRows(NamedTuple):
    """Some needs as columns (shape (n,)): rows of ``LiveNeeds``, by id."""

    row: np.ndarray
    id: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    category: np.ndarray
    left: np.ndarray  # quantity not yet accepted
    urgency: np.ndarray
    max_km: np.ndarray
    created_us: np.ndarray


class Coverage:
    """Whether some offer of a set covers each need (``matching.in_reach``), kept between offer sets.

    Exact from one computation to the next: a need covered before stays covered unless an offer
    that left the set (or moved, or changed radius or categories) covered it, and a need not
    covered before is covered now only by an offer that joined the set. So only the needs covered
    by the offers that left are asked again (against the whole set), and only the needs not covered
    are asked about the offers that joined. Needs new or changed since are asked in full.
    """

    def __init__(self) -> None:
        self._covered: np.ndarray = np.zeros(0, dtype=bool)
        self._known = np.zeros(0, dtype=bool)
        self._geometry = [np.zeros(0) for _ in range(4)]  # lat, lon, category, max_km of each need when asked
        self._offers: matching.Offers | None = None
        self._member = np.zeros(0, dtype=bool)

    def update(self, offers: matching.Offers, member: np.ndarray, needs: NeedRows) -> np.ndarray:
        """Per need of ``needs`` (shape (n,)): whether an offer among ``member`` (shape (m,)) covers it."""
        geometry = (needs.lat, needs.lon, needs.category, needs.max_km)
        size = int(needs.row.max()) + 1 if len(needs.row) else 0
        if size > len(self._covered):
            grow = max(size, 2 * len(self._covered), _GROW)
            self._covered = np.concatenate([self._covered, np.zeros(grow - len(self._covered), dtype=bool)])
            self._known = np.concatenate([self._known, np.zeros(grow - len(self._known), dtype=bool)])
            self._geometry = [np.resize(column, grow) for column in self._geometry]
        # Needs not asked about now may change unseen: they are asked in full when they come back.
        known = np.zeros(len(self._known), dtype=bool)
        same = self._known[needs.row]
        for before, now in zip(self._geometry, geometry, strict=True):
            same &= before[needs.row] == now
        known[needs.row] = same
        if self._offers is None or not self._follow(offers, member, needs, known):
            known[:] = False
        ask = np.flatnonzero(~known[needs.row])
        if len(ask):
            self._covered[needs.row[ask]] = self._in_reach(offers, member, needs, ask)
        known[needs.row] = True
        self._known = known
        for before, now in zip(self._geometry, geometry, strict=True):
            before[needs.row] = now
        self._offers, self._member = offers, member.copy()
        covered: np.ndarray = self._covered[needs.row]
        return covered

    def compact(self, keep: np.ndarray) -> None:
        """The rows were renumbered: old row ``keep[i]`` is now row ``i`` (the others are gone)."""
        size = len(self._covered)
        seen = np.flatnonzero(keep < size)  # rows this coverage had room for; later ones are unknown
        grow = max(len(keep), _GROW)
        covered, known = np.zeros(grow, dtype=bool), np.zeros(grow, dtype=bool)
        covered[seen], known[seen] = self._covered[keep[seen]], self._known[keep[seen]]
        geometry = [np.zeros(grow) for _ in self._geometry]
        for new, old in zip(geometry, self._geometry, strict=True):
            new[seen] = old[keep[seen]]
        self._covered, self._known, self._geometry = covered, known, geometry

    def _follow(self, offers: matching.Offers, member: np.ndarray, needs: NeedRows, known: np.ndarray) -> bool:
        """Bring the known answers from the previous offer set to this one (False: too many changes)."""
        old = self._offers
        assert old is not None
        m_old = len(old)
        same = np.zeros(len(offers), dtype=bool)
        same[:m_old] = (
            (offers.lat[:m_old] == old.lat)
            & (offers.lon[:m_old] == old.lon)
            & (offers.radius_km[:m_old] == old.radius_km)
            & (offers.category_mask[:m_old] == old.category_mask)
        )
        stay = same[:m_old] & self._member & member[:m_old]
        left = self._member & ~stay
        joined = member.copy()
        joined[:m_old] &= ~stay
        changed = int(left.sum() + joined.sum())
        if changed > max(_MAX_CHANGED_OFFERS, _MAX_CHANGED_SHARE * max(int(self._member.sum()), int(member.sum()))):
            return False
        on = known[needs.row]
        if left.any():
            # Covered needs that an offer now gone covered: asked again below.
            maybe = np.flatnonzero(on & self._covered[needs.row])
            if len(maybe):
                lost = self._in_reach(old, left, needs, maybe)
                known[needs.row[maybe[lost]]] = False
                on = known[needs.row]
        if joined.any():
            maybe = np.flatnonzero(on & ~self._covered[needs.row])
            if len(maybe):
                self._covered[needs.row[maybe]] = self._in_reach(offers, joined, needs, maybe)
        return True

    @staticmethod
    def _in_reach(offers: matching.Offers, member: np.ndarray, needs: NeedRows, which: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(member & offers.is_available)
        if len(rows) == 0:
            return np.zeros(len(which), dtype=bool)
        if len(rows) * len(which) <= _PAIRS_AT_ONCE:
            return _every_pair(offers, rows, needs, which)
        return matching.in_reach(
            offers,
            member.astype(np.int64),
            needs.lat[which],
            needs.lon[which],
            needs.category[which],
            max_km=needs.max_km[which],
        )


def _every_pair(offers: matching.Offers, rows: np.ndarray, needs: NeedRows, which: np.ndarray) -> np.ndarray:
    """``matching.in_reach`` for a few needs (shape (len(which),)): every pair of need and offer of its
    category compared, with the same distance (the chord between unit vectors, in km). A search by
    radius bands builds a k-d tree per band, which costs more than this for a few dozen needs."""
    out = np.zeros(len(which), dtype=bool)
    need_xyz = lat_lon_to_xyz(needs.lat[which], needs.lon[which])
    offer_xyz = lat_lon_to_xyz(offers.lat[rows], offers.lon[rows])
    category, max_km = needs.category[which], needs.max_km[which]
    masks, radius = offers.category_mask[rows], offers.radius_km[rows]
    for c in np.unique(category).tolist():
        mine = np.flatnonzero((masks >> c) & 1)
        if len(mine) == 0:
            continue
        asked = np.flatnonzero(category == c)
        for part in np.array_split(asked, -(-len(asked) * len(mine) // _PAIRS_PER_STEP)):
            d_km = chord_to_km(np.linalg.norm(offer_xyz[mine][None, :, :] - need_xyz[part][:, None, :], axis=2))
            out[part] = ((d_km <= radius[mine]) & (d_km <= max_km[part, None])).any(axis=1)
    return out


class Reach(NamedTuple):
    """The unmet needs (by id) and, per need, whether any usable offer of its category exists,
    whether one has it in range, and whether one of those has room."""

    needs: NeedRows
    has_helper: np.ndarray
    in_range: np.ndarray
    with_room: np.ndarray


class LiveNeeds:
    """Open needs as growing columns (row = position), and their reach (see the module docstring)."""

    def __init__(
        self, *, recheck: timedelta = _RECHECK, clock: Callable[[], datetime] = utcnow, compact_at: int = _COMPACT_AT
    ) -> None:
        self._lock = threading.Lock()
        self._compact_at = compact_at
        self._feed = ChangeFeed(Need.id, Need.updated_at, recheck=recheck, clock=clock)
        self._row_of: dict[int, int] = {}
        self._n = 0
        self._id = np.zeros(_GROW, dtype=np.int64)
        self._lat = np.zeros(_GROW)
        self._lon = np.zeros(_GROW)
        self._category = np.zeros(_GROW, dtype=np.int64)
        self._left = np.zeros(_GROW, dtype=np.int64)
        self._urgency = np.zeros(_GROW, dtype=np.int64)
        self._max_km = np.zeros(_GROW)
        self._created = np.zeros(_GROW, dtype=np.int64)  # µs since the epoch
        self._expires = np.zeros(_GROW, dtype=np.int64)  # µs since the epoch (_NEVER: no expiry)
        self._open = np.zeros(_GROW, dtype=bool)  # open status, units not all accepted
        self._sorted = True  # whether the rows are in id order
        self._by_id: np.ndarray | None = None  # rows by id (None: the rows themselves)
        self._in_range = Coverage()
        self._with_room = Coverage()
        # Units held and busy helpers, followed alike.
        self.tasks = LiveTasks(recheck=recheck, clock=clock, compact_at=compact_at)

    def _grow(self, size: int) -> None:
        for name in _COLUMNS:
            setattr(self, name, np.resize(getattr(self, name), size))
        self._open = np.concatenate([self._open, np.zeros(size - len(self._open), dtype=bool)])

    def refresh(self, *, session: Session) -> None:
        """Apply every need change since the last refresh (the open needs the first time), and
        every change to the open tasks (``tasks``)."""
        with self._lock:
            look = self._feed.look(session)
            # Plain numbers where the database can give them: no per-row enum conversion.
            stmt = select(
                Need.id,
                Need.lat,
                Need.lon,
                case({c: CATEGORY_INDEX[c] for c in Category}, value=Need.category, else_=-1),
                Need.quantity - Need.quantity_assigned,
                case(dict(URGENCY_INDEX), value=Need.urgency, else_=-1),
                Need.max_distance_km,
                Need.created_at,
                Need.expires_at,
                case((Need.status.in_(OPEN_NEED_STATUSES), 1), else_=0),
                Need.updated_at,
                cast(Need.updated_at, String).label("stamp"),
            ).order_by(Need.id)
            if look.ids is None:
                stmt = stmt.where(Need.status.in_(OPEN_NEED_STATUSES))
            connection = session.connection()
            rows = [r for chunk in look.statements(stmt, Need.id) for r in connection.execute(chunk).tuples()]
            if rows:
                self._apply(rows)
            self._feed.done(look)
        self.tasks.refresh(session=session)

    def _apply(self, rows: list[Any]) -> None:
        positions = []
        newest = int(self._id[self._n - 1]) if self._n else -1
        for r in rows:
            row = self._row_of.get(r[0])
            if row is None:
                row = self._row_of[r[0]] = self._n
                self._n += 1
                if r[0] < newest:  # a need seen late (its transaction committed late): sort by id
                    self._sorted = False
                newest = max(newest, r[0])
            positions.append(row)
        if self._n > len(self._id):
            self._grow(max(self._n, 2 * len(self._id)))
        at = np.array(positions, dtype=np.int64)
        self._id[at] = [r[0] for r in rows]
        self._lat[at] = [r[1] for r in rows]
        self._lon[at] = [r[2] for r in rows]
        self._category[at] = [r[3] for r in rows]
        self._left[at] = [r[4] for r in rows]
        self._urgency[at] = [r[5] for r in rows]
        self._max_km[at] = [np.inf if r[6] is None else r[6] for r in rows]
        self._created[at] = [_us(r[7]) for r in rows]
        self._expires[at] = [_NEVER if r[8] is None else _us(r[8]) for r in rows]
        self._open[at] = [r[9] == 1 and r[4] > 0 for r in rows]
        for r in rows:
            self._feed.applied(r[0], r[11], r[10])
        closed = self._n - int(np.count_nonzero(self._open[: self._n]))
        if closed >= self._compact_at and closed >= _COMPACT_SHARE * self._n:
            self._compact()
        self._by_id = None if self._sorted else np.argsort(self._id[: self._n], kind="stable")

    def _compact(self) -> None:
        """Drop the rows of needs no longer open (closed, or every unit accepted): they count for
        nothing, and a long emergency would keep every need ever posted. One that opens again (a
        task given back) comes back as a new row like any need not seen before."""
        keep = np.flatnonzero(self._open[: self._n])
        for name in (*_COLUMNS, "_open"):
            column = getattr(self, name)
            column[: len(keep)] = column[keep]
        self._open[len(keep) : self._n] = False
        self._n = len(keep)
        ids = self._id[: self._n]
        self._row_of = dict(zip(ids.tolist(), range(self._n), strict=True))
        self._sorted = bool(np.all(ids[1:] > ids[:-1]))
        self._in_range.compact(keep)
        self._with_room.compact(keep)

    @property
    def rows(self) -> int:
        """Needs kept (open ones, and others not compacted away yet)."""
        return self._n

    def reach(
        self,
        *,
        now: datetime,
        pending: tuple[np.ndarray, np.ndarray],
        offers: matching.Offers,
        left: np.ndarray,
    ) -> Reach:
        """The open, unexpired needs with units beyond ``pending`` (need ids, units), and their reach
        among ``offers`` (a ``LiveOfferIndex.snapshot``, ``left`` units free per offer)."""
        with self._lock:
            n = self._n
            order = np.arange(n) if self._by_id is None else self._by_id
            units = self._left[:n].copy()
            held_ids, held = pending
            if len(held_ids) and n:
                by_id = self._id[order]
                pos = np.minimum(np.searchsorted(by_id, held_ids), n - 1)
                known = by_id[pos] == held_ids
                np.subtract.at(units, order[pos[known]], held[known])
            keep = self._open[:n] & (self._expires[:n] > _us(now)) & (units > 0)
            rows = order[keep[order]]
            needs = NeedRows(
                rows,
                self._id[rows],
                self._lat[rows],
                self._lon[rows],
                self._category[rows],
                units[rows],
                self._urgency[rows],
                self._max_km[rows],
                self._created[rows],
            )
            usable = offers.is_available
            offered = np.bitwise_or.reduce(offers.category_mask[usable]) if usable.any() else 0
            has_helper = ((offered >> needs.category) & 1).astype(bool)
            in_range = self._in_range.update(offers, usable, needs)
            near = NeedRows(*(column[in_range] for column in needs))
            with_room = np.zeros(len(rows), dtype=bool)
            with_room[in_range] = self._with_room.update(offers, usable & (left > 0), near)
            return Reach(needs, has_helper, in_range, with_room)
