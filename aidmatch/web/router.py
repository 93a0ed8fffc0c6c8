"""Server-rendered pages: need and offer forms, a need's status, a helper's tasks, the dashboard.

Every page works without JavaScript (plain forms, POST then redirect); the scripts only add the
location button, the map and the dashboard's refresh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from aidmatch.auth import service as auth_service
from aidmatch.auth.service import Principal
from aidmatch.categories import CATEGORIES, Category, label
from aidmatch.database import SessionDep, utcnow
from aidmatch.deps import GeocoderDep, LiveIndexDep, LiveNeedsDep, SettingsDep
from aidmatch.emergency import service as emergency_service
from aidmatch.enums import NeedStatus, Source, Urgency
from aidmatch.errors import ConflictError, InvalidInputError, NotFoundError, TaskLimitError, TooManyRequestsError
from aidmatch.limits import limit_public_posts
from aidmatch.matches import proposals
from aidmatch.matches import service as matches_service
from aidmatch.messages import notices
from aidmatch.messages import service as messages_service
from aidmatch.needs import service as needs_service
from aidmatch.offers import service as offers_service
from aidmatch.query import PageParams
from aidmatch.web import service
from aidmatch.web.auth import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    WebCoordinator,
    WebPrincipal,
    csrf_ok,
    csrf_token,
    log_out,
    session_cookie_value,
)
from aidmatch.web.forms import FormResult, parse_need, parse_offer
from aidmatch.web.i18n import LANG_COOKIE, pick_language, translate

router = APIRouter(include_in_schema=False)

Code = Annotated[str, Path(max_length=32)]
Link = Annotated[str, Path(min_length=8, max_length=128)]
URGENCIES = [u.value for u in Urgency]
UNMET_PAGE = PageParams(limit=200, offset=0)
OPEN_NEEDS_SHOWN = 500  # rows of the open-needs table; its header counts them all


def age_text(lang: str, seconds: float | None) -> str:
    if seconds is None:
        return translate(lang, "none")
    minutes = int(seconds // 60)
    if minutes < 120:
        return translate(lang, "age_minutes", n=minutes)
    if minutes < 48 * 60:
        return translate(lang, "age_hours", n=minutes // 60)
    return translate(lang, "age_days", n=minutes // 1440)


def render(request: Request, template: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    """A page in the caller's language; ``?lang=`` is remembered in a cookie."""
    lang = pick_language(request)

    def t(key: str, **fields: object) -> str:
        return translate(lang, key, **fields)

    def count_of(shown: int, total: int) -> str:
        """A list's count: all of it, or how many of how many when it was cut."""
        return str(total) if shown >= total else t("shown_of", shown=shown, total=total)

    query = dict(request.query_params)
    other = "en" if lang == "ru" else "ru"
    switch_url = request.url.path + "?" + urlencode({**query, "lang": other})
    base = {
        "request": request,
        "lang": lang,
        "t": t,
        "count_of": count_of,
        "categories": [(c.value, CATEGORIES[c].icon, label(c, lang)) for c in Category],
        "category_label": lambda code: label(code, lang),
        "category_icon": lambda code: CATEGORIES[Category(code)].icon,
        "urgencies": URGENCIES,
        "age": lambda s: age_text(lang, s),
        "switch_url": switch_url,
    }
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status_code
    )
    response.headers["Cache-Control"] = "no-store"
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax")
    return response


def not_found(request: Request, message: str) -> HTMLResponse:
    return render(request, "error.html", {"message": message}, status_code=404)


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=100)


# The form is read by this async dependency on the event loop; the routes that use it stay sync, so
# FastAPI runs their database work in its thread pool instead of blocking the loop.
FormDep = Annotated[FormData, Depends(_form)]


# Public pages


@router.get("/", response_class=HTMLResponse)
def landing(request: Request) -> HTMLResponse:
    return render(request, "landing.html", {})


@router.get("/status")
def status_lookup(request: Request, code: Annotated[str, Query(max_length=32)] = "") -> Response:
    """The code form on the landing page, without JavaScript."""
    canonical = needs_service.normalize_code(code)
    if not canonical.isalnum():
        return render(request, "landing.html", {"code_error": True}, status_code=422)
    return RedirectResponse(f"/status/{canonical}", status_code=303)


