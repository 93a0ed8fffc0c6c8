"""Who is asked to take a need: at intake, after a decline or a timeout, and in escalation waves.

Rules shared by every path (the batch run follows them too):

- a helper is asked at most once for one need, whatever became of the earlier request, except
  that a request called off because the need was taken is made again when the need is given back
  (``ask_again``): the helper neither said no nor let it time out;
- a helper whose open tasks (requests waiting for an answer plus accepted tasks) reached their
  ``max_active_tasks`` is not asked;
- a request goes out by SMS through the outbox (status ``notified``) unless the helper withdrew
  SMS consent; then it stays ``proposed`` for the helper's task page.

Services flush; the caller commits once, so matches and their messages land together.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Insert,
    Select,
    Table,
    any_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from aidmatch.audit import service as audit
from aidmatch.categories import Category, label
from aidmatch.config import Settings
from aidmatch.database import UNPREPARED, IdArray, id_array_text, insert_rows, utcnow
from aidmatch.enums import (
    OPEN_NEED_STATUSES,
    Language,
    MatchStatus,
    MessageDirection,
    MessageStatus,
    OfferStatus,
    Urgency,
)
from aidmatch.helpers.models import Helper
from aidmatch.matches.live import Candidate, LiveOfferIndex
from aidmatch.matches.models import Match
from aidmatch.matches.pending import PENDING_MATCH_STATUSES, close_pending
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory
from notifications.templates import task_request, urgent_request
from notifications.waves import pick_wave

OPEN_TASK_STATUSES = (MatchStatus.proposed, MatchStatus.notified, MatchStatus.accepted)
INTAKE_LOOKUP = 3  # nearest helpers looked up for a need that is not critical
_MAX_LOOKUP = 50


def pending_units(session: Session, column: str) -> dict[int, int]:
    """Units in matches waiting for an answer, per need id (``"need"``) or offer id (``"offer"``)."""
    key = Match.need_id if column == "need" else Match.offer_id
    rows = session.execute(
        select(key, func.sum(Match.quantity)).where(Match.status.in_(PENDING_MATCH_STATUSES)).group_by(key)
    )
    return {int(k): int(v) for k, v in rows}


class HelperContact(NamedTuple):
    """How to reach a helper about a request: SMS consent, phone, language."""

    sms_consent: bool
    phone: str
    language: Language


def _facts(helpers: ColumnElement[bool]) -> Select[Any]:
    """Every offer of the helpers matching ``helpers``: units awaiting an answer, open tasks, the
    helper's cap and contact (built once per form: see ``CandidateFacts``)."""
    held = (
        select(func.coalesce(func.sum(Match.quantity), 0))
        .where(Match.offer_id == Offer.id, Match.status.in_(PENDING_MATCH_STATUSES))
        .scalar_subquery()
    )
    tasks = (
        select(func.count(Match.id))
        .where(Match.offer_id == Offer.id, Match.status.in_(OPEN_TASK_STATUSES))
        .scalar_subquery()
    )
    return (
        select(
            Offer.id,
            Offer.helper_id,
            held,
            tasks,
            Helper.max_active_tasks,
            Helper.sms_consent,
            Helper.phone,
            Helper.language,
        )
        .join(Helper, Helper.id == Offer.helper_id)
        .where(helpers)
    )


