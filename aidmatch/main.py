"""The FastAPI application factory. ``create_app()`` builds everything; importing builds nothing."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from aidmatch import __version__, accesslog
from aidmatch.audit.router import router as audit_router
from aidmatch.config import GeocoderKind, Settings
from aidmatch.database import make_engine, make_sessionmaker
from aidmatch.emergency.router import router as emergency_router
from aidmatch.errors import PROBLEM_RESPONSES, Problem, install_error_handlers, problem
from aidmatch.exports.router import router as exports_router
from aidmatch.headers import SecurityHeaders
from aidmatch.helpers.router import router as helpers_router
from aidmatch.limits import BodySizeLimit, make_limiters
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.live_needs import LiveNeeds
from aidmatch.matches.router import router as matches_router
from aidmatch.matches.service import UnmetStatsCache
from aidmatch.messages.outbox import make_sender
from aidmatch.messages.ratelimit import SharedTokenBucket
from aidmatch.messages.router import router as messages_router
from aidmatch.metrics import install_metrics
from aidmatch.needs.intake import IntakeGroups
from aidmatch.needs.intake import make_runner as make_intake_runner
from aidmatch.needs.router import router as needs_router
from aidmatch.offers.router import router as offers_router
from aidmatch.scheduler import build_scheduler
from aidmatch.sms.router import router as sms_router
from aidmatch.web import install as install_web
from geo.geocoding import GazetteerGeocoder, Geocoder, load_places, make_online_geocoder
from notifications.senders import Sender


def make_geocoder_factory(settings: Settings) -> Callable[[], Geocoder]:
    """A thread-safe lazy geocoder: the gazetteer takes seconds to load, so only on first use.

    ``settings.geocoder == "nominatim"`` puts Nominatim (rate-limited, cached) in front of the
    gazetteer; building it sends nothing over the network, only geocoding does.
    """
    lock = threading.Lock()
    built: list[Geocoder] = []

    def build() -> Geocoder:
        gazetteer = GazetteerGeocoder(load_places(settings.default_region))
        if settings.geocoder == GeocoderKind.nominatim:
            return make_online_geocoder(
                user_agent=settings.nominatim_user_agent,
                url=settings.nominatim_url,
                fallback=gazetteer,
                country=settings.default_region,
            )
        return gazetteer

    def factory() -> Geocoder:
        if not built:
            with lock:
                if not built:
                    built.append(build())
        return built[0]

    return factory


# The cyclic garbage collector's thresholds while serving (Python's are 700, 10, 10). A worker holds
# large live indexes and every request allocates thousands of objects, so with the defaults the
# collections stalled the workers: at 64 connections 814 POST/s with p99 202.6 ms, with these 902 and
# 925 POST/s with p99 102.6 and 89.4 ms (benchmarks/RESULTS.md, session 9). Cycles are still
# collected; the young generation less often, the oldest rarely.
GC_THRESHOLDS = (50_000, 20, 100)
HEALTH_TIMEOUT_S = 3.0  # /healthz answers 503 when the database takes longer


def create_app(
    settings: Settings | None = None, *, geocoder: Geocoder | None = None, sender: Sender | None = None
) -> FastAPI:
    """The aidmatch web service. ``settings`` default to the environment (AIDMATCH_*); ``geocoder``
    and ``sender`` replace the configured ones (tests)."""
    settings = settings or Settings()
    engine = make_engine(settings.database_url, echo=settings.database_echo)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gc.set_threshold(*GC_THRESHOLDS)
        accesslog.install()  # if uvicorn's access log is on, it shows no helper's private link
        if geocoder is None:
            # Load the gazetteer off the request path so the first address lookup is fast.
            threading.Thread(target=app.state.geocoder, name="gazetteer-warmup", daemon=True).start()
        if settings.scheduler_enabled:
            app.state.scheduler = build_scheduler(
                sessions=app.state.sessionmaker,
                settings=settings,
                live=app.state.live_index,
                sender=app.state.sender,
                bucket=app.state.sms_bucket,
            )
            app.state.scheduler.start()
        # The first unmet statistics, off the request path.
        app.state.unmet_stats.warm(app.state.live_index)
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                app.state.scheduler.shutdown(wait=True)
                app.state.scheduler = None
            app.state.unmet_stats.close()
            app.state.intake.close()
            engine.dispose()

    # /docs and /redoc from the package's own copies of Swagger UI and ReDoc: nothing from a CDN
    # (no network at run time, and no third-party script on the origin of the coordinators' cookie).
    app = FastAPIOffline(
        title="aidmatch",
        version=__version__,
        summary="Disaster mutual-aid matching: needs, offers, helpers, matches.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.live_index = LiveOfferIndex()
    app.state.live_needs = LiveNeeds()
    app.state.unmet_stats = UnmetStatsCache(
        settings.unmet_stats_cache_s,
        sessions=app.state.sessionmaker,
        needs=app.state.live_needs,
        stale_wait_s=settings.unmet_stats_stale_wait_s,
    )
    app.state.scheduler = None  # started by the lifespan when settings.scheduler_enabled
    app.state.sender = sender if sender is not None else make_sender(settings)
    # Shared by every worker (a row in the database): the provider's rate is the whole service's.
    app.state.sms_bucket = SharedTokenBucket(app.state.sessionmaker, "sms", settings.sms_rate_per_s)
    app.state.post_limiter, app.state.sms_limiter = make_limiters(settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(SecurityHeaders)
    install_metrics(app, app.state.sessionmaker)
    app.state.geocoder = (lambda: geocoder) if geocoder is not None else make_geocoder_factory(settings)
    app.state.intake = IntakeGroups(
        make_intake_runner(
            sessions=app.state.sessionmaker, settings=lambda: app.state.settings, live=app.state.live_index
        ),
        max_items=settings.intake_group_max,
        wait_s=settings.intake_group_wait_ms / 1000,
        gap_s=settings.intake_group_gap_ms / 1000,
    )

    install_error_handlers(app)
    app.include_router(needs_router)
    app.include_router(offers_router)
    app.include_router(helpers_router)
    app.include_router(matches_router)
    app.include_router(messages_router)
    app.include_router(emergency_router)
    app.include_router(sms_router)
    app.include_router(exports_router)
    app.include_router(audit_router)
    install_web(app, settings)  # the pages, including the landing page at /

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    pinging: list[asyncio.Future[None]] = []  # the round trip under way, shared by the probes meanwhile

    @app.get(
        "/healthz",
        tags=["ops"],
        responses={503: {"model": Problem, "description": "the database did not answer in time"}},
    )
    async def healthz() -> Any:
        """Liveness and database reachability: 503 when the database does not answer within
        ``HEALTH_TIMEOUT_S``. Probes that come while a round trip is under way wait for that one,
        so a database that hangs holds one thread of the pool, not one per probe."""
        # One hand-off to the thread pool for the round trip; a plain ``def`` route with a session
        # dependency took three (the dependency's enter and exit, and the route).
        if not pinging or pinging[0].done() or pinging[0].get_loop() is not asyncio.get_running_loop():
            pinging[:] = [asyncio.ensure_future(run_in_threadpool(ping))]
        try:
            await asyncio.wait_for(asyncio.shield(pinging[0]), HEALTH_TIMEOUT_S)
        except Exception as exc:  # a timeout, or the database refused or failed the connection
            reason = "did not answer in time" if isinstance(exc, TimeoutError) else "is unreachable"
            return problem(503, "database-unavailable", "Service unavailable", f"the database {reason}")
        return {"status": "ok", "database": engine.dialect.name}

    return app
