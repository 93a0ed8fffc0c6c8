"""``/metrics`` in the Prometheus text format (``prometheus-client``).

Request counts and latencies are this worker's own (a middleware). The rest is read from the
database when scraped, so every worker reports the same cluster-wide numbers: open needs by
category and urgency, match runs by status and the last run's duration, SMS by direction and
status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from aidmatch.enums import OPEN_NEED_STATUSES
from aidmatch.matches.models import MatchRun
from aidmatch.messages.models import Message
from aidmatch.needs.models import Need

log = logging.getLogger("aidmatch.metrics")


class DatabaseCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        needs = GaugeMetricFamily(
            "aidmatch_open_needs", "Open needs (with units not yet accepted)", labels=["category", "urgency"]
        )
        units = GaugeMetricFamily(
            "aidmatch_open_need_units", "Need units not yet accepted", labels=["category", "urgency"]
        )
        runs = GaugeMetricFamily("aidmatch_match_runs", "Batch match runs so far", labels=["status"])
        last = GaugeMetricFamily("aidmatch_match_run_last_seconds", "Duration of the last finished batch run")
        sms = GaugeMetricFamily("aidmatch_sms_messages", "SMS stored", labels=["direction", "status"])
        up = GaugeMetricFamily("aidmatch_database_up", "1 when this scrape could read the database, else 0")
        try:
            self._read(needs, units, runs, last, sms)
        except SQLAlchemyError:
            # The database down: the scrape still answers, with this worker's request counters and
            # this gauge at 0, so "database down" and "service down" look different.
            log.warning("metrics: the database could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (up, needs, units, runs, last, sms)

    def _read(
        self,
        needs: GaugeMetricFamily,
        units: GaugeMetricFamily,
        runs: GaugeMetricFamily,
        last: GaugeMetricFamily,
        sms: GaugeMetricFamily,
    ) -> None:
        with self._sessions() as session:
            for category, urgency, count, left in session.execute(
                select(
                    Need.category, Need.urgency, func.count(Need.id), func.sum(Need.quantity - Need.quantity_assigned)
                )
                .where(Need.status.in_(OPEN_NEED_STATUSES))
                .group_by(Need.category, Need.urgency)
            ):
                needs.add_metric([category.value, urgency.value], count)
                units.add_metric([category.value, urgency.value], left or 0)
            for status, count in session.execute(
                select(MatchRun.status, func.count(MatchRun.id)).group_by(MatchRun.status)
            ):
                runs.add_metric([status.value], count)
            finished = session.execute(
                select(MatchRun.started_at, MatchRun.finished_at)
                .where(MatchRun.finished_at.is_not(None))
                .order_by(MatchRun.id.desc())
                .limit(1)
            ).first()
            if finished is not None:
                last.add_metric([], (finished[1] - finished[0]).total_seconds())
            for direction, status, count in session.execute(
                select(Message.direction, Message.status, func.count(Message.id)).group_by(
                    Message.direction, Message.status
                )
            ):
                sms.add_metric([direction.value, status.value], count)


def _route_of(scope: Scope) -> str:
    """The route template (``/api/needs/{need_id}``) the router matched, not the raw path, so
    label values stay bounded."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


class _Measure:
    """ASGI middleware counting requests by method, route and status, and timing them."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def watch(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = _route_of(scope)
            self.requests.labels(scope["method"], route, str(status[0])).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI, sessions: sessionmaker[Session]) -> None:
    """Add the request middleware and ``GET /metrics`` (one registry per app)."""
    registry = CollectorRegistry()
    requests = Counter("aidmatch_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "aidmatch_http_request_seconds",
        "HTTP request duration",
        ["method", "route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    )
    registry.register(DatabaseCollector(sessions))

    app.add_middleware(_Measure, requests=requests, latency=latency)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: this worker's requests; open needs, runs and SMS from the database."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