_MATCHES = typing.cast(Table, Match.__table__)
_PAIR = ["need_id", "helper_id"]
# ``INSERT INTO matches … ON CONFLICT (need_id, helper_id) DO NOTHING`` per dialect: a pair asked
# before stays one row, and a row comes back only for a new pair (its helper names it within a need).
INSERT_NEW_PAIRS: dict[str, Insert] = {
    "postgresql": postgresql.insert(_MATCHES).on_conflict_do_nothing(index_elements=_PAIR),
    "sqlite": sqlite.insert(_MATCHES).on_conflict_do_nothing(index_elements=_PAIR),
}
_INSERT_MATCHES = {name: stmt.returning(Match.id, Match.helper_id) for name, stmt in INSERT_NEW_PAIRS.items()}
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_owner = aliased(Offer)
# Built once: building and keying these statements cost more Python time than running them.
_FACTS_BY_HELPER = _facts(Offer.helper_id.in_(_IDS))
_FACTS_BY_OFFER = _facts(Offer.helper_id.in_(select(_owner.helper_id).where(_owner.id.in_(_IDS))))
# PostgreSQL: the ids as one array parameter. An expanding IN list is rendered into new SQL text
# for every execution (and parsed again by psycopg); ``= ANY(array)`` keeps one text, which both
# cache, and uses the same indexes.
_IDS_ARRAY = bindparam("ids", type_=IdArray())
_FACTS_BY = {
    "helper": {"postgresql": _facts(Offer.helper_id == any_(_IDS_ARRAY))},
    "offer": {"postgresql": _facts(Offer.helper_id.in_(select(_owner.helper_id).where(_owner.id == any_(_IDS_ARRAY))))},
}


def _statuses(statuses: Sequence[MatchStatus]) -> str:
    return ", ".join(f"'{s.value}'" for s in statuses)  # our own enum values: no quoting needed


# PostgreSQL: the same reads as ``_FACTS_BY`` written out, run on the driver's cursor. Through
# SQLAlchemy each read paid more Python (ORM execution, bind and result processing, the query's
# conversion) than PostgreSQL took to answer it; the rows are plain tuples, the language its value.
# One pass over an offer's open rows gives both of its counts (the units awaiting an answer are
# among its open tasks' rows). By helper, the helpers are also found by their own key: with the
# ids only on ``offers``, PostgreSQL read every helper to join them (half of the read's time).
assert set(PENDING_MATCH_STATUSES) <= set(OPEN_TASK_STATUSES)
_FACTS_SQL = f"""SELECT o.id, o.helper_id, coalesce(a.waiting, 0), a.tasks,
 h.max_active_tasks, h.sms_consent, h.phone, h.language
FROM offers o JOIN helpers h ON h.id = o.helper_id
LEFT JOIN LATERAL (SELECT sum(m.quantity) FILTER (WHERE m.status IN ({_statuses(PENDING_MATCH_STATUSES)})) AS waiting,
   count(m.id) AS tasks
 FROM matches m WHERE m.offer_id = o.id AND m.status IN ({_statuses(OPEN_TASK_STATUSES)})) a ON true
WHERE {{}}"""
_FACTS_RAW = {
    "helper": _FACTS_SQL.format("o.helper_id = ANY(%(ids)s::integer[]) AND h.id = ANY(%(ids)s::integer[])"),
    "offer": _FACTS_SQL.format(
        "o.helper_id IN (SELECT w.helper_id FROM offers w WHERE w.id = ANY(%(ids)s::integer[]))"
    ),
}
_LANGUAGE = {language.value: language for language in Language}


