"""Group commit of ``POST /api/needs``: the posts that arrive together in one worker share one
transaction.

A post is validated, rate-limited and located (its address geocoded) in its own request, then
handed to the worker's ``IntakeGroups``. One thread takes what has queued (at most
``intake_group_max``) and runs ``intake_group``: one read of the posting phones' open needs, one
read for the new codes, one refresh of the live index, then the posts in arrival order exactly as
the sequential path (``intake_one``) handles them — repeat check (an earlier post of the group
counts), open-needs limit, lookup and escalation — with the lookups sharing the candidates'
facts and counting the group's own requests; then one insert each for the needs, the matches,
the audit rows and the SMS, and one commit. Each request gets its own answer or its own error.

If the group's transaction fails, nothing of it was written: its posts are retried one by one
through ``intake_one`` (each its own transaction), so a bad post gets its own error and the
others are still stored. If only its COMMIT failed, the outcome may be unknown (the connection
lost on the way back): the group's new codes are looked up first, and if they are stored the
posts get the group's answers instead of being written twice.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.audit import service as audit
from aidmatch.categories import CATEGORY_INDEX
from aidmatch.config import Settings
from aidmatch.database import insert_rows, utcnow, write_lock
from aidmatch.enums import Source
from aidmatch.matches import proposals
from aidmatch.matches.live import LiveOfferIndex, Points
from aidmatch.messages import notices
from aidmatch.messages import service as messages_service
from aidmatch.needs import service
from aidmatch.needs.models import Need
from aidmatch.needs.schemas import NeedCreated, NeedIn
from geo.geocoding import GeocodeResult

log = logging.getLogger(__name__)

_ANSWER_FIELDS = tuple(f for f in NeedCreated.model_fields if f not in ("id", "helpers_in_range", "merged"))


@dataclass(slots=True)
class Outcome:
    """One post's answer: the need (``merged``: an open need it repeats was bumped) or an error."""

    need: NeedCreated | None = None
    merged: bool = False
    error: BaseException | None = None


class _Located:
    """A geocoder for posts already located in their request: never asked."""

    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult:
        raise AssertionError(f"a post reached the intake without coordinates ({query!r})")


def _answer(need: Need, found: int, merged: bool) -> NeedCreated:
    out = NeedCreated.model_validate(need)
    out.helpers_in_range = found
    out.merged = merged
    return out


def intake_one(*, session: Session, need_in: NeedIn, settings: Settings, live: LiveOfferIndex) -> Outcome:
    """The sequential path: one located post in its own transaction (committed here)."""
    need, merged = service.create_or_merge(
        session=session, need_in=need_in, settings=settings, geocoder=_Located(), source=Source.api
    )
    if merged:
        found = proposals.propose_still_needed(session=session, need=need, live=live, now=utcnow())
    else:
        found = proposals.propose_for_need(session=session, need=need, live=live, settings=settings, now=utcnow())
        notices.need_received_sms(session=session, need=need)
    session.commit()
    return Outcome(_answer(need, found, merged), merged)


@dataclass(slots=True)
class _Asked:
    """Requests a lookup chose, written with the group."""

    need: Need
    asks: Sequence[proposals.Ask]
    contacts: Mapping[int, proposals.HelperContact]
    now: datetime
    reason: str
    wave: int | None


def _stored_repeats(
    items: Sequence[NeedIn], open_by_phone: Mapping[str, Sequence[service.OpenNeed]], now: datetime
) -> set[int]:
    """Ids of the stored open needs that some of ``items`` repeat."""
    out = set()
    for item in items:
        if item.contact_phone is None or item.lat is None or item.lon is None:
            continue
        found = service.find_duplicate(
            open_needs=open_by_phone[item.contact_phone], category=item.category, lat=item.lat, lon=item.lon, now=now
        )
        if found is not None:
            out.add(found.id)
    return out


