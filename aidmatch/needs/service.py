"""Needs: create, look up, list."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select, String, any_, bindparam, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import utcnow, write_lock
from aidmatch.enums import OPEN_NEED_STATUSES, NeedStatus, Source, Urgency
from aidmatch.errors import ConflictError, InvalidInputError, NotFoundError, TooManyRequestsError
from aidmatch.matches.models import Match
from aidmatch.matches.pending import close_accepted, close_pending, remind_helpers
from aidmatch.needs.models import Need
from aidmatch.needs.schemas import NeedIn
from aidmatch.query import BBox, PageParams, paginate
from geo.errors import GeocodingError
from geo.geocoding import Geocoder
from geo.sphere import haversine_km
from notifications.parser import URGENCY_RANK

# Every symbol has a Cyrillic look-alike (А В С Е Н К М Р Т Х) or is a digit other than 0/1,
# so a code read aloud or typed on a Russian keyboard survives. 18**6 ≈ 34 million codes.
CODE_ALPHABET = "ABCEHKMPTX23456789"
CODE_LENGTH = 6
_CYRILLIC_TO_LATIN = str.maketrans("АВСЕНКМРТХавсенкмртхОо", "ABCEHKMPTXABCEHKMPTX00")


def normalize_code(raw: str) -> str:
    """A public code as typed (any case, Cyrillic look-alikes, spaces) in canonical form."""
    kept = "".join(c for c in raw if c.isprintable() and not c.isspace())  # no NUL reaches the database
    return kept.translate(_CYRILLIC_TO_LATIN).upper()


# The intake's statements are built once: building and keying a statement costs more Python time
# than running it (SQLAlchemy caches the compiled SQL, not the statement objects).
_CODE_TAKEN = select(Need.id).where(Need.code == bindparam("code"))
_OPEN_NEEDS_OF = (
    select(Need.id, Need.category, Need.lat, Need.lon, Need.created_at, Need.expires_at)
    .where(Need.contact_phone == bindparam("phone"), Need.status.in_(OPEN_NEED_STATUSES))
    .order_by(Need.id)
)


def _open_needs_of_phones(phones: ColumnElement[bool]) -> Select[Any]:
    return (
        select(Need.contact_phone, Need.id, Need.category, Need.lat, Need.lon, Need.created_at, Need.expires_at)
        .where(phones, Need.status.in_(OPEN_NEED_STATUSES))
        .order_by(Need.id)
    )


# A group's phones and codes: an expanding IN list on SQLite; on PostgreSQL one array parameter, so
# the SQL text stays the same whatever the group's size (SQLAlchemy and psycopg cache it instead of
# rendering and converting it for each group).
_CODES_TAKEN = {
    "sqlite": select(Need.code).where(Need.code.in_(bindparam("codes", expanding=True))),
    "postgresql": select(Need.code).where(Need.code == any_(bindparam("codes", type_=postgresql.ARRAY(String)))),
}
_OPEN_NEEDS_OF_PHONES = {
    "sqlite": _open_needs_of_phones(Need.contact_phone.in_(bindparam("phones", expanding=True))),
    "postgresql": _open_needs_of_phones(
        Need.contact_phone == any_(bindparam("phones", type_=postgresql.ARRAY(String)))
    ),
}


class OpenNeed(Protocol):
    """What the repeat check reads of a phone's open need."""

    id: int
    category: Category
    lat: float
    lon: float
    created_at: datetime
    expires_at: datetime | None


def new_code(session: Session) -> str:
    for _ in range(20):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if session.scalar(_CODE_TAKEN, {"code": code}) is None:
            return code
    raise RuntimeError("could not find a free need code in 20 tries; the code space is nearly full")


def new_codes(session: Session, n: int) -> list[str]:
    """``n`` distinct codes no need has: one read for all (``new_code`` for many needs at once)."""
    codes: list[str] = []
    for _ in range(20):
        wanted = n - len(codes)
        if wanted <= 0:
            return codes
        drawn = {"".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH)) for _ in range(wanted)}
        drawn -= set(codes)
        stmt = _CODES_TAKEN["postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"]
        # Through the connection: the ORM's execution adds Python time and nothing to plain columns.
        taken = set(session.connection().execute(stmt, {"codes": sorted(drawn)}).scalars()) if drawn else set()
        codes.extend(sorted(drawn - taken)[:wanted])
    if len(codes) < n:
        raise RuntimeError("could not find free need codes in 20 tries; the code space is nearly full")
    return codes


@dataclass(frozen=True, slots=True)
class NeedFilters:
    status: Sequence[NeedStatus] = ()
    category: Sequence[Category] = ()
    urgency: Sequence[Urgency] = ()
    bbox: BBox | None = None


