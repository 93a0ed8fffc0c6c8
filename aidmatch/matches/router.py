"""HTTP routes for matches and batch runs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query, Request, Response

from aidmatch.audit.service import act_as
from aidmatch.categories import Category
from aidmatch.database import SessionDep, utcnow
from aidmatch.deps import OPTIONAL_BEARER, Coordinator, LiveIndexDep, LiveNeedsDep, OptionalPrincipal, SettingsDep
from aidmatch.enums import MatchStatus, Urgency
from aidmatch.errors import AuthenticationError, ForbiddenError
from aidmatch.matches import service
from aidmatch.matches.models import Match
from aidmatch.matches.schemas import MatchAction, MatchOut, MatchRunOut, UnmetNeedOut
from aidmatch.messages import notices
from aidmatch.query import PageDep
from aidmatch.schemas import MAX_ROW_ID, Page, RowId

router = APIRouter(prefix="/api", tags=["matches"])

IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]


@router.get("/matches", response_model=Page[MatchOut])
def list_matches(
    session: SessionDep,
    _: Coordinator,
    page: PageDep,
    need_id: IdQuery = None,
    offer_id: IdQuery = None,
    run_id: IdQuery = None,
    status: Annotated[list[MatchStatus] | None, Query()] = None,
) -> Page[MatchOut]:
    """Matches, oldest first, filtered by need, offer, run or status (coordinators)."""
    filters = service.MatchFilters(need_id=need_id, offer_id=offer_id, run_id=run_id, status=tuple(status or ()))
    rows, total = service.list_matches(session=session, filters=filters, page=page)
    return Page[MatchOut](
        items=[MatchOut.model_validate(m) for m in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/runs", response_model=Page[MatchRunOut])
def list_runs(session: SessionDep, _: Coordinator, page: PageDep) -> Page[MatchRunOut]:
    """Batch runs, newest first (coordinators)."""
    rows, total = service.list_runs(session=session, page=page)
    return Page[MatchRunOut](
        items=[MatchRunOut.model_validate(r) for r in rows], total=total, limit=page.limit, offset=page.offset
    )


def _authorise(session: SessionDep, principal: OptionalPrincipal, match_id: int, action: MatchAction | None) -> None:
    """A coordinator may act for a helper who phoned in; a helper acts with their private link."""
    if principal is not None and principal.is_coordinator:
        return
    match = service.get(session=session, match_id=match_id)
    if (
        action is not None
        and action.link
        and service.helper_owns(session=session, match=match, link_secret=action.link)
    ):
        act_as(session, f"helper:{service.helper_of(session=session, match=match)}")
        return
    if principal is None and not (action and action.link):
        raise AuthenticationError("acting on a match needs a coordinator token or the helper's private link")
    raise ForbiddenError("only the helper of this match or a coordinator may act on it")


def _act(
    act: Callable[..., Match],
    match_id: int,
    session: SessionDep,
    principal: OptionalPrincipal,
    action: MatchAction | None,
) -> MatchOut:
    _authorise(session, principal, match_id, action)
    match = act(session=session, match_id=match_id)
    session.commit()
    return MatchOut.model_validate(match)


@router.post("/matches/{match_id}/accept", response_model=MatchOut, openapi_extra=OPTIONAL_BEARER)
def accept_match(
    match_id: RowId, session: SessionDep, principal: OptionalPrincipal, action: MatchAction | None = None
) -> MatchOut:
    """Accept: the units are taken at once, or 409 when someone else took the last of them.

    The need's author is told a helper is coming, and the helper gets the author's contact by SMS.
    """

    def accept_and_tell(*, session: SessionDep, match_id: int) -> Match:
        match = service.accept(session=session, match_id=match_id)
        notices.accepted(session=session, match=match)
        return match

    return _act(accept_and_tell, match_id, session, principal, action)


@router.post("/matches/{match_id}/decline", response_model=MatchOut, openapi_extra=OPTIONAL_BEARER)
def decline_match(
    match_id: RowId,
    session: SessionDep,
    principal: OptionalPrincipal,
    live: LiveIndexDep,
    settings: SettingsDep,
    action: MatchAction | None = None,
) -> MatchOut:
    """Decline: the need goes to the next nearest helper not asked yet.

    An accepted task declined is given back (the helper cannot come after all): its units go back
    to the need and the offer, the need's author is told another helper is being looked for, and
    the next nearest helper not asked yet is asked.
    """
    return _act(partial(service.decline, live=live, settings=settings), match_id, session, principal, action)


@router.post("/matches/{match_id}/complete", response_model=MatchOut, openapi_extra=OPTIONAL_BEARER)
def complete_match(
    match_id: RowId, session: SessionDep, principal: OptionalPrincipal, action: MatchAction | None = None
) -> MatchOut:
    """Done: the help was delivered."""
    return _act(service.complete, match_id, session, principal, action)


@router.get("/stats/unmet", tags=["stats"])
def unmet(
    request: Request, response: Response, session: SessionDep, live: LiveIndexDep, _: Coordinator
) -> dict[str, Any]:
    """Unmet needs by category × urgency × reason, with the age of the oldest (coordinators).

    Reasons: ``no_helper_of_category``, ``outside_every_radius``, ``all_in_range_busy``,
    ``waiting_for_helper``, ``all_in_range_asked`` (explained in the answer's ``reasons``).

    Each worker keeps a copy, computed at start-up and renewed in the background: a copy older than
    ``AIDMATCH_UNMET_STATS_CACHE_S`` seconds (default 1; 0 computes it on every call) is still
    answered while the next one is computed, so the counts are usually at most that old plus the
    computation (0.07–0.11 s at 100k open needs with little changed, from the worker's in-memory
    open needs). A copy over 60 s old (nobody asked for a minute) is renewed before answering, but
    each request waits for the renewal at most ``AIDMATCH_UNMET_STATS_STALE_WAIT_S`` (default 0.1 s):
    after heavy intake it catches up with every change meanwhile and can take seconds, and until it
    is done the old copy is answered. So the copy's age has no upper bound: ``stats_age_s`` (and the
    ``Age`` header, in whole seconds) gives it. The age of the oldest unmet need is counted to the
    moment of the request.
    """
    cache: service.UnmetStatsCache = request.app.state.unmet_stats
    stats, age = cache.served(session=session, live=live, now=utcnow())
    age = max(age, 0.0)
    response.headers["Age"] = str(int(age))
    response.headers["Cache-Control"] = "no-store"  # every answer is this worker's own copy, made for coordinators
    return {**stats, "stats_age_s": round(age, 3)}


UnmetReason = Literal[
    "no_helper_of_category", "outside_every_radius", "all_in_range_busy", "waiting_for_helper", "all_in_range_asked"
]
assert set(get_args(UnmetReason)) == set(service.UNMET_REASONS)  # the filter takes every reason reported


@router.get("/stats/unmet/needs", tags=["stats"], response_model=Page[UnmetNeedOut])
def unmet_needs(
    session: SessionDep,
    live: LiveIndexDep,
    needs: LiveNeedsDep,
    _: Coordinator,
    page: PageDep,
    reason: Annotated[list[UnmetReason] | None, Query()] = None,
    category: Annotated[Category | None, Query()] = None,
    urgency: Annotated[Urgency | None, Query()] = None,
) -> Page[UnmetNeedOut]:
    """Each unmet need with why, oldest first; filter by reason, category and urgency (coordinators)."""
    only = service.UnmetFilter(category=category, urgency=urgency)
    items, total = service.unmet_needs(
        session=session, live=live, now=utcnow(), reasons=reason or (), page=page, needs=needs, only=only
    )
    return Page[UnmetNeedOut](
        items=[UnmetNeedOut.model_validate(i) for i in items], total=total, limit=page.limit, offset=page.offset
    )
