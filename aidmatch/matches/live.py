"""The live index of available offers that each worker keeps in memory for the intake path.

Built from the database on first use, then brought up to date before each lookup by reading only
the offers whose ``updated_at`` moved (every create, change, capacity change and expiry touches
it), so a change made through any worker reaches every worker without a rebuild.

Before each lookup it reads the offers stamped after the newest stamp it has applied (an index
range scan: nothing when nothing changed). A transaction that commits a change after a later one
was seen (its stamp is older than the newest applied) is caught by a wider re-read of the last
``_LAG`` of stamps, done at most every ``recheck`` (1 s), so such a late change shows within a
second. Capacity is never taken on the index's word: accepting is a conditional update.

An offer's availability window (``available_from``/``available_until``) opens and closes with the
clock, not with a row change: each refresh puts in the offers whose window has opened and takes
out those whose window has closed, checking only once the earliest such moment has come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypedDict

import numpy as np
from sqlalchemy import Select, String, any_, bindparam, cast, event, select, text
from sqlalchemy.orm import InstrumentedAttribute, ORMExecuteState, Session, SessionTransaction

import matching
from aidmatch.categories import CATEGORY_INDEX, Category
from aidmatch.database import UNPREPARED, IdArray, utcnow
from aidmatch.enums import OfferStatus
from aidmatch.offers.models import Offer, OfferCategory
from geo.index import SpatialIndex

_GROW = 1024
_LAG = timedelta(seconds=60)  # re-read changes this far behind the last wide re-read (late commits)
_RECHECK = timedelta(seconds=1)  # how often the wide re-read runs
_JOINT_BELOW = 256  # queries at once (geo.index.SpatialIndex: a joint search below, per category above)
_PRUNE_MIN = 4096  # a change feed forgets old stamps once it remembers this many (and twice the last count)
_NOTHING = ("", None)
_CHUNK = 1000
_END = datetime(9999, 12, 31, tzinfo=UTC)  # later than any stamp (see ``ChangeFeed``)
# How long a worker's lookups pass over a helper found at the cap of open tasks without asking the
# database again (``LiveOfferIndex.note_busy``).
BUSY_MEMORY_S = 2.0
_WIDEN = 8  # each further round of a ``nearest`` lookup searches this many times as wide


def _first_width(k: int) -> int:
    """How many offers the first round of a ``nearest`` lookup for ``k`` searches: some of the
    nearest are usually busy, so a little wider at once."""
    return max(4 * k, 16)


# PostgreSQL 13+: the oldest transaction still running, as its low 32 bits (what a row's xmin holds).
_HORIZON = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296")
_STAMP = cast(Offer.updated_at, String)  # updated_at as the database prints it
_OFFER_ROWS = select(
    Offer.id,
    Offer.helper_id,
    Offer.lat,
    Offer.lon,
    Offer.radius_km,
    Offer.capacity,
    Offer.capacity_used,
    Offer.status,
    Offer.available_from,
    Offer.available_until,
    Offer.updated_at,
    _STAMP.label("stamp"),
    OfferCategory.category,
).outerjoin(OfferCategory, OfferCategory.offer_id == Offer.id)


class Look(NamedTuple):
    """One refresh's view of what changed: the ids to re-read (None: every row, the first time)."""

    started: datetime
    wide: bool
    ids: list[int] | None
    horizon: int | None = None  # PostgreSQL: transactions before this xid had finished when the look began
    session: Session | None = None

    def statements(self, stmt: Select[Any], id_column: InstrumentedAttribute[int]) -> list[Select[Any]]:
        """``stmt`` restricted to the rows to re-read, in chunks of ids (``stmt`` itself the first time)."""
        if self.ids is None:
            return [stmt]
        if not self.ids:
            return []
        if self.session is not None and self.session.get_bind().dialect.name == "postgresql":
            # One statement: ``= ANY(array)`` is one text with one parameter however many ids, where
            # ``IN`` has a placeholder per id that SQLAlchemy and psycopg render and parse anew each
            # time (after a burst of posts, a tenth of the statistics' catch-up). Unprepared: one text
            # run again and again would be prepared, its plan kept from when the table was small.
            ids = bindparam("look_ids", self.ids, type_=IdArray())
            return [stmt.where(id_column == any_(ids)).execution_options(**UNPREPARED)]
        return [stmt.where(id_column.in_(self.ids[k : k + _CHUNK])) for k in range(0, len(self.ids), _CHUNK)]