def _locate(need_in: NeedIn, geocoder: Geocoder) -> tuple[float, float, float | None]:
    """The need's coordinates and their accuracy in metres, from lat/lon or the address."""
    if need_in.lat is not None and need_in.lon is not None:
        return need_in.lat, need_in.lon, need_in.location_accuracy_m
    assert need_in.address is not None  # the schema guarantees one or the other
    try:
        place = geocoder.geocode(need_in.address)
    except GeocodingError as exc:
        raise InvalidInputError(f"{exc}; give lat and lon instead", field="address") from exc
    accuracy = need_in.location_accuracy_m if need_in.location_accuracy_m is not None else 5000.0  # a settlement
    return place.lat_deg, place.lon_deg, accuracy


def build(
    need_in: NeedIn,
    *,
    lat: float,
    lon: float,
    accuracy_m: float | None,
    code: str,
    settings: Settings,
    source: Source,
    now: datetime | None = None,
) -> Need:
    """The new open need (not added to a session), at a place already located."""
    now = now or utcnow()
    key, body = need_in.idempotency or (None, None)
    return Need(
        code=code,
        category=need_in.category,
        quantity=need_in.quantity,
        quantity_assigned=0,
        urgency=need_in.urgency,
        lat=lat,
        lon=lon,
        address=need_in.address,
        location_accuracy_m=accuracy_m,
        max_distance_km=need_in.max_distance_km,
        description=need_in.description,
        contact_name=need_in.contact_name,
        contact_phone=need_in.contact_phone,
        language=need_in.language,
        source=source,
        status=NeedStatus.open,
        created_at=now,
        updated_at=now,
        needed_by=need_in.needed_by,
        expires_at=now + timedelta(hours=settings.need_expiry_hours),
        idempotency_key=key,
        idempotency_body=body,
    )


def too_many_open(
    open_needs: Sequence[OpenNeed], settings: Settings, now: datetime | None = None
) -> TooManyRequestsError | None:
    """The refusal for a phone with these open needs already (None: under the limit).

    Its Retry-After is the time until the first of them expires (the limit lifts then at the
    latest; closing one with DONE lifts it at once).
    """
    if len(open_needs) < settings.max_open_needs_per_phone:
        return None
    now = now or utcnow()
    expiries = [n.expires_at for n in open_needs if n.expires_at is not None]
    retry_after_s = max(1.0, (min(expiries) - now).total_seconds()) if expiries else None
    return TooManyRequestsError(
        f"this phone already has {len(open_needs)} open needs; close one (DONE <code>) or call a coordinator",
        retry_after_s=retry_after_s,
    )


def locate(need_in: NeedIn, geocoder: Geocoder) -> NeedIn:
    """The post with its coordinates filled in (geocoded from its address when it has none), as
    ``create_or_merge`` stores it; the post itself when it came with coordinates."""
    if need_in.lat is not None and need_in.lon is not None:
        return need_in
    lat, lon, accuracy_m = _locate(need_in, geocoder)
    return need_in.model_copy(update={"lat": lat, "lon": lon, "location_accuracy_m": accuracy_m})


def create(
    *,
    session: Session,
    need_in: NeedIn,
    settings: Settings,
    geocoder: Geocoder,
    source: Source = Source.api,
    open_needs: Sequence[OpenNeed] | None = None,
) -> Need:
    """Store a new open need, geocoding its address when it came without coordinates.

    A phone with ``max_open_needs_per_phone`` open needs already is refused (429).
    ``open_needs``: the phone's open needs (``open_needs_of``), when the caller has read them already.
    """
    if need_in.contact_phone is not None:
        if open_needs is None:
            open_needs = open_needs_of(session, need_in.contact_phone)
        refused = too_many_open(open_needs, settings)
        if refused is not None:
            raise refused
    lat, lon, accuracy_m = _locate(need_in, geocoder)
    need = build(
        need_in, lat=lat, lon=lon, accuracy_m=accuracy_m, code=new_code(session), settings=settings, source=source
    )
    session.add(need)
    session.flush()
    audit.record(session, "created", "need", need.id, source=source.value, urgency=need.urgency.value)
    return need


DUPLICATE_RADIUS_KM = 0.5
DUPLICATE_WINDOW = timedelta(hours=24)


# The advisory-lock class of "a phone's intake" (the two-key form: apart from the scheduler's keys).
_PHONE_LOCK_CLASS = 0x504E
_LOCK_PHONES = text(
    "SELECT count(pg_advisory_xact_lock(:cls, k)) FROM "
    "(SELECT DISTINCT hashtext(p) AS k FROM unnest(CAST(:phones AS text[])) AS p ORDER BY k) AS keys"
)