class _Contacts(Mapping[int, HelperContact]):
    """Helper id → ``HelperContact``, built when asked for: a read holds every candidate's row,
    a lookup asks a few of them (building a named tuple per row cost more than reading it)."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[Any, str, Any]] = {}  # helper id → (consent, phone, language as read)

    def __getitem__(self, helper_id: int) -> HelperContact:
        consent, phone, language = self.rows[helper_id]
        return HelperContact(bool(consent), phone, _LANGUAGE[language])

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class CandidateFacts:
    """What a lookup must know about the candidates it found, read in one statement per round.

    ``blocked(helper_ids)`` reads every offer of those helpers: its units awaiting an answer and
    its open tasks, with each helper's cap and contact. ``pending`` (for offers of helpers read
    already), ``blocked`` and ``ask`` (the contacts) then answer from those rows, so a lookup
    round costs one round trip instead of three (``LiveOfferIndex.nearest`` asks about the
    helpers first). The rows are read by helper id (``ix_offers_helper_id``) and the per-offer
    sums are correlated lookups, which PostgreSQL answers from ``ix_matches_offer_id_status``
    once ``matches`` has more than a few pages; the join this replaces was planned as a scan of
    every open match, and grew with the table (7.6 ms a call after 3,000 posts).
    """

    def __init__(self, session: Session, also: set[int] | frozenset[int] = frozenset()) -> None:
        self._session, self._also = session, also
        self._units: dict[int, int] = {}  # offer id → units awaiting an answer
        self._open: dict[int, int] = {}  # helper id → open tasks over all its offers
        self._cap: dict[int, int] = {}
        self.contacts = _Contacts()

    def _read(self, stmt: Select[Any], ids: list[int]) -> None:
        """Read the offers of the helpers ``stmt`` finds from ``ids`` (``_FACTS_BY_HELPER``/``_BY_OFFER``)."""
        key = "helper" if stmt is _FACTS_BY_HELPER else "offer"
        rows: Sequence[Any]
        if self._session.get_bind().dialect.name == "postgresql":
            raw: Any = self._session.connection().connection.dbapi_connection  # psycopg's own connection
            cursor = raw.cursor()
            try:
                # Unprepared: a cached generic plan made while ``matches`` was small scans the whole table.
                cursor.execute(_FACTS_RAW[key], {"ids": id_array_text(ids)}, prepare=False)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        else:
            rows = self._session.execute(stmt, {"ids": ids}, execution_options=UNPREPARED).all()
        open_tasks: dict[int, int] = {}
        units, caps, contacts = self._units, self._cap, self.contacts.rows
        for offer_id, helper_id, waiting, n, cap, consent, phone, language in rows:
            units[offer_id] = int(waiting)
            open_tasks[helper_id] = open_tasks.get(helper_id, 0) + int(n)
            caps[helper_id] = int(cap)
            contacts[helper_id] = (consent, phone, language)
        self._open.update(open_tasks)

    def pending(self, offer_ids: list[int]) -> dict[int, int]:
        """Units awaiting an answer per offer (offers with none left out)."""
        ids = sorted(set(offer_ids))
        unread = [i for i in ids if i not in self._units]
        if unread:
            self._read(_FACTS_BY_OFFER, unread)
        return {i: self._units[i] for i in ids if self._units.get(i)}

    def blocked(self, helper_ids: list[int]) -> set[int]:
        """Among some helpers: those at their cap of open tasks, plus ``also``."""
        unread = sorted(set(helper_ids) - self._cap.keys())
        if unread:
            self._read(_FACTS_BY_HELPER, unread)
        return {h for h in helper_ids if h in self._cap and self._open[h] >= self._cap[h]} | set(self._also)

    def at_cap(self) -> set[int]:
        """The helpers read so far that are at their cap of open tasks (requests counted included)."""
        return {h for h, cap in self._cap.items() if self._open.get(h, 0) >= cap}

    def awaiting(self) -> dict[int, int]:
        """Units awaiting an answer per offer read so far (requests counted included)."""
        return dict(self._units)

    def sharing(self, also: set[int] | frozenset[int]) -> CandidateFacts:
        """Facts answering from (and adding to) the rows this one has read, passing over ``also``."""
        other = CandidateFacts(self._session, also)
        other._units, other._open, other._cap, other.contacts = self._units, self._open, self._cap, self.contacts
        return other

    def count(self, asks: Sequence[Ask]) -> None:
        """Requests made but not written yet (a group of needs writes them together at the end):
        later answers hold them as if read from the database. Their helpers were read (found)."""
        for a in asks:
            self._units[a.offer_id] = self._units.get(a.offer_id, 0) + a.quantity
            self._open[a.helper_id] = self._open.get(a.helper_id, 0) + 1


def open_tasks(session: Session) -> dict[int, tuple[int, int]]:
    """Per helper with open tasks: (open tasks, their cap)."""
    rows = session.execute(
        select(Helper.id, func.count(Match.id), Helper.max_active_tasks)
        .join(Offer, Offer.helper_id == Helper.id)
        .join(Match, Match.offer_id == Offer.id)
        .where(Match.status.in_(OPEN_TASK_STATUSES))
        .group_by(Helper.id, Helper.max_active_tasks)
    )
    return {int(h): (int(n), int(cap)) for h, n, cap in rows}


def busy_helpers(session: Session) -> set[int]:
    """Helpers at their cap of open tasks."""
    return {h for h, (n, cap) in open_tasks(session).items() if n >= cap}


def asked_helpers(session: Session, need_id: int) -> set[int]:
    """Helpers already asked for this need, whatever their answer."""
    rows = session.scalars(
        select(Offer.helper_id).join(Match, Match.offer_id == Offer.id).where(Match.need_id == need_id).distinct()
    )
    return set(rows)


def asked_pairs(session: Session) -> np.ndarray:
    """Keys ``need_id << 32 | helper_id`` of every (open need, helper) pair asked before, sorted."""
    rows = session.execute(
        select(Match.need_id, Offer.helper_id)
        .join(Offer, Offer.id == Match.offer_id)
        .join(Need, Need.id == Match.need_id)
        .where(Need.status.in_(OPEN_NEED_STATUSES))
        .distinct()
    ).all()
    return np.unique(np.array([(n << 32) | h for n, h in rows], dtype=np.int64))


@dataclass(frozen=True, slots=True)
class Ask:
    """One request to make: this offer, this many units of the need, at this distance."""

    offer_id: int
    helper_id: int
    km: float
    quantity: int


def ask(
    *,
    session: Session,
    need: Need,
    asks: Sequence[Ask],
    contacts: Mapping[int, HelperContact],
    now: datetime,
    reason: str,
    wave: int | None = None,
) -> list[int]:
    """Create the matches and queue their SMS (one per helper with SMS consent); returns the match ids.

    ``contacts`` has every asked helper (``CandidateFacts.contacts`` of the lookup that found
    them). Three statements however many helpers are asked: the matches, their audit rows, their SMS.
    """
    if not asks:
        return []
    session.flush()  # what the caller recorded first (the need's "created" audit row) keeps its place
    rows = match_rows(need=need, asks=asks, contacts=contacts, now=now, reason=reason, wave=wave)
    # Through the table, not the ORM's bulk insert: the same rows, less Python per call.
    new = {h: m for m, h in session.execute(_INSERT_MATCHES[session.get_bind().dialect.name], rows).tuples()}
    made = [(new.pop(a.helper_id), a) for a in asks if a.helper_id in new]
    ids = [m for m, _ in made]
    audit.record_many(session, "asked", "match", ids, need=need.id, wave=wave)
    messages = request_messages(need=need, asks=[a for _, a in made], ids=ids, contacts=contacts, wave=wave)
    messages_service.queue_many(session=session, messages=messages, now=now)
    return ids


def insert_matches(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert match rows (``match_rows``) of needs made in this transaction in one statement; their
    ids in the rows' order. No such pair can exist yet: a repeat fails the statement."""
    return insert_rows(session, _MATCHES, rows, returning_ids=True)