@router.get("/need", response_class=HTMLResponse)
def need_form(request: Request) -> HTMLResponse:
    return render(request, "need.html", {"form": FormResult(values={"quantity": "1", "urgency": "normal"})})


@router.post("/need", response_class=HTMLResponse, dependencies=[Depends(limit_public_posts)])
def need_submit(
    request: Request,
    raw: FormDep,
    session: SessionDep,
    settings: SettingsDep,
    geocoder: GeocoderDep,
    live: LiveIndexDep,
) -> Response:
    """Same path as ``POST /api/needs`` (source web): store, ask the nearest helpers, queue the code by SMS."""
    lang = pick_language(request)
    form, need_in = parse_need(raw, lang)
    if need_in is not None:
        try:
            need, merged = needs_service.create_or_merge(
                session=session, need_in=need_in, settings=settings, geocoder=geocoder, source=Source.web
            )
        except InvalidInputError as exc:
            session.rollback()
            address = form.values.get("address", "")
            form.errors[exc.field or "address"] = translate(lang, "err_address_unknown", address=address)
        except TooManyRequestsError as exc:
            # The open-needs limit of the phone: the form again, with what was typed and why.
            session.rollback()
            limit = settings.max_open_needs_per_phone
            form.errors["contact_phone"] = translate(lang, "err_too_many_open", limit=limit)
            page = render(request, "need.html", {"form": form}, status_code=429)
            if exc.retry_after_s is not None:
                page.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
            return page
        else:
            if merged:  # a repeat bumped the open need: its units nobody holds are asked for again
                proposals.propose_still_needed(session=session, need=need, live=live, now=utcnow())
            else:
                proposals.propose_for_need(session=session, need=need, live=live, settings=settings, now=utcnow())
                notices.need_received_sms(session=session, need=need)
            session.commit()
            return RedirectResponse(f"/status/{need.code}?new=1", status_code=303)
    return render(request, "need.html", {"form": form}, status_code=422)


@router.get("/status/{code}", response_class=HTMLResponse)
def status_page(request: Request, code: Code, session: SessionDep) -> HTMLResponse:
    try:
        progress = service.need_progress(session=session, code=code)
    except NotFoundError:
        return not_found(request, translate(pick_language(request), "not_found_code", code=code))
    need = progress.need
    stages = {
        "matched": progress.asked > 0 or progress.accepted_units > 0 or need.status is NeedStatus.fulfilled,
        "accepted": progress.accepted_units > 0 or need.status is NeedStatus.fulfilled,
        "fulfilled": need.status is NeedStatus.fulfilled,
    }
    return render(
        request,
        "status.html",
        {
            "p": progress,
            "need": need,
            "stages": stages,
            "is_new": request.query_params.get("new") == "1",
            "reconfirmed": request.query_params.get("confirmed") == "1",
            "can_confirm": need.status in (NeedStatus.open, NeedStatus.partially_assigned, NeedStatus.assigned),
        },
    )


@router.post("/status/{code}/confirm", dependencies=[Depends(limit_public_posts)])
def status_confirm(
    request: Request, code: Code, session: SessionDep, settings: SettingsDep, live: LiveIndexDep
) -> Response:
    """The author's "still needed" button (units nobody holds go to the next helpers, as by the API)."""
    try:
        need = needs_service.get_by_code(session=session, code=code)
        needs_service.reconfirm(session=session, need=need, settings=settings)
        proposals.propose_still_needed(session=session, need=need, live=live, now=utcnow(), reason="still needed")
    except NotFoundError:
        return not_found(request, translate(pick_language(request), "not_found_code", code=code))
    except ConflictError:
        return RedirectResponse(f"/status/{code}", status_code=303)
    session.commit()
    return RedirectResponse(f"/status/{need.code}?confirmed=1", status_code=303)


# What a new offer form shows.
_OFFER_DEFAULTS: dict[str, Any] = {"capacity": "1", "radius_km": "25", "categories": []}


@router.get("/offer", response_class=HTMLResponse)
def offer_form(request: Request) -> HTMLResponse:
    return render(request, "offer.html", {"form": FormResult(values=dict(_OFFER_DEFAULTS))})