def lock_phones(session: Session, phones: Sequence[str]) -> None:
    """Hold these phones' intake until the transaction ends: two messages or posts from one phone
    at the same moment would otherwise both miss the other's need (two needs, not one merged) or
    both start its SMS conversation. PostgreSQL: transaction advisory locks, taken in key order.
    SQLite: the write lock."""
    if not phones:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK_PHONES, {"cls": _PHONE_LOCK_CLASS, "phones": sorted(set(phones))})
    else:
        write_lock(session)


def open_needs_of(session: Session, phone: str | None) -> list[OpenNeed]:
    """The phone's open needs (the columns the repeat check reads), oldest first (none without a phone).

    Plain rows, not ORM objects: a new phone has none, and loading entities costs more Python than
    the query; the one a repeat merges into is loaded by ``create_or_merge``.
    """
    if phone is None:
        return []
    return list(session.execute(_OPEN_NEEDS_OF, {"phone": phone}).all())


def open_needs_of_phones(session: Session, phones: Sequence[str]) -> dict[str, list[OpenNeed]]:
    """``open_needs_of`` for many phones in one read: each phone's open needs, oldest first."""
    out: dict[str, list[OpenNeed]] = {p: [] for p in phones}
    if phones:
        stmt = _OPEN_NEEDS_OF_PHONES["postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"]
        for row in session.connection().execute(stmt, {"phones": sorted(out)}):
            out[row.contact_phone].append(row)
    return out


def find_duplicate(
    *, open_needs: Sequence[OpenNeed], category: Category, lat: float, lon: float, now: datetime
) -> OpenNeed | None:
    """Among a phone's open needs (oldest first): the first of the same category, posted within
    24 h and 500 m of this place."""
    for need in open_needs:
        if (
            need.category == category
            and need.created_at >= now - DUPLICATE_WINDOW
            and float(haversine_km(lat, lon, need.lat, need.lon)) <= DUPLICATE_RADIUS_KM
        ):
            return need
    return None


def find_repeated(
    session: Session,
    *,
    open_needs: list[OpenNeed],
    category: Category,
    lat: float,
    lon: float,
    now: datetime,
    locked: dict[int, Need] | None = None,
) -> Need | None:
    """``find_duplicate`` as the need is now: a stored one is read afresh and row-locked (a
    concurrent accept or confirm waits), and one that helpers took or that closed since
    ``open_needs`` was read is dropped from it and the search goes on. ``locked``: the needs this
    transaction has locked (and maybe bumped) already, by id; they are not read again."""
    locked = {} if locked is None else locked
    while True:
        found = find_duplicate(open_needs=open_needs, category=category, lat=lat, lon=lon, now=now)
        if found is None or isinstance(found, Need):  # a Need: made earlier in the same group, not stored
            return found
        need = locked.get(found.id) or get_locked(session, found.id)
        if need.status in OPEN_NEED_STATUSES:
            locked[need.id] = need
            return need
        open_needs.remove(found)


def create_or_merge(
    *, session: Session, need_in: NeedIn, settings: Settings, geocoder: Geocoder, source: Source = Source.api
) -> tuple[Need, bool]:
    """A new need, or the open need it repeats (same phone and category, within 500 m and 24 h).

    A repeat is not a second need: the existing one is bumped ("still needed", expiry renewed), its
    urgency raised if the repeat is more urgent, and the repeat's text appended so that every
    source message is kept. Returns the need and whether it was merged into an existing one.
    """
    now = utcnow()
    lat, lon, accuracy_m = _locate(need_in, geocoder)
    if need_in.contact_phone is not None:
        lock_phones(session, [need_in.contact_phone])
    # One read serves both the repeat check and the open-needs limit.
    open_needs = open_needs_of(session, need_in.contact_phone)
    existing = find_repeated(session, open_needs=open_needs, category=need_in.category, lat=lat, lon=lon, now=now)
    if existing is None:
        located = need_in.model_copy(update={"lat": lat, "lon": lon, "location_accuracy_m": accuracy_m})
        need = create(
            session=session,
            need_in=located,
            settings=settings,
            geocoder=geocoder,
            source=source,
            open_needs=open_needs,
        )
        return need, False
    merge_repeat(existing, need_in, settings=settings, source=source, now=now)
    session.flush()
    audit.record(session, "repeat_merged", "need", existing.id, source=source.value)
    return existing, True


