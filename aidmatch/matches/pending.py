"""Requests still waiting for a helper's answer, and closing them (one place, one audit row each)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.enums import MatchStatus
from aidmatch.matches.models import Match

PENDING_MATCH_STATUSES = (MatchStatus.proposed, MatchStatus.notified)


def close_pending(
    session: Session,
    where: ColumnElement[bool],
    *,
    now: datetime,
    status: MatchStatus = MatchStatus.cancelled,
    **detail: Any,
) -> list[int]:
    """Close the unanswered requests matching ``where`` (cancelled by default, or timed out),
    each with an audit row carrying ``detail``; returns the ids of the needs they were for."""
    pending = Match.status.in_(PENDING_MATCH_STATUSES)
    # One statement closes them and says which it closed: a request accepted between a read and the
    # update would otherwise get a "timed_out" audit row although it was accepted.
    rows = session.execute(
        update(Match).where(pending, where).values(status=status, updated_at=now).returning(Match.id, Match.need_id)
    ).all()
    if rows:
        audit.record_many(session, status.value, "match", sorted(int(r[0]) for r in rows), **detail)
    return sorted({int(r[1]) for r in rows})