def intake_group(
    *, session: Session, items: Sequence[NeedIn], settings: Settings, live: LiveOfferIndex
) -> list[Outcome]:
    """Located posts, in arrival order, in the caller's transaction (flushed, not committed): the
    same needs, matches, SMS, audit rows and answers as ``intake_one`` for each in turn."""
    now = utcnow()
    source = Source.api
    phones = sorted({i.contact_phone for i in items if i.contact_phone is not None})
    service.lock_phones(session, phones)  # another worker's group or an SMS from one of them waits
    # SQLite: the write lock from here, phones or not, so that what the lookups read of the helpers
    # (open tasks, units awaiting an answer) stays as read until the group's requests are written.
    write_lock(session)
    open_by_phone = service.open_needs_of_phones(session, phones)
    codes = service.new_codes(session, len(items))
    live.refresh(session=session, now=now)
    facts = proposals.CandidateFacts(session)
    _read_ahead(items, facts=facts, live=live, settings=settings)
    # What the sequential path would write, in its order: ("created", need, urgency),
    # _Asked, ("received", need), ("merged", need).
    steps: list[Any] = []

    def collect(
        *,
        session: Session,
        need: Need,
        asks: Sequence[proposals.Ask],
        contacts: Mapping[int, proposals.HelperContact],
        now: datetime,
        reason: str,
        wave: int | None = None,
    ) -> list[proposals.Ask]:
        if asks:
            facts.count(asks)
            steps.append(_Asked(need, list(asks), contacts, now, reason, wave))
            unwritten.setdefault(id(need), []).extend(asks)
        # All will be written: no pair of theirs exists (a need is new, or its lookup passed over
        # the helpers asked before, in the database or earlier in this group).
        return list(asks)

    answers: list[tuple[Need, dict[str, Any], int, bool] | BaseException] = []
    created: list[Need] = []
    # The stored needs the posts repeat, locked in id order before anything else is (as upkeep
    # takes them): a concurrent accept or confirm of one waits for this group.
    bumped = service.lock_many(session, _stored_repeats(items, open_by_phone, now))
    unwritten: dict[int, list[proposals.Ask]] = {}  # id() of a need → its requests made in this group
    keys: set[str] = set()
    for item in items:
        assert item.lat is not None  # located in the request
        assert item.lon is not None
        if item.idempotency is not None:
            if item.idempotency[0] in keys:  # its retry in the same group: answered with the first's need
                answers.append(IntegrityError("Idempotency-Key", None, ValueError("posted earlier in this group")))
                continue
            keys.add(item.idempotency[0])
        mine = open_by_phone[item.contact_phone] if item.contact_phone is not None else []
        # A stored need as it is now, locked: a concurrent accept or confirm waits for this group.
        existing = service.find_repeated(
            session, open_needs=mine, category=item.category, lat=item.lat, lon=item.lon, now=now, locked=bumped
        )
        if existing is not None:
            service.merge_repeat(existing, item, settings=settings, source=source, now=now)
            steps.append(("merged", existing))
            found = proposals.propose_still_needed(
                session=session,
                need=existing,
                live=live,
                now=now,
                refresh=False,
                new=existing.id is None,  # created earlier in this group: nothing of it is written
                facts_for=facts.sharing,
                asker=collect,
                unwritten=unwritten.get(id(existing), ()),
            )
            answers.append((existing, {f: getattr(existing, f) for f in _ANSWER_FIELDS}, found, True))
            continue
        if item.contact_phone is not None:
            refused = service.too_many_open(mine, settings, now)
            if refused is not None:
                answers.append(refused)
                continue
        need = service.build(
            item,
            lat=item.lat,
            lon=item.lon,
            accuracy_m=item.location_accuracy_m,
            code=codes.pop(),
            settings=settings,
            source=source,
            now=now,
        )
        steps.append(("created", need, need.urgency))
        found = proposals.propose_for_need(
            session=session,
            need=need,
            live=live,
            settings=settings,
            now=now,
            refresh=False,
            facts_for=facts.sharing,
            asker=collect,
        )
        steps.append(("received", need))
        created.append(need)
        if item.contact_phone is not None:
            mine.append(need)  # the phone's next post in this group may repeat it
        answers.append((need, {f: getattr(need, f) for f in _ANSWER_FIELDS}, found, False))

    # The helpers this group found at their cap and the offers with every unit asked for: the
    # worker's next lookups pass over them for a moment (``LiveOfferIndex.note_busy``).
    live.note_busy(facts.at_cap(), facts.awaiting())
    insert_needs(session, created)
    session.flush()  # the bumped needs' updates (and on SQLite the new needs' insert)
    asked = [s for s in steps if isinstance(s, _Asked)]
    # Each need's requests in helper order (``match_rows``), as ``proposals.ask`` inserts them.
    rows = [
        row
        for a in asked
        for row in proposals.match_rows(
            need=a.need, asks=a.asks, contacts=a.contacts, now=a.now, reason=a.reason, wave=a.wave
        )
    ]
    ids = iter(proposals.insert_matches(session, rows))
    events: list[tuple[str, str, int, dict[str, Any]]] = []
    messages: list[dict[str, Any]] = []
    for step in steps:
        if isinstance(step, _Asked):
            by_helper = {h: next(ids) for h in sorted(a.helper_id for a in step.asks)}
            match_ids = [by_helper[a.helper_id] for a in step.asks]
            events.extend(("asked", "match", m, {"need": step.need.id, "wave": step.wave}) for m in match_ids)
            messages.extend(
                proposals.request_messages(
                    need=step.need, asks=step.asks, ids=match_ids, contacts=step.contacts, wave=step.wave
                )
            )
        elif step[0] == "created":
            events.append(("created", "need", step[1].id, {"source": source.value, "urgency": step[2].value}))
        elif step[0] == "received":
            message = notices.need_received_message(step[1])
            if message is not None:
                messages.append(message)
        else:
            events.append(("repeat_merged", "need", step[1].id, {"source": source.value}))
    audit.record_each(session, events)
    messages_service.queue_many(session=session, messages=messages, now=now)
    session.flush()
    out = []
    for answer in answers:
        if isinstance(answer, BaseException):
            out.append(Outcome(error=answer))
            continue
        need, fields, found, merged = answer
        body = NeedCreated.model_validate({"id": need.id, **fields, "helpers_in_range": found, "merged": merged})
        out.append(Outcome(body, merged))
    return out