def merge_repeat(existing: Need, need_in: NeedIn, *, settings: Settings, source: Source, now: datetime) -> None:
    """Bump ``existing`` with its repeat ``need_in``: "still needed", urgency raised, text appended."""
    note = f"[{now:%Y-%m-%d %H:%M} UTC, {source.value}] {need_in.description or ''}".strip()
    text = "\n".join(p for p in (existing.description, note) if p)
    existing.description = text[-settings.max_description_chars :]
    if URGENCY_RANK[need_in.urgency] > URGENCY_RANK[existing.urgency]:  # StrEnum: keyed by value
        existing.urgency = need_in.urgency
        if existing.urgency is Urgency.critical and existing.escalation_wave is None:
            # Now critical: its escalation waves start at the next upkeep pass, as if posted so.
            existing.escalation_wave = 0
            existing.escalation_next_at = now
    existing.quantity = max(existing.quantity, need_in.quantity, existing.quantity_assigned)
    existing.expires_at = now + timedelta(hours=settings.need_expiry_hours)
    if need_in.idempotency is not None and existing.idempotency_key is None:
        # The repeat's retry is answered with this need instead of being merged again.
        existing.idempotency_key, existing.idempotency_body = need_in.idempotency
    existing.reconfirm_requested_at = None
    existing.updated_at = now


def mark_duplicate(*, session: Session, need: Need, of: Need, settings: Settings | None = None) -> Need:
    """A coordinator's call: ``need`` repeats ``of``. It closes as a duplicate; its open requests go.

    Both rows are locked first, in id order, and judged as they are then (two coordinators merging
    A into B and B into A at once: the second is refused). ``of`` must still stand (open, partly or
    wholly taken, unexpired) and be of the same category. The request now stands in ``of``: as
    urgent and as large as either (a critical one starts its escalation waves), and, given
    ``settings``, alive for another ``need_expiry_hours``; the caller asks helpers for any units
    it gained."""
    if need.id == of.id:
        raise InvalidInputError("a need cannot duplicate itself", field="into")
    lock_many(session, {need.id, of.id})  # read afresh into these same objects
    now = utcnow()
    if of.status is NeedStatus.duplicate:
        raise ConflictError(f"need {of.code} is itself a duplicate; merge into {of.duplicate_of_id} instead")
    if of.status not in (*OPEN_NEED_STATUSES, NeedStatus.assigned) or (
        of.expires_at is not None and of.expires_at <= now
    ):
        state = of.status.value if of.status is not NeedStatus.open else "expired"
        raise ConflictError(f"need {of.code} is {state}; merge into a need that still stands")
    if need.status not in OPEN_NEED_STATUSES:
        raise ConflictError(f"need {need.code} is {need.status.value}; only open needs can be merged")
    if need.category is not of.category:
        raise InvalidInputError(
            f"need {need.code} is {need.category.value} and need {of.code} {of.category.value}: "
            "only needs of one category can be merged",
            field="into",
        )
    need.status = NeedStatus.duplicate
    need.duplicate_of_id = of.id
    need.escalation_next_at = None
    need.updated_at = now
    session.flush()  # the need's row first, then its matches: the order an accept takes them in
    close_pending(session, Match.need_id == need.id, now=now, why=f"merged into need {of.id}")
    close_accepted(session, [need.id], now=now, outcome=NeedStatus.duplicate)
    note = f"[{now:%Y-%m-%d %H:%M} UTC, merged {need.code}] {need.description or ''}".strip()
    of.description = "\n".join(p for p in (of.description, note) if p)[-2000:]
    if need.quantity > of.quantity:
        of.quantity = need.quantity
        if of.status is NeedStatus.assigned:
            of.status = NeedStatus.partially_assigned  # units nobody holds again
    if URGENCY_RANK[need.urgency] > URGENCY_RANK[of.urgency]:
        of.urgency = need.urgency
        if of.urgency is Urgency.critical and of.escalation_wave is None and of.quantity > of.quantity_assigned:
            of.escalation_wave = 0  # its waves start at the next upkeep pass, as if posted so
            of.escalation_next_at = now
    if settings is not None and of.status in OPEN_NEED_STATUSES:
        of.expires_at = now + timedelta(hours=settings.need_expiry_hours)
        of.reconfirm_requested_at = None
    of.updated_at = now
    session.flush()
    audit.record(session, "marked_duplicate", "need", need.id, of=of.id)
    return need


def get(*, session: Session, need_id: int) -> Need:
    need = session.get(Need, need_id)
    if need is None:
        raise NotFoundError(f"no need with id {need_id}")
    return need


def by_idempotency_key(*, session: Session, key_sha256: str) -> Need | None:
    """The need a post with this ``Idempotency-Key`` (its SHA-256) made, if any."""
    return session.scalar(select(Need).where(Need.idempotency_key == key_sha256))


