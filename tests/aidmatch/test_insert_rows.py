"""``database.insert_rows`` (psycopg's pipeline on PostgreSQL) against SQLAlchemy's Core insert.

The same rows — enums, JSON, timestamps in another zone, NULLs — written once each way into
the same tables read back equal, and the ids come back in the rows' order.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aidmatch.audit.models import AuditEvent
from aidmatch.database import insert_rows
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.messages.models import Message

_AUDIT = typing.cast(Table, AuditEvent.__table__)
_MESSAGES = typing.cast(Table, Message.__table__)
_MSK = timezone(timedelta(hours=3))


def _messages(tag: str, n: int) -> list[dict[str, Any]]:
    at = datetime(2026, 11, 28, 12, 30, tzinfo=_MSK)  # stored as 09:30 UTC either way
    return [
        {
            "direction": MessageDirection.outbound,
            "status": MessageStatus.queued,
            "channel": "sms",
            "need_id": None,
            "match_id": None,
            "helper_id": None,
            "phone": f"+7900{k:07d}",
            "body": f"{tag} body {k} «ёж»",
            "language": "ru",
            "idempotency_key": f"{tag}:{k}",
            "attempts": 0,
            "created_at": at,
            "updated_at": at + timedelta(seconds=k),
        }
        for k in range(n)
    ]


def _audit(tag: str, n: int) -> list[dict[str, Any]]:
    now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    details: list[dict[str, Any]] = [
        {},
        {"need": 7, "wave": None},
        {"source": "api", "urgency": "critical", "ü": [1, 2]},
    ]
    return [
        {"at": now, "actor": tag, "action": "asked", "entity": "match", "entity_id": k, "detail": details[k % 3]}
        for k in range(n)
    ]


def _read(db: Session, model: Any, ids: list[int]) -> list[tuple[Any, ...]]:
    table = model.__table__
    rows = db.execute(select(table).where(table.c.id.in_(ids)).order_by(table.c.id)).all()
    return [tuple(r)[1:] for r in rows]  # without the id


def test_insert_rows_writes_what_the_core_insert_writes(db: Session) -> None:
    for table, model, make in ((_MESSAGES, Message, _messages), (_AUDIT, AuditEvent, _audit)):
        ours = make("ours", 7)
        ids = insert_rows(db, table, ours, returning_ids=True)
        theirs = make("theirs", 7)
        core_ids = list(db.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), theirs))
        assert len(ids) == 7
        assert ids == sorted(ids)
        got, expected = _read(db, model, ids), _read(db, model, core_ids)
        if model is Message:  # the tags differ on purpose: compare with them swapped back
            expected = [
                tuple(str(v).replace("theirs", "ours") if isinstance(v, str) else v for v in r) for r in expected
            ]
        else:
            expected = [tuple("ours" if v == "theirs" else v for v in r) for r in expected]
        assert got == expected
        # The ids name the rows in the order given.
        keys = db.execute(
            select(table.c.id, table.c.entity_id if model is AuditEvent else table.c.idempotency_key).where(
                table.c.id.in_(ids)
            )
        ).tuples()
        by_id: dict[int, Any] = dict(keys.all())
        assert [by_id[i] for i in ids] == [r["entity_id" if model is AuditEvent else "idempotency_key"] for r in ours]
    stored = db.scalar(select(Message.created_at).where(Message.idempotency_key == "ours:0"))
    assert stored == datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    assert insert_rows(db, _AUDIT, []) == []
    assert insert_rows(db, _AUDIT, _audit("plain", 2)) == []
    assert db.scalar(select(AuditEvent.detail).where(AuditEvent.actor == "plain", AuditEvent.entity_id == 1)) == {
        "need": 7,
        "wave": None,
    }
    db.rollback()


def test_a_column_left_to_its_default_goes_through_sqlalchemy(db: Session) -> None:
    """``at`` and ``detail`` have Python-side defaults: left out, SQLAlchemy fills them in."""
    rows = [{"actor": "defaults", "action": "seen", "entity": "need", "entity_id": k} for k in range(3)]
    ids = insert_rows(db, _AUDIT, rows, returning_ids=True)
    events = list(db.scalars(select(AuditEvent).where(AuditEvent.id.in_(ids)).order_by(AuditEvent.id)))
    assert [e.entity_id for e in events] == [0, 1, 2]
    assert all(e.detail == {} and e.at is not None for e in events)
    db.rollback()


def test_a_duplicate_key_raises_as_sqlalchemy_raises_it(db: Session) -> None:
    insert_rows(db, _MESSAGES, _messages("dup", 2))
    with pytest.raises(IntegrityError):
        insert_rows(db, _MESSAGES, _messages("dup", 1))
    db.rollback()
    with pytest.raises(IntegrityError) as failed:
        insert_rows(db, _MESSAGES, _messages("again", 2) + _messages("again", 1), returning_ids=True)
    db.rollback()
    # Logged as it is, the error carries no one's phone or text (as the engine's own errors).
    assert "+79000000001" not in str(failed.value)
    assert "again body" not in str(failed.value)