_NEEDS = typing.cast(Table, Need.__table__)
_NEED_COLUMNS = tuple(c.name for c in _NEEDS.columns if c.name != "id")


def insert_needs(session: Session, needs: Sequence[Need]) -> None:
    """Write new needs (built, not added to a session) in arrival order; each gets its id.

    PostgreSQL: through ``insert_rows`` (one short statement per need in psycopg's pipeline; the
    ORM's one multi-row insert has a new text for each group size and more than 50 parameters,
    which psycopg converts anew every time); the needs stay out of the session (nothing reads them
    back through it). Elsewhere: added to the session, written by the caller's flush.
    """
    if not needs:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.add_all(needs)
        return
    rows = [{name: getattr(need, name) for name in _NEED_COLUMNS} for need in needs]
    for need, need_id in zip(needs, insert_rows(session, _NEEDS, rows, returning_ids=True), strict=True):
        need.id = need_id


def _read_ahead(
    items: Sequence[NeedIn], *, facts: proposals.CandidateFacts, live: LiveOfferIndex, settings: Settings
) -> None:
    """One read of the facts of the helpers the group's first lookups will ask about (each lookup
    would read its own); then one of the helpers of the rounds that will follow as things stand:
    the second rounds of the lookups that will widen (most, where the helpers nearby are busy) and,
    for a critical need whose first wave will find nobody free, its later waves and the nearest
    helpers after them; then one of the second rounds of those. Later rounds read what they miss.
    Only saves reads: answers are the same."""
    if len(items) < 2:
        return
    lookups = [
        proposals.intake_lookups(
            category=i.category,
            urgency=i.urgency,
            quantity=i.quantity,
            max_distance_km=i.max_distance_km,
            settings=settings,
        )
        for i in items
    ]

    def points(at: Sequence[tuple[NeedIn, tuple[int, float]]]) -> Points:
        return {
            "lat": np.array([i.lat for i, _ in at], dtype=np.float64),
            "lon": np.array([i.lon for i, _ in at], dtype=np.float64),
            "category": np.array([CATEGORY_INDEX[i.category] for i, _ in at], dtype=np.int64),
            "k": np.array([k for _, (k, _) in at], dtype=np.int64),
            "max_km": np.array([km for _, (_, km) in at], dtype=np.float64),
        }

    firsts = points([(i, found[0]) for i, found in zip(items, lookups, strict=True)])
    helpers = live.helpers_near(**firsts)
    if helpers:
        facts.blocked(sorted(helpers))
    # A first wave that finds nobody (its radius holds no helper) is followed all the same.
    further = live.helpers_further(
        **firsts, pending=facts.pending, blocked=facts.blocked, then=[found[1:] for found in lookups]
    )
    if not further:
        return
    facts.blocked(sorted(further))
    # The later waves' own second rounds (``helpers_further`` judges only the rounds it searched).
    later = [(i, lookup) for i, found in zip(items, lookups, strict=True) for lookup in found[1:]]
    if later:
        beyond = live.helpers_further(**points(later), pending=facts.pending, blocked=facts.blocked)
        if beyond:
            facts.blocked(sorted(beyond))


Runner = Callable[[list[NeedIn]], list[Outcome]]