def match_rows(
    *,
    need: Need,
    asks: Sequence[Ask],
    contacts: Mapping[int, HelperContact],
    now: datetime,
    reason: str,
    wave: int | None = None,
) -> list[dict[str, Any]]:
    """The rows of the matches ``ask`` makes (``need.id`` known), in helper order.

    The batch run inserts (need, helper) in order too: an insert waits for another transaction's
    uncommitted row of the same pair, and two inserts taking overlapping pairs in opposite orders
    would deadlock.
    """
    # Stamped when written, not at ``now`` (a job's start): the workers' change feeds look back only so far.
    written = utcnow()
    rows = []
    for a in asks:
        consent = contacts[a.helper_id].sms_consent
        rows.append(
            {
                "need_id": need.id,
                "offer_id": a.offer_id,
                "helper_id": a.helper_id,
                "quantity": a.quantity,
                "distance_km": a.km,
                "score": a.km,
                "reason": f"{reason}: capable helper {a.km:.1f} km away" + (f", wave {wave}" if wave else ""),
                "status": MatchStatus.notified if consent else MatchStatus.proposed,
                "wave": wave,
                "created_at": now,
                "updated_at": written,
                "notified_at": now if consent else None,
            }
        )
    return sorted(rows, key=lambda r: typing.cast(int, r["helper_id"]))


