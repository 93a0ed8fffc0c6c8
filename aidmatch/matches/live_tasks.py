"""The open tasks and the helpers' caps that each worker keeps in memory for the unmet statistics.

The statistics need the units awaiting an answer per need and per offer, and the helpers at their
cap of open tasks (requests awaiting an answer plus accepted tasks). Reading every open match (~30k
rows after a batch run) and every helper's cap on each computation took ~50 ms of 80–90 ms; they are
kept here instead, like the needs (``live_needs.py``) and the offers (``live.py``):
loaded on first use, then brought up to date by reading only the matches and helpers whose
``updated_at`` moved, through the same ``ChangeFeed`` (indexes ``ix_matches_updated_at`` and
``ix_helpers_updated_at``, migration 0006). Every change to a match touches ``updated_at``
(the ORM's flushes and bare ``update(Match)`` through the column's ``onupdate``; the services set
it explicitly). A match's offer, and so its helper, never changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import String, case, cast, select
from sqlalchemy.orm import Session

from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus
from aidmatch.helpers.models import Helper
from aidmatch.matches.live import _RECHECK, ChangeFeed
from aidmatch.matches.models import Match
from aidmatch.matches.pending import PENDING_MATCH_STATUSES
from aidmatch.matches.proposals import OPEN_TASK_STATUSES
from aidmatch.offers.models import Offer

_GROW = 1024
_COMPACT_AT = 4096  # closed rows dropped once there are this many and at least as many as open ones
_COMPACT_SHARE = 0.5  # … and at least this share of the rows (so compacting costs O(1) a row)
_COLUMNS = ("_id", "_need", "_offer", "_helper", "_units", "_state")
_CLOSED, _ACCEPTED, _PENDING = 0, 1, 2  # a match's state as kept: an open task is accepted or pending


@dataclass(frozen=True, slots=True)
class Held:
    """Units awaiting an answer per need (ids sorted, units) and per offer, and the helpers at their cap."""

    need_id: np.ndarray
    need_units: np.ndarray
    offer_units: dict[int, int]
    busy_helpers: set[int]


class LiveTasks:
    """Matches as growing columns (row = position; closed ones marked closed until compacted away) and
    helper caps."""

    def __init__(
        self, *, recheck: timedelta = _RECHECK, clock: Callable[[], datetime] = utcnow, compact_at: int = _COMPACT_AT
    ) -> None:
        self._lock = threading.Lock()
        self._compact_at = compact_at
        self._matches = ChangeFeed(Match.id, Match.updated_at, recheck=recheck, clock=clock)
        self._helpers = ChangeFeed(Helper.id, Helper.updated_at, recheck=recheck, clock=clock)
        self._row_of: dict[int, int] = {}
        self._n = 0
        self._id = np.zeros(_GROW, dtype=np.int64)
        self._need = np.zeros(_GROW, dtype=np.int64)
        self._offer = np.zeros(_GROW, dtype=np.int64)
        self._helper = np.zeros(_GROW, dtype=np.int64)
        self._units = np.zeros(_GROW, dtype=np.int64)
        self._state = np.zeros(_GROW, dtype=np.int8)
        self._cap: dict[int, int] = {}
        self._caps: tuple[np.ndarray, np.ndarray] | None = None  # helper ids sorted, their caps

    def refresh(self, *, session: Session) -> None:
        """Apply every match and helper change since the last refresh (the open matches and every
        helper the first time)."""
        with self._lock:
            connection = session.connection()
            look = self._matches.look(session)
            stmt = (
                select(
                    Match.id,
                    Match.need_id,
                    Match.offer_id,
                    Offer.helper_id,
                    Match.quantity,
                    case(
                        (Match.status.in_(PENDING_MATCH_STATUSES), _PENDING),
                        (Match.status == MatchStatus.accepted, _ACCEPTED),
                        else_=_CLOSED,
                    ),
                    Match.updated_at,
                    cast(Match.updated_at, String).label("stamp"),
                )
                .join(Offer, Offer.id == Match.offer_id)
                .order_by(Match.id)
            )
            if look.ids is None:
                stmt = stmt.where(Match.status.in_(OPEN_TASK_STATUSES))
            rows = [r for chunk in look.statements(stmt, Match.id) for r in connection.execute(chunk).tuples()]
            if rows:
                self._apply(rows)
            self._matches.done(look)
            look = self._helpers.look(session)
            stmt = select(
                Helper.id, Helper.max_active_tasks, Helper.updated_at, cast(Helper.updated_at, String).label("stamp")
            )
            helpers = [r for chunk in look.statements(stmt, Helper.id) for r in connection.execute(chunk).tuples()]
            for helper_id, cap, updated_at, stamp in helpers:
                self._cap[helper_id] = cap
                self._helpers.applied(helper_id, stamp, updated_at)
            if helpers:
                self._caps = None
            self._helpers.done(look)

    def _apply(self, rows: list[Any]) -> None:
        positions = []
        for r in rows:
            row = self._row_of.get(r[0])
            if row is None:
                row = self._row_of[r[0]] = self._n
                self._n += 1
            positions.append(row)
        if self._n > len(self._need):
            size = max(self._n, 2 * len(self._need))
            for name in _COLUMNS:
                setattr(self, name, np.resize(getattr(self, name), size))
        at = np.array(positions, dtype=np.int64)
        self._id[at] = [r[0] for r in rows]
        self._need[at] = [r[1] for r in rows]
        self._offer[at] = [r[2] for r in rows]
        self._helper[at] = [r[3] for r in rows]
        self._units[at] = [r[4] for r in rows]
        self._state[at] = [r[5] for r in rows]
        for r in rows:
            self._matches.applied(r[0], r[7], r[6])
        closed = self._n - int(np.count_nonzero(self._state[: self._n]))
        if closed >= self._compact_at and closed >= _COMPACT_SHARE * self._n:
            self._compact()

    def _compact(self) -> None:
        """Drop the closed matches' rows: they count for nothing, and a long emergency would keep
        every match ever made. A closed match that changes again (a late answer) comes back as a
        new row like any match not seen before."""
        keep = np.flatnonzero(self._state[: self._n] != _CLOSED)
        for name in _COLUMNS:
            column = getattr(self, name)
            column[: len(keep)] = column[keep]
        self._n = len(keep)
        self._row_of = dict(zip(self._id[: self._n].tolist(), range(self._n), strict=True))

    @property
    def rows(self) -> int:
        """Matches kept (open ones, and closed ones not compacted away yet)."""
        return self._n

    def held(self, session: Session) -> Held:
        """Units awaiting an answer per need and per offer, and the helpers at their cap, as the last
        ``refresh`` left them (the cap of a helper not seen yet is read from the database)."""
        with self._lock:
            n = self._n
            state = self._state[:n]
            pending = state == _PENDING
            need_id, at = np.unique(self._need[:n][pending], return_inverse=True)
            need_units = np.bincount(at, weights=self._units[:n][pending], minlength=len(need_id)).astype(np.int64)
            offer_id, at = np.unique(self._offer[:n][pending], return_inverse=True)
            offer_units = np.bincount(at, weights=self._units[:n][pending], minlength=len(offer_id)).astype(np.int64)
            helpers, tasks = np.unique(self._helper[:n][state != _CLOSED], return_counts=True)
            if self._caps is None:
                ids = np.fromiter(self._cap.keys(), dtype=np.int64, count=len(self._cap))
                caps = np.fromiter(self._cap.values(), dtype=np.int64, count=len(self._cap))
                order = np.argsort(ids)
                self._caps = ids[order], caps[order]
            known_ids, known_caps = self._caps
        busy: set[int] = set()
        if len(helpers):
            pos = np.minimum(np.searchsorted(known_ids, helpers), max(len(known_ids) - 1, 0))
            seen = known_ids[pos] == helpers if len(known_ids) else np.zeros(len(helpers), dtype=bool)
            cap = np.where(seen, known_caps[pos] if len(known_ids) else 0, 0)
            if not seen.all():  # a helper whose row committed after a later stamp was seen
                unseen = helpers[~seen].tolist()
                stmt = select(Helper.id, Helper.max_active_tasks).where(Helper.id.in_(unseen))
                read = dict(session.execute(stmt).tuples().all())
                cap[~seen] = [read[h] for h in unseen]
            busy = set(helpers[tasks >= cap].tolist())
        return Held(
            need_id=need_id,
            need_units=need_units,
            offer_units=dict(zip(offer_id.tolist(), offer_units.tolist(), strict=True)),
            busy_helpers=busy,
        )
