"""Recording and reading the audit log.

Who acts travels with the database session (``session.info["actor"]``): set by the request's
authentication (token or private link), the SMS webhook, the CLI or the scheduler job; a call
with none of these is "anonymous". A record joins the caller's transaction, so it lands exactly
when the change it describes does.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from aidmatch.audit.models import AuditEvent
from aidmatch.database import insert_rows, utcnow
from aidmatch.query import PageParams, paginate

ANONYMOUS = "anonymous"
_TABLE = typing.cast(Table, AuditEvent.__table__)


def act_as(session: Session, actor: str) -> None:
    """Who the following changes in this session are made by."""
    session.info["actor"] = actor[:160]


def actor_of(session: Session) -> str:
    return str(session.info.get("actor", ANONYMOUS))


def record(session: Session, action: str, entity: str, entity_id: int | None = None, **detail: Any) -> None:
    """One status change of one thing."""
    session.add(
        AuditEvent(
            at=utcnow(), actor=actor_of(session), action=action, entity=entity, entity_id=entity_id, detail=detail
        )
    )


def record_many(session: Session, action: str, entity: str, ids: Iterable[int], **detail: Any) -> None:
    """The same status change of many things (a bulk update), one row each."""
    now, actor = utcnow(), actor_of(session)
    rows = [
        {"at": now, "actor": actor, "action": action, "entity": entity, "entity_id": int(i), "detail": detail}
        for i in ids
    ]
    if rows:
        insert_rows(session, _TABLE, rows)  # through the table: the ORM's bulk insert costs more Python


def record_each(session: Session, events: Iterable[tuple[str, str, int, dict[str, Any]]]) -> None:
    """Status changes of many things, each its own (action, entity, id, detail), in one statement
    (what ``record`` would write for each, in this order)."""
    now, actor = utcnow(), actor_of(session)
    rows = [
        {"at": now, "actor": actor, "action": a, "entity": e, "entity_id": int(i), "detail": d} for a, e, i, d in events
    ]
    if rows:
        insert_rows(session, _TABLE, rows)


def list_events(
    *, session: Session, page: PageParams, entity: str | None = None, entity_id: int | None = None
) -> tuple[list[AuditEvent], int]:
    stmt = select(AuditEvent)
    if entity is not None:
        stmt = stmt.where(AuditEvent.entity == entity)
    if entity_id is not None:
        stmt = stmt.where(AuditEvent.entity_id == entity_id)
    return paginate(session, stmt.order_by(AuditEvent.id.desc()), page)