def request_messages(
    *,
    need: Need,
    asks: Sequence[Ask],
    ids: Sequence[int],
    contacts: Mapping[int, HelperContact],
    wave: int | None = None,
    again: int | None = None,
) -> list[dict[str, Any]]:
    """The SMS ``ask`` queues for its matches ``ids`` (one per helper with SMS consent); ``again``:
    the requests are made again after the task ``again`` was given back (``ask_again``)."""
    template = urgent_request if wave else task_request
    messages = []
    for match_id, a in zip(ids, asks, strict=True):
        helper = contacts[a.helper_id]
        if not helper.sms_consent:
            continue
        language = helper.language.value
        messages.append(
            {
                "phone": helper.phone,
                "body": template(
                    language=language,
                    what=label(need.category, language),
                    quantity=a.quantity,
                    distance_km=a.km,
                    match_id=match_id,
                ),
                "language": language,
                "idempotency_key": messages_service.request_key(match_id, wave=wave, again=again),
                "need_id": need.id,
                "match_id": match_id,
                "helper_id": a.helper_id,
            }
        )
    return messages


class Asker(Protocol):
    """What makes the requests a lookup chose: ``ask`` itself, or a group intake collecting them.

    Returns one item per request made (``ask``: the new matches' ids; a pair asked before is skipped).
    """

    def __call__(
        self,
        *,
        session: Session,
        need: Need,
        asks: Sequence[Ask],
        contacts: Mapping[int, HelperContact],
        now: datetime,
        reason: str,
        wave: int | None = None,
    ) -> Sequence[object]: ...


# The facts a lookup reads, given the helpers to pass over (default: ``CandidateFacts`` of the session).
FactsFor = Callable[[set[int]], CandidateFacts]


def _fill(candidates: Iterable[Candidate], units: int) -> list[Ask]:
    """Nearest first, one request per helper, each for what it can take, until ``units`` are asked for."""
    asks: list[Ask] = []
    seen: set[int] = set()
    for c in candidates:
        if units <= 0:
            break
        if c.helper_id in seen or c.free <= 0:
            continue
        seen.add(c.helper_id)
        take = min(units, c.free)
        asks.append(Ask(c.offer_id, c.helper_id, c.km, take))
        units -= take
    return asks


def units_to_place(session: Session, need: Need) -> int:
    """Units of the need neither accepted nor waiting for an answer."""
    waiting = session.scalar(
        select(func.coalesce(func.sum(Match.quantity), 0)).where(
            Match.need_id == need.id, Match.status.in_(PENDING_MATCH_STATUSES)
        )
    )
    return need.quantity - need.quantity_assigned - int(waiting or 0)


