"""Scheduled jobs: the batch matcher (in emergency mode), the lifecycle upkeep and the outbox drain.

Every job runs in one transaction under a leader lock, so with several workers exactly one runs
per tick: on PostgreSQL a transaction-level advisory lock (``pg_try_advisory_xact_lock``, freed at
commit, rollback or when a crashed worker's connection closes); on SQLite, where one process runs
the service, a lock per process. A worker that does not get the lock skips the tick. The outbox
drain needs no leader: any number of drains claim messages with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.audit.service import act_as
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.emergency import service as emergency_service
from aidmatch.enums import MatchRunStatus
from aidmatch.matches import service as matches_service
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.models import MatchRun
from aidmatch.matches.upkeep import UpkeepReport, run_upkeep
from aidmatch.messages.outbox import drain
from notifications.ratelimit import Bucket
from notifications.senders import Sender

log = logging.getLogger("aidmatch.scheduler")

# Advisory lock keys (any 64-bit integers unique to aidmatch): "aidmatch" in ASCII, plus a job number.
BATCH_LOCK = 0x6169646D61746301
UPKEEP_LOCK = 0x6169646D61746302
_process_locks = {BATCH_LOCK: threading.Lock(), UPKEEP_LOCK: threading.Lock()}


def try_lead(session: Session, key: int) -> Callable[[], None] | None:
    """Take the leader lock for ``key`` in the session's transaction; None when another holds it.

    Returns the function that releases a process lock (a no-op on PostgreSQL, where the lock
    goes with the transaction). Call it after commit or rollback.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        if not session.scalar(select(func.pg_try_advisory_xact_lock(key))):
            return None
        return lambda: None
    lock = _process_locks[key]
    if not lock.acquire(blocking=False):
        return None
    return lock.release


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """A batch job's result: the run (None when skipped) and why it was skipped."""

    run: MatchRun | None
    skipped: str | None = None


def batch_job(
    *,
    sessions: sessionmaker[Session],
    trigger: str = "scheduler",
    now: datetime | None = None,
    require_emergency: bool = True,
    time_budget_s: float | None = matches_service.BATCH_TIME_BUDGET_S,
) -> BatchOutcome:
    """One batch run under the leader lock, committed at once; a failure is recorded as a failed run."""
    with sessions() as session:
        act_as(session, f"system:{trigger}")
        if require_emergency and not emergency_service.get(session=session).enabled:
            return BatchOutcome(None, "emergency mode is off")
        release = try_lead(session, BATCH_LOCK)
        if release is None:
            session.rollback()
            return BatchOutcome(None, "another batch run holds the leader lock")
        started = now or utcnow()
        try:
            run = matches_service.run_batch(session=session, trigger=trigger, now=started, time_budget_s=time_budget_s)
            session.commit()
            return BatchOutcome(run)
        except Exception as exc:
            session.rollback()
            log.exception("batch run failed")
            failed = MatchRun(
                status=MatchRunStatus.failed,
                trigger=trigger,
                started_at=started,
                finished_at=utcnow(),
                error=f"{type(exc).__name__}: {exc}"[:2000],
            )
            session.add(failed)
            session.commit()
            return BatchOutcome(failed)
        finally:
            release()


def upkeep_job(
    *, sessions: sessionmaker[Session], settings: Settings, live: LiveOfferIndex, now: datetime | None = None
) -> UpkeepReport | None:
    """One upkeep pass under the leader lock, committed at once; None when another worker has it."""
    with sessions() as session:
        act_as(session, "system:upkeep")
        release = try_lead(session, UPKEEP_LOCK)
        if release is None:
            session.rollback()
            return None
        try:
            report = run_upkeep(session=session, settings=settings, live=live, now=now or utcnow())
            session.commit()
            return report
        except Exception:
            session.rollback()  # the live index re-reads what it took from the pass (``ChangeFeed``)
            raise
        finally:
            release()


def build_scheduler(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    live: LiveOfferIndex,
    sender: Sender,
    bucket: Bucket,
) -> BackgroundScheduler:
    """The in-process scheduler with its three jobs (not started)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}

    def batch() -> None:
        outcome = batch_job(sessions=sessions, time_budget_s=settings.batch_time_budget)
        if outcome.run is not None:
            log.info("batch run %s: %s", outcome.run.id, outcome.run.status.value)

    def upkeep() -> None:
        started = time.perf_counter()
        report = upkeep_job(sessions=sessions, settings=settings, live=live)
        if report is not None and any(report.as_dict().values()):
            log.info("upkeep in %.2f s: %s", time.perf_counter() - started, report.as_dict())

    def outbox() -> None:
        # A pass keeps sending as the bucket refills, until shortly before the next one is due.
        drain(
            sessions=sessions, sender=sender, settings=settings, bucket=bucket, pace_s=0.8 * settings.outbox_interval_s
        )

    scheduler.add_job(batch, "interval", seconds=settings.batch_interval_s, id="batch", **common)
    scheduler.add_job(outbox, "interval", seconds=settings.outbox_interval_s, id="outbox", **common)
    scheduler.add_job(upkeep, "interval", seconds=settings.escalation_interval_s, id="upkeep", **common)
    return scheduler
