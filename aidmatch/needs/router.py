"""HTTP routes for needs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from aidmatch.categories import Category
from aidmatch.database import SessionDep, utcnow
from aidmatch.deps import (
    OPTIONAL_BEARER,
    Coordinator,
    LiveIndexDep,
    OptionalPrincipal,
    SettingsDep,
    TokenHolder,
)
from aidmatch.enums import NeedStatus, Urgency
from aidmatch.errors import ConflictError, InvalidInputError
from aidmatch.limits import limit_public_posts
from aidmatch.matches import proposals
from aidmatch.needs import service
from aidmatch.needs.intake import IntakeGroups
from aidmatch.needs.schemas import MergeIn, NeedCreated, NeedFull, NeedIn, NeedPublic
from aidmatch.query import BBoxDep, PageDep
from aidmatch.schemas import Page, RowId
from geo.geocoding import Geocoder

router = APIRouter(prefix="/api/needs", tags=["needs"])


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Any unique string (a UUID): posting again with the same key and body answers "
        "with the need the first post made (200, header `Idempotent-Replayed: true`) instead of "
        "making another; the same key with another body is refused (422).",
    ),
]


@router.post("", status_code=201, response_model=NeedCreated, dependencies=[Depends(limit_public_posts)])
async def create_need(
    need_in: NeedIn, response: Response, request: Request, idempotency_key: IdempotencyKey = None
) -> NeedCreated:
    """Post a need. Anyone may; the answer carries the short public code and the helpers found.

    The same phone posting the same category within 500 m and 24 h bumps its open need instead
    (200, ``merged``: true, the text appended) rather than making a second one. A client that may
    retry (a lost answer, a timeout) sends an ``Idempotency-Key`` header.
    """
    # ``async``: the request waits for its group (``aidmatch.needs.intake``) without holding a
    # thread; only an address to geocode (or a key to look up) goes to the thread pool.
    sessions: sessionmaker[Session] = request.app.state.sessionmaker
    key = None
    if idempotency_key is not None:
        key = (_sha256(idempotency_key), _sha256(need_in.model_dump_json()))
        earlier = await run_in_threadpool(_replay, sessions, key)
        if earlier is not None:
            return _replayed(response, earlier)
    if need_in.lat is None or need_in.lon is None:
        need_in = await run_in_threadpool(_locate, need_in, request.app.state.geocoder)
    if key is not None:
        need_in = need_in.with_idempotency(*key)
    groups: IntakeGroups = request.app.state.intake
    outcome = await groups.submit(need_in)
    if outcome.error is not None:
        if key is not None and isinstance(outcome.error, IntegrityError):
            # The same key posted at the same moment: the other post stored its need first.
            earlier = await run_in_threadpool(_replay, sessions, key)
            if earlier is not None:
                return _replayed(response, earlier)
            raise ConflictError("a post with this Idempotency-Key is being handled; retry in a moment")
        raise outcome.error
    assert outcome.need is not None
    if outcome.merged:
        response.status_code = 200
    return outcome.need


def _replayed(response: Response, earlier: NeedCreated) -> NeedCreated:
    response.status_code = 200
    response.headers["Idempotent-Replayed"] = "true"
    return earlier


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _replay(sessions: sessionmaker[Session], key: tuple[str, str]) -> NeedCreated | None:
    """The need an earlier post with this key made, as it is now; None if there is none."""
    with sessions() as session:
        need = service.by_idempotency_key(session=session, key_sha256=key[0])
        if need is None:
            return None
        if need.idempotency_body != key[1]:
            raise InvalidInputError(
                f"this Idempotency-Key was used for another post (need {need.code}); use a new key for a new post",
                field="Idempotency-Key",
            )
        return NeedCreated.model_validate(need)


def _locate(need_in: NeedIn, geocoder: Callable[[], Geocoder]) -> NeedIn:
    # The lazy geocoder is built here, in the pool: its first use loads the gazetteer (seconds).
    return service.locate(need_in, geocoder())


@router.post("/{need_id}/merge", response_model=NeedFull)
def merge_need(
    need_id: RowId, body: MergeIn, session: SessionDep, settings: SettingsDep, live: LiveIndexDep, _: Coordinator
) -> NeedFull:
    """Mark a need as a duplicate of another (coordinators): it closes; its text joins the other,
    which must still stand and be of the same category (409 / 422 otherwise) and takes the
    higher urgency and quantity of the two; units it gains go to the nearest helpers."""
    need = service.get(session=session, need_id=need_id)
    into = service.get(session=session, need_id=body.into)
    service.mark_duplicate(session=session, need=need, of=into, settings=settings)
    proposals.propose_still_needed(session=session, need=into, live=live, now=utcnow(), reason="merged duplicate")
    session.commit()
    return NeedFull.model_validate(need)


@router.get("", response_model=Page[NeedFull] | Page[NeedPublic])
def list_needs(
    session: SessionDep,
    principal: TokenHolder,
    page: PageDep,
    bbox: BBoxDep,
    status: Annotated[list[NeedStatus] | None, Query()] = None,
    category: Annotated[list[Category] | None, Query()] = None,
    urgency: Annotated[list[Urgency] | None, Query()] = None,
) -> Page[NeedFull] | Page[NeedPublic]:
    """List needs, newest first. Coordinators see contact data; volunteers do not."""
    filters = service.NeedFilters(status=status or (), category=category or (), urgency=urgency or (), bbox=bbox)
    needs, total = service.list_needs(session=session, filters=filters, page=page)
    if principal.is_coordinator:
        return Page[NeedFull](
            items=[NeedFull.model_validate(n) for n in needs], total=total, limit=page.limit, offset=page.offset
        )
    return Page[NeedPublic](
        items=[NeedPublic.model_validate(n) for n in needs], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/code/{code}", response_model=NeedPublic)
def get_need_by_code(code: Annotated[str, Path(max_length=32)], session: SessionDep) -> NeedPublic:
    """A need by its short public code, as its author checks it (no account needed)."""
    return NeedPublic.model_validate(service.get_by_code(session=session, code=code))


@router.post("/code/{code}/confirm", response_model=NeedPublic, dependencies=[Depends(limit_public_posts)])
def confirm_need_by_code(
    code: Annotated[str, Path(max_length=32)], session: SessionDep, settings: SettingsDep, live: LiveIndexDep
) -> NeedPublic:
    """ "Still needed": the author keeps an open need alive for another ``need_expiry_hours``; its
    units nobody holds go to the nearest helpers not asked before."""
    need = service.reconfirm(session=session, need=service.get_by_code(session=session, code=code), settings=settings)
    proposals.propose_still_needed(session=session, need=need, live=live, now=utcnow(), reason="still needed")
    session.commit()
    return NeedPublic.model_validate(need)


@router.post("/{need_id}/confirm", response_model=NeedFull)
def confirm_need(
    need_id: RowId, session: SessionDep, settings: SettingsDep, live: LiveIndexDep, _: Coordinator
) -> NeedFull:
    """ "Still needed", recorded by a coordinator (e.g. after a phone call), as the author's."""
    need = service.reconfirm(session=session, need=service.get(session=session, need_id=need_id), settings=settings)
    proposals.propose_still_needed(session=session, need=need, live=live, now=utcnow(), reason="still needed")
    session.commit()
    return NeedFull.model_validate(need)


@router.get("/{need_id}", response_model=NeedFull | NeedPublic, openapi_extra=OPTIONAL_BEARER)
def get_need(need_id: RowId, session: SessionDep, principal: OptionalPrincipal) -> NeedFull | NeedPublic:
    """One need; contact data only for coordinators."""
    need = service.get(session=session, need_id=need_id)
    if principal is not None and principal.is_coordinator:
        return NeedFull.model_validate(need)
    return NeedPublic.model_validate(need)