def ask_again(session: Session, need: Need, *, now: datetime, after: int) -> list[int]:
    """Ask again, nearest first, the helpers whose requests for the need were called off while it
    was taken, now that the task ``after`` was given back; returns the ids of the requests made.

    Such a request was cancelled by the need (taken, or its offer paused meanwhile), not answered:
    its helper neither said no nor let it time out, and is still among the nearest. Its row
    (one per need and helper) waits again, for what its helper can take of the units nobody holds
    (a critical need's: all that is missing, as a wave asks), if its offer still serves the need
    (active, available, the category, the distance, room) and its helper is under their cap. Each
    helper with SMS consent gets the request again, keyed by the give-back. The need is locked.
    """
    if need.status not in OPEN_NEED_STATUSES or (need.expires_at is not None and need.expires_at <= now):
        return []
    serves = exists().where(OfferCategory.offer_id == Offer.id, OfferCategory.category == need.category)
    rows = session.execute(
        select(
            Match.id,
            Match.offer_id,
            Offer.helper_id,
            Match.distance_km,
            Match.wave,
            Offer.capacity - Offer.capacity_used,
        )
        .join(Offer, Offer.id == Match.offer_id)
        .where(
            Match.need_id == need.id,
            Match.status == MatchStatus.cancelled,
            Offer.status == OfferStatus.active,
            or_(Offer.available_until.is_(None), Offer.available_until > now),
            Offer.radius_km >= Match.distance_km,
            serves,
        )
        .order_by(Match.distance_km, Match.id)
    ).all()
    if not rows:
        return []
    facts = CandidateFacts(session)
    blocked = facts.blocked([int(r.helper_id) for r in rows])
    waiting = facts.pending([int(r.offer_id) for r in rows])
    critical = need.urgency is Urgency.critical
    units = need.quantity - need.quantity_assigned if critical else units_to_place(session, need)
    asks: list[tuple[int, Ask, int | None]] = []
    for match_id, offer_id, helper_id, km, wave, room in rows:
        free = int(room) - waiting.get(offer_id, 0)
        if units <= 0 or helper_id in blocked or free <= 0:
            continue
        take = min(units, free)
        asks.append((int(match_id), Ask(int(offer_id), int(helper_id), float(km), take), wave))
        if not critical:
            units -= take
    written = utcnow()
    for match_id, a, _ in asks:
        consent = facts.contacts[a.helper_id].sms_consent
        session.execute(
            update(Match)
            .where(Match.id == match_id, Match.status == MatchStatus.cancelled)
            .values(
                status=MatchStatus.notified if consent else MatchStatus.proposed,
                quantity=a.quantity,
                # Asked now, by SMS or on the task page: the response timeout counts from here,
                # and outside the restarted waves (whose end would time it out at once).
                notified_at=now,
                wave=None,
                responded_at=None,
                updated_at=written,
            )
        )
    ids = [m for m, _, _ in asks]
    if not ids:
        return []
    audit.record_many(session, "asked_again", "match", ids, need=need.id, after=f"task {after} given back")
    # A request still in the outbox (called off before its turn came) goes out once, with what is
    # asked now. Locked, not skipped: a drain that claimed it (as withdrawn) commits first, and
    # then it is no longer queued and the request goes out anew.
    unsent = {
        int(match_id or 0): int(message_id)
        for message_id, match_id in session.execute(
            select(Message.id, Message.match_id)
            .where(
                Message.match_id.in_(ids),
                Message.direction == MessageDirection.outbound,
                Message.status == MessageStatus.queued,
                messages_service.request_key_clause(),  # the request itself, not another message about the task
            )
            .order_by(Message.id)
            .with_for_update()
        ).tuples()
    }
    messages = []
    for match_id, a, wave in asks:
        made = request_messages(need=need, asks=[a], ids=[match_id], contacts=facts.contacts, wave=wave, again=after)
        if match_id in unsent:
            if made:
                session.execute(
                    update(Message)
                    .where(Message.id == unsent[match_id], Message.status == MessageStatus.queued)
                    .values(body=made[0]["body"], updated_at=written)
                )
            continue
        messages += made
    messages_service.queue_many(session=session, messages=messages, now=now)
    return ids