@router.post("/offer", response_class=HTMLResponse, dependencies=[Depends(limit_public_posts)])
def offer_submit(
    request: Request, raw: FormDep, session: SessionDep, settings: SettingsDep, geocoder: GeocoderDep
) -> Response:
    """Same path as ``POST /api/offers``; a new helper sees their private task link once."""
    lang = pick_language(request)
    form, offer_in = parse_offer(raw, lang)
    if offer_in is not None:
        try:
            _, secret = offers_service.create(session=session, offer_in=offer_in, geocoder=geocoder)
        except offers_service.PhoneTakenError:
            session.rollback()
            form.errors["phone"] = translate(lang, "err_phone_taken")
        except InvalidInputError as exc:
            session.rollback()
            field = exc.field or "address"
            form.errors[field] = (
                translate(lang, "err_address_unknown", address=form.values.get("address", ""))
                if field == "address"
                else translate(lang, f"err_{field}")
            )
        else:
            session.commit()
            link = f"{settings.public_url.rstrip('/')}/tasks/{secret}" if secret else None
            return render(request, "offer_done.html", {"link": link, "path": f"/tasks/{secret}" if secret else None})
    return render(request, "offer.html", {"form": form}, status_code=422)


@router.get("/tasks/{link}", response_class=HTMLResponse)
def tasks_page(request: Request, link: Link, session: SessionDep) -> HTMLResponse:
    lang = pick_language(request)
    try:
        helper = service.helper_by_link(session=session, secret=link)
    except NotFoundError:
        return not_found(request, translate(lang, "link_unknown"))
    response = render(
        request,
        "tasks.html",
        {
            "helper": helper,
            "tasks": service.tasks_for(session=session, helper=helper),
            "link": link,
            "flash": request.query_params.get("done"),
        },
    )
    response.headers["Referrer-Policy"] = "no-referrer"  # the link is the helper's key
    return response


@router.get("/tasks/{link}/offer", response_class=HTMLResponse)
def task_offer_form(request: Request, link: Link, session: SessionDep) -> HTMLResponse:
    """The offer form for a helper with their link (it posts the link in a hidden field, not in
    the address, which access logs and referrers would carry): adds the offer to that helper."""
    lang = pick_language(request)
    try:
        service.helper_by_link(session=session, secret=link)
    except NotFoundError:
        return not_found(request, translate(lang, "link_unknown"))
    response = render(request, "offer.html", {"form": FormResult(values={**_OFFER_DEFAULTS, "link": link})})
    response.headers["Referrer-Policy"] = "no-referrer"  # the link is the helper's key
    return response


@router.post("/tasks/{link}/{match_id}/{action}")
def task_action(
    request: Request,
    link: Link,
    match_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    action: Literal["accept", "decline", "complete"],
    session: SessionDep,
    live: LiveIndexDep,
    settings: SettingsDep,
) -> Response:
    """Accept / Decline / Done from the helper's own page (its private link is the authority)."""
    try:
        helper = service.helper_by_link(session=session, secret=link)
        service.task_match_of(session=session, helper=helper, match_id=match_id)
    except NotFoundError:
        return not_found(request, translate(pick_language(request), "link_unknown"))
    try:
        if action == "accept":
            match = matches_service.accept(session=session, match_id=match_id)
            notices.accepted(session=session, match=match)
        elif action == "decline":
            matches_service.decline(session=session, match_id=match_id, live=live, settings=settings)
        else:
            matches_service.complete(session=session, match_id=match_id)
    except TaskLimitError:
        session.rollback()
        return RedirectResponse(f"/tasks/{link}?done=limit#task-{match_id}", status_code=303)
    except ConflictError:
        session.rollback()
        return RedirectResponse(f"/tasks/{link}?done=conflict", status_code=303)
    session.commit()
    flash = {"accept": "accepted", "decline": "declined", "complete": "completed"}[action]
    return RedirectResponse(f"/tasks/{link}?done={flash}#task-{match_id}", status_code=303)


# Coordinators