class ChangeFeed:
    """Which rows of a table changed since the last look, told by their ``updated_at`` stamps.

    A look reads the rows stamped after the newest stamp applied (an index range scan: nothing
    when nothing changed). At most every ``recheck`` it reads instead the rows stamped since a
    little (``_LAG``) before the previous such re-read started, because a transaction commits its
    change after stamping it and may commit after a later stamp was seen. A row whose stamp was
    already applied is not read again. On PostgreSQL the re-read also leaves out the row versions
    of transactions that had finished before the previous re-read began (it read them), so after a
    bulk write it does not fetch the whole window's stamps every second for a minute. Not
    thread-safe: the owner looks under its own lock.

    A look reads inside its session's transaction, so after that transaction wrote something it
    also sees what it has not committed. If such a transaction then ends without a commit (a
    rollback, a lost commit, a close), the rows the look applied with a new stamp are read again by
    id at the next look: their rolled-back stamps may be newer than the rows' real ones, which no
    later window would bring back, and a row whose insert was undone is gone (the owner drops what
    it asked for and did not get). A look in a transaction that has written nothing saw only
    committed rows and is never read again (the dashboard's and the statistics' reads).
    """

    def __init__(
        self,
        id_column: InstrumentedAttribute[int],
        stamp_column: InstrumentedAttribute[datetime],
        *,
        recheck: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._id, self._stamped, self._recheck, self._clock = id_column, stamp_column, recheck, clock
        self._text = cast(stamp_column, String)  # updated_at as the database prints it
        # Built once (building and keying a statement costs more Python time than a look that finds nothing).
        # The upper bound changes no answer (no stamp is that late) but makes the condition a range, which a
        # planner without statistics on the column (a table that grew since its last ANALYZE, autovacuum
        # off) estimates at a small fraction of the rows and so answers from the index on the stamps; an
        # open ``>`` it estimates at a third of the rows, and scans the table.
        since, end = bindparam("since", type_=stamp_column.type), bindparam("end", _END, type_=stamp_column.type)
        self._wide = select(id_column, self._text).where(stamp_column >= since, stamp_column < end)
        self._narrow = select(id_column, self._text).where(stamp_column > since, stamp_column < end)
        # PostgreSQL: a wide re-read skips the row versions written by transactions that had finished
        # before the previous wide re-read began (it saw them, and its window held theirs). ``age``
        # counts transactions back from one reference fixed per transaction, so comparing two ages
        # compares the two transaction ids, wraparound included.
        table = stamp_column.property.columns[0].table.name
        written_since = text(f"age({table}.xmin) <= age(CAST(CAST(:horizon AS text) AS xid))")
        self._wide_since = self._wide.where(written_since)
        self._seen: datetime | None = None  # wall-clock start of the last wide re-read
        self._horizon: int | None = None  # PostgreSQL: ``Look.horizon`` of the last wide re-read
        self._newest: datetime | None = None  # the newest updated_at applied
        # Row id → the updated_at applied, as text and as read. Only rows a later window can hold
        # need it: older ones are dropped after a wide re-read once the map has doubled.
        self._applied: dict[int, tuple[str, datetime]] = {}
        self._prune_at = _PRUNE_MIN
        self._fresh: set[int] = set()  # rows the current look applied with a stamp new to it
        # Rows applied by a writing transaction that ended without a commit, set from the session's
        # thread; taken by the next look under this lock.
        self._undone: set[int] = set()
        self._undone_lock = threading.Lock()

    def look(self, session: Session) -> Look:
        """The rows to re-read now; apply each with ``applied``, then call ``done``."""
        started = self._clock()
        self._fresh = set()
        with self._undone_lock:
            undone, self._undone = self._undone, set()
        wide = self._seen is None or self._newest is None or started - self._seen >= self._recheck
        connection = session.connection()
        horizon = None
        if wide and connection.dialect.name == "postgresql":
            # Taken before the window is read: every transaction older than this is visible to that read.
            horizon = int(connection.execute(_HORIZON).scalar_one())
        if self._seen is None:
            return Look(started, wide, None, horizon, session)
        params: dict[str, Any] = {"since": self._seen - _LAG if wide else self._newest}
        if not wide:
            stmt = self._narrow
        elif self._horizon is not None and horizon is not None:
            stmt, params["horizon"] = self._wide_since, self._horizon
        else:
            stmt = self._wide
        # Two steps: the stamps of the window (cheap), then the caller reads full rows of what changed.
        # Stamps compared as the database prints them: after a bulk import the window holds every
        # row, and plain (id, text) rows from the driver cost little.
        window = connection.execute(stmt, params)
        applied = self._applied.get
        ids = {i for i, stamp in window.cursor.fetchall() if (applied(i) or _NOTHING)[0] != stamp}
        window.close()
        return Look(started, wide, sorted(ids | undone), horizon, session)

    def applied(self, row_id: int, stamp: str, updated_at: datetime) -> None:
        """The row was read with this ``updated_at`` (``stamp``: the same as the database prints it)."""
        if (self._applied.get(row_id) or _NOTHING)[0] != stamp:
            self._fresh.add(row_id)
        self._applied[row_id] = (stamp, updated_at)
        if self._newest is None or updated_at > self._newest:
            self._newest = updated_at

    def done(self, look: Look) -> None:
        if look.session is not None and self._fresh and look.session.info.get(_WROTE):
            _watch(look.session, self, self._fresh)
        self._fresh = set()
        if look.wide:
            self._seen, self._horizon = look.started, look.horizon
            if len(self._applied) >= self._prune_at:
                self._prune(self._seen - _LAG)

    def _prune(self, floor: datetime) -> None:
        """Forget the rows applied with a stamp before ``floor``, the start of every later window.

        A wide re-read reads from there on, a narrow one after the newest stamp applied: a row
        forgotten here shows in a window again only with a newer stamp, which is re-read anyway.
        Without this the map would hold every row ever changed in a long emergency.
        """
        self._applied = {i: a for i, a in self._applied.items() if a[1] >= floor}
        self._prune_at = max(_PRUNE_MIN, 2 * len(self._applied))

    def undone(self, ids: set[int]) -> None:
        """The rows ``ids`` were applied in a writing transaction that did not commit."""
        with self._undone_lock:
            self._undone |= ids

    @property
    def remembered(self) -> int:
        """How many rows' stamps are kept (for tests and metrics)."""
        return len(self._applied)


_WATCHED = "aidmatch.change_feeds"  # session.info: feed → rows it applied in the open transaction
_WROTE = "aidmatch.wrote"  # session.info: the open transaction has written (a flush or a DML statement)


def _watch(session: Session, feed: ChangeFeed, ids: set[int]) -> None:
    """Remember that ``feed`` applied ``ids`` inside ``session``'s (writing) transaction."""
    session.info.setdefault(_WATCHED, {}).setdefault(feed, set()).update(ids)


@event.listens_for(Session, "do_orm_execute")
def _noted_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


@event.listens_for(Session, "after_flush")
def _noted_flush(session: Session, context: Any) -> None:
    session.info[_WROTE] = True


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint's commit: the transaction goes on
        session.info.pop(_WATCHED, None)


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:  # a savepoint's end (the transaction goes on)
        return
    session.info.pop(_WROTE, None)
    for feed, ids in session.info.pop(_WATCHED, {}).items():
        feed.undone(ids)


class Candidate(NamedTuple):
    """A capable offer found for a need: ids, great-circle km, and units it has free."""

    offer_id: int
    helper_id: int
    km: float
    free: int


class Points(TypedDict):
    """The points of ``helpers_near`` and ``helpers_further``, shape (n,) each: where, what (as
    ``CATEGORY_INDEX``), and the k and max_km of the ``nearest`` lookup made for each."""

    lat: np.ndarray
    lon: np.ndarray
    category: np.ndarray
    k: np.ndarray
    max_km: np.ndarray


def _usable(
    found: list[tuple[int, int, float, int]],
    *,
    pending: Callable[[list[int]], dict[int, int]],
    blocked: Callable[[list[int]], set[int]],
) -> list[Candidate]:
    """The offers of a ``nearest`` round (offer id, helper id, km, units left) with units free
    beyond those awaiting an answer, of helpers not passed over, nearest first: ``blocked`` is
    asked about the round's helpers, then ``pending`` about its offers (one read by helper can
    serve both)."""
    skip = blocked(sorted({helper_id for _, helper_id, _, _ in found}))
    held = pending([offer_id for offer_id, _, _, _ in found])
    out = []
    for offer_id, helper_id, d, units in found:
        free = units - held.get(offer_id, 0)
        if free > 0 and helper_id not in skip:
            out.append(Candidate(offer_id, helper_id, d, free))
    return out


class LiveOfferIndex:
    """Offers as growing columns (row = position) plus a SpatialIndex over the usable rows."""

    def __init__(
        self,
        *,
        recheck: timedelta = _RECHECK,
        clock: Callable[[], datetime] = utcnow,
        busy_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        # Helpers lately found at their cap → when (``busy_clock``); their rows as a mask, cached.
        self._busy: dict[int, float] = {}
        self._full: dict[int, float] = {}  # offers lately found with every unit awaiting an answer → when
        self._busy_rows: np.ndarray | None = None
        self._busy_clock = busy_clock
        self._row_of: dict[int, int] = {}
        self._n = 0
        self._lat = np.zeros(_GROW)
        self._lon = np.zeros(_GROW)
        self._mask = np.zeros(_GROW, dtype=np.int64)
        self._radius = np.zeros(_GROW)
        self._capacity = np.ones(_GROW, dtype=np.int64)
        self._left = np.zeros(_GROW, dtype=np.int64)
        self._offer_id = np.zeros(_GROW, dtype=np.int64)
        self._helper_id = np.zeros(_GROW, dtype=np.int64)
        self._in_index = np.zeros(_GROW, dtype=bool)
        # Availability window in seconds since the epoch (-inf / inf: open) of offers that are active
        # and serve something; the clock moves them in and out of the index without a row change.
        self._eligible = np.zeros(_GROW, dtype=bool)
        self._from = np.zeros(_GROW)
        self._until = np.zeros(_GROW)
        self._next_turn = np.inf  # the earliest moment the clock makes or unmakes an eligible offer
        # Intake lookups ask about a few points in many categories at once: one joint search each.
        self._index = SpatialIndex(
            np.zeros(0, dtype=np.int64), [], [], np.zeros(0, dtype=np.int64), joint_below=_JOINT_BELOW
        )
        self._feed = ChangeFeed(Offer.id, Offer.updated_at, recheck=recheck, clock=clock)
        self._offers: matching.Offers | None = None
        # Rounds of ``nearest`` for the points ``helpers_near`` and ``helpers_further`` searched
        # last (its arguments → what the round found), valid until the next change of the offers.
        self._kept: dict[tuple[float, float, int, int, float], list[tuple[int, int, float, int]]] = {}

    def _grow(self) -> None:
        size = len(self._lat) * 2
        for name in (
            "_lat",
            "_lon",
            "_mask",
            "_radius",
            "_capacity",
            "_left",
            "_offer_id",
            "_helper_id",
            "_in_index",
            "_eligible",
            "_from",
            "_until",
        ):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            if name == "_capacity":
                new[:] = 1
            new[: len(old)] = old
            setattr(self, name, new)

    def refresh(self, *, session: Session, now: datetime) -> None:
        """Apply every offer change since the last refresh (all offers the first time; see ``ChangeFeed``)."""
        with self._lock:
            look = self._feed.look(session)
            stmt = _OFFER_ROWS
            changed: dict[int, Any] = {}
            masks: dict[int, int] = {}
            for chunk in look.statements(stmt, Offer.id):
                for r in session.execute(chunk):
                    changed[r.id] = r
                    if r.category is not None:
                        masks[r.id] = masks.get(r.id, 0) | (1 << CATEGORY_INDEX[Category(r.category)])
            if changed:
                self._apply(changed, masks, now)
            # Asked for and not there: its insert was undone (``ChangeFeed``). Offers are never deleted.
            asked = self._row_of.keys() if look.ids is None else look.ids
            gone = [self._row_of[i] for i in asked if i not in changed and i in self._row_of]
            if gone:
                self._drop(gone)
            if now.timestamp() >= self._next_turn:
                self._retime(now)
            self._feed.done(look)
            self._forget_busy()

    def note_busy(self, helpers: Collection[int] = (), awaiting: Mapping[int, int] | None = None) -> None:
        """Helpers just found at their cap of open tasks, and the offers among ``awaiting`` (offer id →
        units awaiting an answer) that have no unit left besides: for ``BUSY_MEMORY_S`` this worker's
        lookups (``nearest``, ``helpers_near``) pass over them without reading their facts again.

        Saves the reads and the widening that every lookup near them would repeat while they stay
        busy (at a disaster's centre, most helpers). A helper or offer freed meanwhile (a decline, a
        time-out) is not asked by this worker's lookups until the memory lapses: at most that much
        later than without it; other workers and the batch run still find it.
        """
        if not helpers and not awaiting:
            return
        at = self._busy_clock()
        with self._lock:
            for helper_id in helpers:
                self._busy[helper_id] = at
            for offer_id, units in (awaiting or {}).items():
                row = self._row_of.get(offer_id)
                if row is not None and units > 0 and self._left[row] <= units:
                    self._full[offer_id] = at
            self._busy_rows = None
            self._kept = {}  # kept searches passed over those busy then, not these

    def _forget_busy(self) -> None:
        """Drop what was noted busy longer than ``BUSY_MEMORY_S`` ago (call under the lock)."""
        at = self._busy_clock()
        for memory in (self._busy, self._full):
            lapsed = [key for key, noted in memory.items() if at - noted > BUSY_MEMORY_S]
            for key in lapsed:
                del memory[key]
            if lapsed:
                self._busy_rows = None
                self._kept = {}  # kept searches passed over them

    def _apply(self, changed: dict[int, Any], masks: dict[int, int], now: datetime) -> None:
        self._offers = None
        self._kept = {}
        self._busy_rows = None
        out_rows: list[int] = []
        touched: list[int] = []
        for o in changed.values():
            row = self._row_of.get(o.id)
            if row is None:
                if self._n == len(self._lat):
                    self._grow()
                row = self._n
                self._n += 1
                self._row_of[o.id] = row
                self._offer_id[row] = o.id
            self._helper_id[row] = o.helper_id  # (SQLite may give an undone insert's id to another offer)
            if self._in_index[row]:
                out_rows.append(row)
                self._in_index[row] = False
            self._lat[row], self._lon[row] = o.lat, o.lon
            self._mask[row] = masks.get(o.id, 0)
            self._radius[row] = o.radius_km
            self._capacity[row] = o.capacity
            self._left[row] = o.capacity - o.capacity_used
            self._from[row] = -np.inf if o.available_from is None else o.available_from.timestamp()
            self._until[row] = np.inf if o.available_until is None else o.available_until.timestamp()
            self._eligible[row] = o.status is OfferStatus.active and self._mask[row] != 0
            touched.append(row)
            self._feed.applied(o.id, o.stamp, o.updated_at)
        if out_rows:
            self._index.remove(out_rows)
        rows = np.array(touched, dtype=np.int64)
        usable, turn = self._window(rows, now.timestamp())
        self._next_turn = min(self._next_turn, turn)
        rows = rows[usable]
        if rows.size:
            self._in_index[rows] = True
            self._index.insert(rows, self._lat[rows], self._lon[rows], self._mask[rows])

    def _drop(self, rows: list[int]) -> None:
        """Rows whose offer is not in the database: out of the index, never usable."""
        self._offers = None
        self._kept = {}
        self._busy_rows = None
        out = [r for r in rows if self._in_index[r]]
        if out:
            self._index.remove(out)
        self._in_index[rows] = False
        self._eligible[rows] = False
        self._left[rows] = 0

    def _window(self, rows: np.ndarray, t: float) -> tuple[np.ndarray, float]:
        """Which of ``rows`` are usable at ``t`` (eligible, window open), and the earliest moment
        after ``t`` at which one of them turns (inf: none)."""
        eligible, start, end = self._eligible[rows], self._from[rows], self._until[rows]
        usable = eligible & (start <= t) & (t < end)
        ahead = np.concatenate([start[eligible & (start > t)], end[usable]])
        return usable, float(ahead.min()) if ahead.size else np.inf

    def _retime(self, now: datetime) -> None:
        """Put in the offers whose window has opened and take out those whose window has closed."""
        n = self._n
        usable, self._next_turn = self._window(np.arange(n), now.timestamp())
        gone = np.flatnonzero(self._in_index[:n] & ~usable)
        came = np.flatnonzero(usable & ~self._in_index[:n])
        if gone.size:
            self._index.remove(gone.tolist())
            self._in_index[gone] = False
        if came.size:
            self._index.insert(came, self._lat[came], self._lon[came], self._mask[came])
            self._in_index[came] = True
        if gone.size or came.size:
            self._offers = None
            self._kept = {}

    def _columns(
        self, pending: dict[int, int], blocked_helpers: Collection[int] = (), *, pass_busy: bool = False
    ) -> tuple[matching.Offers, np.ndarray]:
        """The offers as matching columns (cached until the next change) and units free per row.

        Offers of ``blocked_helpers`` count as full, so lookups pass them over; with ``pass_busy``
        so do those of the helpers noted busy (``note_busy``).
        """
        n = self._n
        if self._offers is None:
            self._offers = matching.Offers(
                self._lat[:n], self._lon[:n], self._mask[:n], self._capacity[:n], self._radius[:n], self._in_index[:n]
            )
        left = self._left[:n].copy()
        if pending:
            rows = np.fromiter((self._row_of.get(i, -1) for i in pending), dtype=np.int64, count=len(pending))
            units = np.fromiter(pending.values(), dtype=np.int64, count=len(pending))
            left[rows[rows >= 0]] -= units[rows >= 0]  # one entry per offer: no row twice
        if blocked_helpers:
            left[np.isin(self._helper_id[:n], np.fromiter(blocked_helpers, dtype=np.int64))] = 0
        if pass_busy and (self._busy or self._full):
            if self._busy_rows is None:
                self._busy_rows = np.isin(self._helper_id[:n], np.fromiter(self._busy, dtype=np.int64)) | np.isin(
                    self._offer_id[:n], np.fromiter(self._full, dtype=np.int64)
                )
            left[self._busy_rows] = 0
        return self._offers, left

    def _copy(
        self, pending: dict[int, int], blocked_helpers: Collection[int] = ()
    ) -> tuple[matching.Offers, np.ndarray]:
        columns, left = self._columns(pending, blocked_helpers)
        offers = matching.Offers(
            columns.lat.copy(),
            columns.lon.copy(),
            columns.category_mask.copy(),
            columns.capacity.copy(),
            columns.radius_km.copy(),
            columns.is_available.copy(),
        )
        return offers, left

    def helpers_of(self, offer_ids: np.ndarray) -> np.ndarray:
        """The helper of each offer (shape (n,)); -1 for an offer not seen yet (an offer's helper
        never changes)."""
        with self._lock:
            n = self._n
            if n == 0:
                return np.full(len(offer_ids), -1, dtype=np.int64)
            order = np.argsort(self._offer_id[:n])
            known = self._offer_id[order]
            pos = np.minimum(np.searchsorted(known, offer_ids), n - 1)
            return np.where(known[pos] == offer_ids, self._helper_id[order[pos]], -1)

    def snapshot(
        self, pending: dict[int, int], blocked_helpers: Collection[int] = ()
    ) -> tuple[matching.Offers, np.ndarray]:
        """A copy of the offers' columns and the units each has free (shape (m,)), as ``reachable``
        sees them: rows keep their positions from one snapshot to the next (new offers are added
        at the end), so snapshots compare row by row."""
        with self._lock:
            return self._copy(pending, blocked_helpers)

    def snapshot_with_helpers(
        self, pending: dict[int, int], blocked_helpers: Collection[int] = ()
    ) -> tuple[matching.Offers, np.ndarray, np.ndarray]:
        """``snapshot`` and the helper of each of its rows (shape (m,)), taken together."""
        with self._lock:
            offers, left = self._copy(pending, blocked_helpers)
            return offers, left, self._helper_id[: len(left)].copy()

    def nearest_km(self, lat: np.ndarray, lon: np.ndarray, category: np.ndarray) -> np.ndarray:
        """Km from each point (shape (n,)) to the nearest usable offer of its category, however far
        and whatever its radius or room (inf: none)."""
        with self._lock:
            if len(lat) == 0 or len(self._index) == 0:
                return np.full(len(lat), np.inf)
            return self._index.knn(lat, lon, category, 1)[1][:, 0]

    def nearest(
        self,
        *,
        lat: float,
        lon: float,
        category: Category,
        k: int,
        max_km: float,
        pending: Callable[[list[int]], dict[int, int]],
        blocked: Callable[[list[int]], set[int]] = lambda helpers: set(),
    ) -> list[Candidate]:
        """Up to k nearest capable offers with room, nearest first.

        ``blocked(helper_ids)`` gives the helpers to pass over and ``pending(offer_ids)`` the
        units awaiting an answer for those offers, asked in that order (so one read by helper can
        serve both); both are asked only about the nearest candidates (widening while too few
        remain), so a lookup costs the same however many matches and helpers the database holds.
        They are asked outside the index's lock, so lookups of one worker do not queue behind
        each other's database round trips.
        """
        wanted = _first_width(k)
        while True:
            with self._lock:
                if self._n == 0 or len(self._index) == 0:
                    return []
                # A group intake searched for this point already (``helpers_near``, ``helpers_further``):
                # the same search on the same offers, so the same answer.
                found = self._kept.get((float(lat), float(lon), CATEGORY_INDEX[category], wanted, float(max_km)))
                if found is None:
                    offers, left = self._columns({}, pass_busy=True)
                    rows, d_km = matching.nearest_capable(
                        self._index, offers, left, lat, lon, CATEGORY_INDEX[category], max_km=max_km, k=wanted
                    )
                    found = self._found(rows[0], d_km[0], left)
            out = _usable(found, pending=pending, blocked=blocked)
            if len(out) >= k or len(found) < wanted:
                return out[:k]
            wanted *= _WIDEN

    def _found(self, rows: np.ndarray, d_km: np.ndarray, left: np.ndarray) -> list[tuple[int, int, float, int]]:
        """(offer id, helper id, km, units free) of the rows a search found (shape (k,), -1 padded)."""
        hit = rows >= 0
        rows = rows[hit]
        return list(
            zip(
                self._offer_id[rows].tolist(),
                self._helper_id[rows].tolist(),
                d_km[hit].tolist(),
                left[rows].tolist(),
                strict=True,
            )
        )

    def helpers_near(
        self, *, lat: np.ndarray, lon: np.ndarray, category: np.ndarray, k: np.ndarray, max_km: np.ndarray
    ) -> set[int]:
        """The helpers a ``nearest`` lookup for each point (shape (n,) each; ``category`` as
        ``CATEGORY_INDEX``) asks ``blocked`` about first, before it passes anyone over: one read
        of their facts serves many lookups. One search for the points whose lookups want as many;
        each point's answer is kept as that lookup's first round (until the offers change), so it is
        not searched again."""
        with self._lock:
            self._kept = {}
            if self._n == 0 or len(self._index) == 0 or len(lat) == 0:
                return set()
            wanted = np.array([_first_width(int(x)) for x in k], dtype=np.int64)
            return self._search_rounds(lat, lon, category, wanted, max_km)

    def helpers_further(
        self,
        *,
        lat: np.ndarray,
        lon: np.ndarray,
        category: np.ndarray,
        k: np.ndarray,
        max_km: np.ndarray,
        pending: Callable[[list[int]], dict[int, int]],
        blocked: Callable[[list[int]], set[int]],
        then: Sequence[Sequence[tuple[int, float]]] = (),
    ) -> set[int]:
        """For the points (as for ``helpers_near``, which searched them first) whose ``nearest``
        lookup would widen, as ``pending`` and ``blocked`` answer now (too few of its first round's
        offers free): the helpers of that lookup's second round, its search kept like the first.
        ``then[j]`` (optional): the lookups, (k, max_km) each, that follow point j's when it finds
        nobody free (a critical need's later escalation waves, then its nearest helpers); where its
        first round leaves nobody free, their first rounds are searched and kept too.

        Where most helpers near the points are busy, most lookups of a group widen (and critical
        needs go from wave to wave); this searches those rounds together, so one read of the helpers'
        facts serves them (each lookup would read its own). Answers stay the same: the kept searches
        are those the lookups make."""
        with self._lock:
            keys = [
                (float(lat[j]), float(lon[j]), int(category[j]), _first_width(int(k[j])), float(max_km[j]))
                for j in range(len(lat))
            ]
            firsts = [self._kept.get(key) for key in keys]
        # As ``nearest`` judges its round (outside the lock: ``pending`` and ``blocked`` may read the
        # database); a round with fewer offers in reach than it asked for is the last.
        wanted: dict[tuple[float, float, int, int, float], None] = {}
        for j, (key, found) in enumerate(zip(keys, firsts, strict=True)):
            if found is None:
                continue
            free = len(_usable(found, pending=pending, blocked=blocked))
            if len(found) == key[3] and free < int(k[j]):
                wanted[(*key[:3], key[3] * _WIDEN, key[4])] = None
            if free == 0 and j < len(then):
                for later_k, later_km in then[j]:
                    wanted[(*key[:3], _first_width(later_k), float(later_km))] = None
        with self._lock:
            if self._n == 0 or len(self._index) == 0:
                return set()
            todo = [key for key in wanted if key not in self._kept]
            if not todo:
                return set()
            columns = list(zip(*todo, strict=True))
            return self._search_rounds(
                np.array(columns[0], dtype=np.float64),
                np.array(columns[1], dtype=np.float64),
                np.array(columns[2], dtype=np.int64),
                np.array(columns[3], dtype=np.int64),
                np.array(columns[4], dtype=np.float64),
            )

    def _search_rounds(
        self, lat: np.ndarray, lon: np.ndarray, category: np.ndarray, wanted: np.ndarray, max_km: np.ndarray
    ) -> set[int]:
        """Search each point for its ``wanted`` nearest capable offers, keep what each found as
        its lookup's round (``_kept``) and return their helpers. Call under the lock."""
        offers, left = self._columns({}, pass_busy=True)
        helpers: set[int] = set()
        # One search for the points that want as many (most want the fewest: a search as wide as
        # the widest would cost the rest a wider one).
        for want in np.unique(wanted).tolist():
            at = np.flatnonzero(wanted == want)
            rows, d_km = matching.nearest_capable(
                self._index, offers, left, lat[at], lon[at], category[at], max_km=max_km[at], k=want
            )
            for i, j in enumerate(at.tolist()):
                key = (float(lat[j]), float(lon[j]), int(category[j]), want, float(max_km[j]))
                self._kept[key] = self._found(rows[i], d_km[i], left)
            helpers.update(self._helper_id[rows[rows >= 0]].tolist())
        return helpers

    def reachable(
        self,
        *,
        lat: np.ndarray,
        lon: np.ndarray,
        category: np.ndarray,
        max_km: np.ndarray,
        pending: dict[int, int],
        blocked_helpers: Collection[int] = (),
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per need (shape (n,)): km to the nearest usable helper of its category (inf: none),
        whether one has the need within its radius (and the need's limit), and whether one of
        those has room left (beyond ``pending`` units, not among ``blocked_helpers``).

        Exact: every helper of the category is considered, however far and whatever the radius
        (``matching.in_reach``).
        """
        with self._lock:
            n = len(lat)
            if self._n == 0 or len(self._index) == 0 or n == 0:
                return np.full(n, np.inf), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
            # A copy of the columns (refresh changes them in place), so the search runs unlocked.
            offers, left = self._copy(pending, blocked_helpers)
            category = np.broadcast_to(np.asarray(category, dtype=np.int64), (n,))
            max_km = np.broadcast_to(np.asarray(max_km, dtype=np.float64), (n,))
            _, nearest_km = self._index.knn(lat, lon, category, 1)
        # Each need is looked up on its own, so each step asks only about the needs the step
        # before left open: reach only where a helper of the category exists, room only in reach.
        in_range = np.zeros(n, dtype=bool)
        with_room = np.zeros(n, dtype=bool)
        ask = np.flatnonzero(np.isfinite(nearest_km[:, 0]))
        if len(ask):
            everyone = np.ones(len(left), dtype=np.int64)
            in_range[ask] = matching.in_reach(offers, everyone, lat[ask], lon[ask], category[ask], max_km=max_km[ask])
        ask = np.flatnonzero(in_range)
        if len(ask):
            with_room[ask] = matching.in_reach(offers, left, lat[ask], lon[ask], category[ask], max_km=max_km[ask])
        return nearest_km[:, 0], in_range, with_room