def get_by_code(*, session: Session, code: str) -> Need:
    canonical = normalize_code(code)
    need = session.scalar(select(Need).where(Need.code == canonical))
    if need is None:
        raise NotFoundError(f"no need with code {code!r}")
    return need


def list_needs(*, session: Session, filters: NeedFilters, page: PageParams) -> tuple[list[Need], int]:
    stmt = select(Need)
    if filters.status:
        stmt = stmt.where(Need.status.in_(filters.status))
    if filters.category:
        stmt = stmt.where(Need.category.in_(filters.category))
    if filters.urgency:
        stmt = stmt.where(Need.urgency.in_(filters.urgency))
    if filters.bbox is not None:
        stmt = stmt.where(filters.bbox.where(Need.lat, Need.lon))
    return paginate(session, stmt.order_by(Need.id.desc()), page)


def lock(session: Session, need: Need) -> Need:
    """``need`` read afresh and row-locked (PostgreSQL; SQLite: the write lock) until the
    transaction ends: what it is now, not when it was loaded, so that a concurrent accept, close or
    expiry is seen and waits (changes not yet flushed are written first, not lost)."""
    session.flush()
    write_lock(session)
    session.refresh(need, with_for_update={"key_share": True})
    return need


def lock_many(session: Session, need_ids: Collection[int]) -> dict[int, Need]:
    """The needs with these ids read afresh and row-locked like ``lock``, in id order (two
    transactions locking some of the same needs take them in the same order)."""
    if not need_ids:
        return {}
    write_lock(session)
    stmt = select(Need).where(Need.id.in_(sorted(need_ids))).order_by(Need.id).with_for_update(key_share=True)
    return {n.id: n for n in session.scalars(stmt.execution_options(populate_existing=True))}


def asked_if_help_came(need: Need) -> bool:
    """Whether the question waiting for the author's answer is «has help arrived?» — asked of a
    need helpers took all of, when it would have expired — rather than «still needed?», asked
    before the expiry (perhaps before helpers took it): a NO to the first means "not yet", to the
    second "no longer needed"."""
    return (
        need.status is NeedStatus.assigned
        and need.reconfirm_requested_at is not None
        and need.expires_at is not None
        and need.reconfirm_requested_at >= need.expires_at
    )


def get_locked(session: Session, need_id: int) -> Need:
    """The need with this id, read afresh and row-locked like ``lock``."""
    write_lock(session)
    need = session.get(Need, need_id, with_for_update={"key_share": True}, populate_existing=True)
    if need is None:
        raise NotFoundError(f"no need with id {need_id}")
    return need


def reconfirm(*, session: Session, need: Need, settings: Settings) -> Need:
    """The need still stands: it stays open for another ``need_expiry_hours`` from now."""
    lock(session, need)
    if need.status not in OPEN_NEED_STATUSES and need.status is not NeedStatus.assigned:
        raise ConflictError(f"need {need.code} is {need.status.value}; post a new need instead")
    now = utcnow()
    if asked_if_help_came(need):
        # «Has help arrived?» — not yet: its helpers hear that they are still awaited.
        remind_helpers(session, {need.id: need.expires_at}, now=now, still_waiting=True)
    need.expires_at = now + timedelta(hours=settings.need_expiry_hours)
    need.reconfirm_requested_at = None
    need.updated_at = now
    session.flush()
    audit.record(session, "confirmed", "need", need.id, expires_at=need.expires_at.isoformat())
    return need


def close(*, session: Session, need: Need, fulfilled: bool) -> Need:
    """The author says the need no longer stands (done, or not needed any more).

    Requests still waiting for an answer are withdrawn. Accepted tasks are settled: completed when
    the author says it is done, called off (units back to the offers, helpers told by SMS) when it
    is no longer needed. A need closed already (fulfilled, cancelled, expired, a duplicate) stays
    as it is: ConflictError.
    """
    lock(session, need)
    if need.status not in (*OPEN_NEED_STATUSES, NeedStatus.assigned):
        raise ConflictError(f"need {need.code} is {need.status.value} already")
    now = utcnow()
    need.status = NeedStatus.fulfilled if fulfilled else NeedStatus.cancelled
    audit.record(session, "closed", "need", need.id, status=need.status.value)
    need.escalation_next_at = None
    need.updated_at = now
    session.flush()  # the need's row first, then its matches: the order an accept takes them in
    close_pending(session, Match.need_id == need.id, now=now, why=f"need {need.status.value}")
    close_accepted(session, [need.id], now=now, outcome=need.status)
    session.flush()
    return need