def _safe_next(raw: str | None) -> str:
    return raw if raw and raw.startswith("/") and not raw.startswith("//") else "/dashboard"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return render(request, "login.html", {"next": _safe_next(request.query_params.get("next"))})


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(limit_public_posts)])
def login_submit(request: Request, form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    token = form.get("token")
    next_url = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    principal = auth_service.authenticate(session=session, plaintext=token.strip()) if isinstance(token, str) else None
    if principal is None or not principal.is_coordinator:
        error = "login_bad" if principal is None else "login_not_coordinator"
        return render(request, "login.html", {"next": next_url, "error": error}, status_code=401)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie_value(request, principal),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=settings.public_url.startswith("https://"),
    )
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> Response:
    """Sign out: the cookie goes, and every session of its token ends on the server too."""
    log_out(request, session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def _filters(
    category: str | None, urgency: str | None, max_age_h: str | None
) -> tuple[service.DashboardFilters, dict[str, str]]:
    """Dashboard filters from the query; anything unparseable is ignored rather than refused."""
    chosen: dict[str, str] = {}
    cat = Category(category) if category in {c.value for c in Category} else None
    urg = Urgency(urgency) if urgency in URGENCIES else None
    age: float | None = None
    try:
        age = float(max_age_h) if max_age_h else None
    except ValueError:
        age = None
    if age is not None and not 0 < age <= 24 * 365:
        age = None
    if cat:
        chosen["category"] = cat.value
    if urg:
        chosen["urgency"] = urg.value
    if age is not None:
        chosen["max_age_h"] = f"{age:g}"
    return service.DashboardFilters(category=cat, urgency=urg, max_age_h=age), chosen


def _dashboard_context(
    request: Request,
    session: SessionDep,
    live: LiveIndexDep,
    needs: LiveNeedsDep,
    settings: SettingsDep,
    principal: Principal,
    view: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What the dashboard shows, as the query asks (``view``: as a triage form carried it instead)."""
    now = utcnow()
    q = request.query_params if view is None else view
    filters, chosen = _filters(q.get("category"), q.get("urgency"), q.get("max_age_h"))
    # Filtered before the page is cut, so a filter finds its needs however many older ones wait.
    only = matches_service.UnmetFilter(
        category=filters.category,
        urgency=filters.urgency,
        created_since=now - timedelta(hours=filters.max_age_h) if filters.max_age_h is not None else None,
    )
    stats, unmet, unmet_total = matches_service.unmet_overview(
        session=session, live=live, now=now, page=UNMET_PAGE, needs=needs, only=only
    )
    triage_limit = _triage_limit(q)
    triage = service.triage_queue(session=session, limit=triage_limit, now=now)
    triage_total = service.triage_count(session=session, now=now)
    more = min(triage_limit * 4, service.TRIAGE_MAX_SHOWN)
    counts: dict[tuple[str, str], int] = {}
    for g in stats["groups"]:  # type: ignore[attr-defined]
        key = (g["category"], g["urgency"])
        counts[key] = counts.get(key, 0) + int(g["needs"])
    runs, _ = matches_service.list_runs(session=session, page=PageParams(limit=10, offset=0))
    return {
        "principal": principal,
        "csrf": csrf_token(request, principal),
        "chosen": chosen,
        "filter_query": urlencode(chosen),
        # What the page shows (filters, how much of the triage queue): a triage action comes back to it.
        "view_query": urlencode(_view_params(q)),
        "stats": stats,
        "counts": counts,
        "count_categories": sorted({c for c, _ in counts}, key=lambda c: list(Category).index(Category(c))),
        "unmet": unmet,
        "unmet_total": unmet_total,
        "needs": service.open_needs(session=session, filters=filters, now=now, limit=OPEN_NEEDS_SHOWN),
        "needs_total": service.count_open_needs(session=session, filters=filters, now=now),
        "now": now,
        "runs": runs,
        "messages": service.messages(session=session),
        "triage": triage,
        "triage_total": triage_total,
        "triage_more_url": (
            "/dashboard?" + urlencode({**chosen, "triage": more}) + "#triage"
            if len(triage) < triage_total and more > triage_limit
            else None
        ),
        "held_back": messages_service.held_back(session, [m.phone for m in triage]),
        "held_back_shown": service.MAX_HELD_BACK_SHOWN,
        "emergency": emergency_service.get(session=session),
        "batch_interval_s": settings.batch_interval_s,
        "tile_url": settings.tile_url,
        "refreshed": now.astimezone(UTC).strftime("%H:%M:%S UTC"),
    }


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    request: Request,
    session: SessionDep,
    live: LiveIndexDep,
    needs: LiveNeedsDep,
    settings: SettingsDep,
    principal: WebPrincipal,
) -> Response:
    """The coordinator's page; without a token or session, the login form."""
    if principal is None:
        return RedirectResponse("/login?next=/dashboard", status_code=303)
    if not principal.is_coordinator:
        return render(request, "login.html", {"next": "/dashboard", "error": "login_not_coordinator"}, status_code=403)
    context = _dashboard_context(request, session, live, needs, settings, principal)
    if request.query_params.get("fragment") == "tables":
        return render(request, "dashboard_tables.html", context)
    return render(request, "dashboard.html", context)


@router.get("/dashboard/data.json")
def dashboard_data(
    request: Request, session: SessionDep, live: LiveIndexDep, needs: LiveNeedsDep, principal: WebCoordinator
) -> JSONResponse:
    """What the dashboard map draws, polled by its script: open needs (the newest 2000 the filters
    choose; ``needs_total`` counts them all), helpers' coverage (the newest 2000; ``offers_total``),
    the unmet totals."""
    now = utcnow()
    q = request.query_params
    filters, _ = _filters(q.get("category"), q.get("urgency"), q.get("max_age_h"))
    stats = matches_service.unmet_stats(session=session, live=live, now=now, needs=needs)
    shown = service.MAP_MAX_SHOWN
    points = service.need_points(service.open_needs(session=session, filters=filters, now=now, limit=shown), now)
    offers = service.coverage(session=session, now=now, limit=shown)
    body = {
        "generated_at": now.isoformat(),
        "needs": points,
        "needs_total": len(points)
        if len(points) < shown
        else service.count_open_needs(session=session, filters=filters, now=now),
        "offers": offers,
        "offers_total": len(offers) if len(offers) < shown else service.count_coverage(session=session, now=now),
        "unmet_needs": stats["unmet_needs"],
        "unmet_units": stats["unmet_units"],
        "oldest_unmet_age_s": stats["oldest_unmet_age_s"],
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/map/places.json")
def places_json(
    request: Request, settings: SettingsDep, count: Annotated[int, Query(ge=1, le=5000)] = 300
) -> JSONResponse:
    """The largest settlements of the region, biggest first, for the map's label layer (public GeoNames data)."""
    lang = pick_language(request)
    return JSONResponse(
        service.largest_places(settings.default_region, lang=lang, count=count),
        headers={"Cache-Control": "public, max-age=86400"},
    )


def _plain_digits(text: str, below: int) -> bool:
    """ASCII digits, fewer than ``below`` of them (``str.isdigit`` takes «²» too, which ``int`` refuses)."""
    return text.isascii() and text.isdigit() and len(text) < below


def _triage_limit(q: Mapping[str, str]) -> int:
    """How much of the triage queue a dashboard query shows (``triage``, within the bounds)."""
    shown = q.get("triage", "")
    limit = int(shown) if _plain_digits(shown, 6) else service.TRIAGE_SHOWN
    return min(max(limit, service.TRIAGE_SHOWN), service.TRIAGE_MAX_SHOWN)


def _view_params(q: Mapping[str, str]) -> dict[str, str]:
    """The parameters of what a dashboard query shows, checked: its filters, and the length of the
    triage queue when longer than the first page."""
    _, chosen = _filters(q.get("category"), q.get("urgency"), q.get("max_age_h"))
    limit = _triage_limit(q)
    return {**chosen, **({"triage": str(limit)} if limit > service.TRIAGE_SHOWN else {})}


def _view(raw: FormData) -> dict[str, str]:
    """The dashboard's query a triage form carried (``view_query``), as given: checked where used."""
    given = raw.get("view")
    return dict(parse_qsl(given[:500])) if isinstance(given, str) else {}


def _back_to_dashboard(raw: FormData, anchor: str, **extra: str) -> RedirectResponse:
    """Back to the dashboard as the coordinator had it (the form's ``view``: filters and how much of
    the triage queue was shown, checked again), with ``extra`` parameters."""
    params = {**_view_params(_view(raw)), **extra}
    return RedirectResponse("/dashboard" + ("?" + urlencode(params) if params else "") + anchor, status_code=303)


def _dashboard_post_guard(request: Request, principal: Principal | None, form: FormData) -> Response | None:
    if principal is None:
        return RedirectResponse("/login?next=/dashboard", status_code=303)
    if not principal.is_coordinator:
        return render(request, "login.html", {"next": "/dashboard", "error": "login_not_coordinator"}, status_code=403)
    given = form.get("csrf")
    if not csrf_ok(request, principal, given if isinstance(given, str) else None):
        return render(
            request, "error.html", {"message": translate(pick_language(request), "bad_csrf")}, status_code=403
        )
    return None


@router.post("/dashboard/emergency")
def dashboard_emergency(request: Request, form: FormDep, session: SessionDep, principal: WebPrincipal) -> Response:
    """Emergency mode on/off from the dashboard (same effect as ``POST /api/emergency``)."""
    refused = _dashboard_post_guard(request, principal, form)
    if refused is not None:
        return refused
    assert principal is not None
    mode = emergency_service.set_mode(session=session, enabled=form.get("enabled") == "1", changed_by=principal.name)
    session.commit()
    scheduler = request.app.state.scheduler
    if mode.enabled and scheduler is not None:
        scheduler.modify_job("batch", next_run_time=datetime.now(UTC))
    return RedirectResponse("/dashboard#emergency", status_code=303)


@router.post("/dashboard/triage/{message_id}/dismiss")
def dashboard_triage_dismiss(
    request: Request,
    raw: FormDep,
    message_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    principal: WebPrincipal,
) -> Response:
    """Not a need (a greeting, a flood, spam): the SMS leaves the triage queue, kept in the log."""
    refused = _dashboard_post_guard(request, principal, raw)
    if refused is not None:
        return refused
    try:
        upto = raw.get("shown_upto")
        shown = int(upto) if isinstance(upto, str) and _plain_digits(upto, 11) else None
        service.dismiss(session=session, message_id=message_id, shown_upto=shown)
    except NotFoundError:
        session.rollback()
        return not_found(request, translate(pick_language(request), "not_found"))
    session.commit()
    return _back_to_dashboard(raw, "#triage")


@router.post("/dashboard/triage/{message_id}", response_class=HTMLResponse)
def dashboard_triage(
    request: Request,
    raw: FormDep,
    message_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    settings: SettingsDep,
    geocoder: GeocoderDep,
    live: LiveIndexDep,
    needs: LiveNeedsDep,
    principal: WebPrincipal,
) -> Response:
    """Turn an unparsed SMS into a need; the form comes prefilled with the message text."""
    refused = _dashboard_post_guard(request, principal, raw)
    if refused is not None:
        return refused
    assert principal is not None
    lang = pick_language(request)
    form, need_in = parse_need(raw, lang)
    if need_in is not None:
        try:
            need, merged = service.need_from_message(
                session=session,
                message_id=message_id,
                need_in=need_in,
                settings=settings,
                geocoder=geocoder,
                live=live,
                now=utcnow(),
            )
        except NotFoundError:
            session.rollback()
            return not_found(request, translate(lang, "not_found"))
        except service.AlreadyTriagedError as done:
            # Posted twice (a double click, two coordinators): one need; show it, or the queue.
            session.rollback()
            return _back_to_dashboard(raw, "#triage", **({"created": done.code} if done.code else {}))
        except InvalidInputError:
            session.rollback()
            form.errors["address"] = translate(lang, "err_address_unknown", address=form.values.get("address", ""))
        else:
            session.commit()
            return _back_to_dashboard(raw, "#triage", created=need.code, **({"merged": "1"} if merged else {}))
    # Shown again as the coordinator had it (the filters and the length of the queue the form came from).
    context = _dashboard_context(request, session, live, needs, settings, principal, view=_view(raw))
    context["triage_form"] = {"id": message_id, "form": form}
    return render(request, "dashboard.html", context, status_code=422)