def make_runner(*, sessions: sessionmaker[Session], settings: Callable[[], Settings], live: LiveOfferIndex) -> Runner:
    """A group in one transaction; if that fails, each post on its own (``intake_one``).

    ``settings``: read for each group (the app's current settings, as the route's dependency read them).
    """

    def one(item: NeedIn, settings: Settings) -> Outcome:
        try:
            with sessions() as session:
                return intake_one(session=session, need_in=item, settings=settings, live=live)
        except Exception as exc:  # the request raises it: the answer the sequential route gave
            return Outcome(error=exc)

    def run(items: list[NeedIn]) -> list[Outcome]:
        now_settings = settings()
        outcomes: list[Outcome] | None = None
        try:
            with sessions() as session:
                outcomes = intake_group(session=session, items=items, settings=now_settings, live=live)
                session.commit()
            return outcomes
        except Exception:
            log.exception("a group of %d posts failed; retrying them one by one", len(items))
        if outcomes is not None and _committed(outcomes):
            # The COMMIT failed with its outcome unknown (the connection lost on the way back), but
            # it did commit: writing the posts again would store them twice.
            log.warning("the group's commit reported a failure but its needs are stored; answering as written")
            return outcomes
        return [one(item, now_settings) for item in items]

    def _committed(outcomes: list[Outcome]) -> bool:
        codes = [o.need.code for o in outcomes if o.need is not None and not o.merged]
        if not codes:  # only refusals and repeats: nothing tells; retried (a repeat bumps again)
            return False
        try:
            with sessions() as session:
                found = session.scalar(select(func.count(Need.id)).where(Need.code.in_(codes)))
        except Exception:
            log.exception("could not tell whether a failed group was stored")
            return False
        return found == len(codes)

    return run


_STOP = object()


class IntakeGroups:
    """One worker's queue of located posts and the thread that writes them in groups.

    ``submit`` (from the event loop) waits for the post's ``Outcome``. The thread takes the first
    post and what has queued behind it, at most ``max_items``, and runs the group; posts that
    arrive while a group is written form the next one, so groups grow with the load. Under load
    (the group before had more than one post) a group also takes the posts that follow, each
    within ``gap_s`` of the one before, for at most ``wait_s`` after its first was taken; a post
    after a lone post is written at once (``gap_s`` 0: never wait).

    Why wait at all: posts come in bursts (a worker's event loop reads, validates and locates the
    requests that reached it together one after the other, a few hundred µs each), and a group's
    cost is mostly per group (its reads, its round trips, its commit); waiting out the burst
    writes it as one group instead of a small first group and the rest behind it. A client that
    posts one at a time gains nothing from a wait, so it gets none. Started on the first post;
    ``close`` stops it.
    """

    def __init__(self, run: Runner, *, max_items: int, wait_s: float, gap_s: float) -> None:
        self._run, self.max_items, self.wait_s, self.gap_s = run, max_items, wait_s, gap_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last = 0  # posts in the group taken last
        self.groups = 0  # groups written, and the posts in them (for tests and metrics)
        self.posts = 0
        self.largest = 0

    async def submit(self, item: NeedIn) -> Outcome:
        future: Future[Outcome] = Future()
        self._start()
        self._queue.put((item, future))
        return await asyncio.wrap_future(future)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="intake-groups", daemon=True)
                    self._thread.start()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout=30)

    def _take(self) -> tuple[list[tuple[NeedIn, Future[Outcome]]], bool]:
        """The next group (blocking for its first post) and whether to stop after it."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        group = [first]
        stop = False
        deadline = time.monotonic() + self.wait_s
        # Only under load (the last group had company): a post after a lone post is written at once.
        gap_s = self.gap_s if self._last > 1 else 0.0
        while len(group) < self.max_items:
            # The next post if it comes within ``gap_s`` (and the group's ``wait_s`` is not over).
            left = min(gap_s, deadline - time.monotonic())
            try:
                entry = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                stop = True
                break
            group.append(entry)
        self._last = len(group)
        return group, stop

    def _loop(self) -> None:
        while True:
            group, stop = self._take()
            if group:
                self._write(group)
            if stop:
                return

    def _write(self, group: list[tuple[NeedIn, Future[Outcome]]]) -> None:
        items = [item for item, _ in group]
        try:
            outcomes = self._run(items)
        except BaseException as exc:  # the runner answers every post; this is a bug, told to each
            outcomes = [Outcome(error=exc)] * len(items)
        self.groups += 1
        self.posts += len(items)
        self.largest = max(self.largest, len(items))
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.set_running_or_notify_cancel():
                future.set_result(outcome)