def offer_to_next_helpers(
    *,
    session: Session,
    need: Need,
    live: LiveOfferIndex,
    now: datetime,
    reason: str,
    new: bool = False,
    facts_for: FactsFor | None = None,
    asker: Asker = ask,
    unwritten: Sequence[Ask] = (),
) -> int:
    """Ask the nearest capable helpers not yet asked for the need's units nobody holds.

    Returns how many capable helpers with room were found in range (asked or not). The caller
    refreshes ``live`` first (once for many needs). ``new``: the need was created in this
    transaction, so no match refers to it yet (nothing pending, nobody asked: two queries saved).
    ``facts_for`` and ``asker``: how the candidates are read and asked (a group intake shares one
    read and writes the requests of all its needs together); ``unwritten``: this need's requests
    made in this transaction and not written yet, whose units await an answer and whose helpers were asked.
    """
    if need.status not in OPEN_NEED_STATUSES or (need.expires_at is not None and need.expires_at <= now):
        return 0
    units = need.quantity - need.quantity_assigned if new else units_to_place(session, need)
    units -= sum(a.quantity for a in unwritten)
    also = set() if new else asked_helpers(session, need.id)
    also |= {a.helper_id for a in unwritten}
    facts = facts_for(also) if facts_for is not None else CandidateFacts(session, also)
    found = live.nearest(
        lat=need.lat,
        lon=need.lon,
        category=need.category,
        k=min(max(INTAKE_LOOKUP, units), _MAX_LOOKUP),
        max_km=need.max_distance_km if need.max_distance_km is not None else np.inf,
        pending=facts.pending,
        blocked=facts.blocked,
    )
    if units > 0:
        asker(session=session, need=need, asks=_fill(found, units), contacts=facts.contacts, now=now, reason=reason)
    return len({c.helper_id for c in found})


def escalate(
    *,
    session: Session,
    need: Need,
    live: LiveOfferIndex,
    settings: Settings,
    now: datetime,
    new: bool = False,
    facts_for: FactsFor | None = None,
    asker: Asker = ask,
) -> int:
    """The next step of a critical need's escalation; returns how many helpers it asked.

    Starts the next wave that finds anyone (an empty wave is skipped at once) and schedules the
    step after it. Past the last wave, the requests still unanswered time out and the need goes
    back to the pool (the next helpers beyond the waves, then the batch runs). The caller
    refreshes ``live`` first. ``new``: the need was created in this transaction (no matches yet).
    ``facts_for``, ``asker``: as for ``offer_to_next_helpers``.
    """
    if not new:
        # As it is now, locked (PostgreSQL): the row the caller loaded may predate an accept that
        # took the last unit, and a wave asked for it could then never be answered nor time out.
        session.refresh(need, with_for_update={"key_share": True})
    remaining = need.quantity - need.quantity_assigned
    if need.status not in OPEN_NEED_STATUSES or remaining <= 0:
        need.escalation_next_at = None
        if not new:  # nothing left to ask for: requests still waiting would wait for ever
            close_pending(session, Match.need_id == need.id, now=utcnow(), why=f"need {need.status.value}")
        session.flush()
        return 0
    waves = settings.waves_for(need.category.value)
    asked = set() if new else asked_helpers(session, need.id)
    limit_km = need.max_distance_km if need.max_distance_km is not None else np.inf
    while (need.escalation_wave or 0) < len(waves):
        number = (need.escalation_wave or 0) + 1
        wave = waves[number - 1]
        need.escalation_wave = number
        facts = facts_for(asked) if facts_for is not None else CandidateFacts(session, asked)
        found = live.nearest(
            lat=need.lat,
            lon=need.lon,
            category=need.category,
            k=2 * wave.helpers,
            max_km=min(wave.radius_km, limit_km),
            pending=facts.pending,
            blocked=facts.blocked,
        )
        chosen = pick_wave(wave, [(c.helper_id, c.km) for c in found], asked=asked, busy=())
        if chosen:
            # Each helper of a wave is asked for all that is still missing (or what they can
            # take): the first to accept takes it, and accepting takes only what is left.
            by_helper = {c.helper_id: c for c in reversed(found)}
            asks = [
                Ask(c.offer_id, c.helper_id, c.km, min(remaining, c.free)) for c in (by_helper[h] for h, _ in chosen)
            ]
            made = asker(
                session=session,
                need=need,
                asks=asks,
                contacts=facts.contacts,
                now=now,
                reason="escalation",
                wave=number,
            )
            if not made:  # another worker asked them all a moment ago: this wave is empty, as below
                asked |= {h for h, _ in chosen}
                continue
            need.escalation_next_at = now + timedelta(seconds=wave.wait_s)
            session.flush()
            return len(made)
    # Past the last wave: stop waiting for the waves and hand the need to the general pool.
    need.escalation_next_at = None
    if not new:
        ended = (Match.need_id == need.id) & Match.wave.is_not(None) & Match.status.in_(PENDING_MATCH_STATUSES)
        audit.record_many(
            session, "timed_out", "match", session.scalars(select(Match.id).where(ended)), after="last wave"
        )
        session.execute(update(Match).where(ended).values(status=MatchStatus.timed_out, updated_at=utcnow()))
    session.flush()
    return offer_to_next_helpers(
        session=session,
        need=need,
        live=live,
        now=now,
        reason="after escalation",
        new=new,
        facts_for=facts_for,
        asker=asker,
    )


def propose_for_need(
    *,
    session: Session,
    need: Need,
    live: LiveOfferIndex,
    settings: Settings,
    now: datetime,
    refresh: bool = True,
    facts_for: FactsFor | None = None,
    asker: Asker = ask,
) -> int:
    """At intake, for a need created in this transaction: a critical need starts its escalation,
    any other gets its nearest helpers asked.

    Returns how many capable helpers with room were found in range. ``refresh``: bring ``live`` up
    to date first (a group intake does it once for all its needs); ``facts_for``, ``asker``: as for
    ``offer_to_next_helpers``.
    """
    if refresh:
        live.refresh(session=session, now=now)
    if need.urgency is Urgency.critical:
        need.escalation_wave = 0
        return escalate(
            session=session,
            need=need,
            live=live,
            settings=settings,
            now=now,
            new=True,
            facts_for=facts_for,
            asker=asker,
        )
    return offer_to_next_helpers(
        session=session, need=need, live=live, now=now, reason="at intake", new=True, facts_for=facts_for, asker=asker
    )


def propose_still_needed(
    *,
    session: Session,
    need: Need,
    live: LiveOfferIndex,
    now: datetime,
    reason: str = "after a repeat",
    refresh: bool = True,
    new: bool = False,
    facts_for: FactsFor | None = None,
    asker: Asker = ask,
    unwritten: Sequence[Ask] = (),
) -> int:
    """For an open need just said to be "still needed" — bumped by a repeat of it
    (``needs.service.merge_repeat``, perhaps with more units) or confirmed by its author or a
    coordinator (``needs.service.reconfirm``), flushed: its units that nobody holds (neither
    accepted nor awaiting an answer: more units asked for, or requests declined or timed out)
    go to the nearest helpers not asked before, as at intake. A helper is never asked twice, and
    units awaiting an answer are not asked for again. A need in its escalation waves (critical)
    is left to them: each wave asks for everything still missing, and a need just made critical
    starts its waves at the next upkeep pass.

    Returns how many capable helpers with room were found in range (0 while its waves run).
    ``new``, ``facts_for``, ``asker``, ``unwritten``: as for ``offer_to_next_helpers`` (a group intake
    bumps needs it created or bumped itself, whose requests it has not written yet).
    """
    if need.escalation_next_at is not None:
        return 0
    if refresh:
        live.refresh(session=session, now=now)
    return offer_to_next_helpers(
        session=session,
        need=need,
        live=live,
        now=now,
        reason=reason,
        new=new,
        facts_for=facts_for,
        asker=asker,
        unwritten=unwritten,
    )


def intake_lookups(
    *, category: Category, urgency: Urgency, quantity: int, max_distance_km: float | None, settings: Settings
) -> list[tuple[int, float]]:
    """(k, max_km) of the lookups ``propose_for_need`` makes for a new need like this, in order: the
    nearest helpers; for a critical one, each escalation wave's (``escalate`` goes on to the next
    while a wave finds nobody) and, past the last, the nearest helpers. What a group intake reads the
    candidates' facts for in advance."""
    limit_km = max_distance_km if max_distance_km is not None else np.inf
    nearest = (min(max(INTAKE_LOOKUP, quantity), _MAX_LOOKUP), limit_km)
    if urgency is Urgency.critical:
        waves = settings.waves_for(category.value)
        return [*((2 * w.helpers, min(w.radius_km, limit_km)) for w in waves), nearest]
    return [nearest]
