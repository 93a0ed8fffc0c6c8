"""The audit log for coordinators."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from aidmatch.audit import service
from aidmatch.database import SessionDep
from aidmatch.deps import Coordinator
from aidmatch.query import PageDep
from aidmatch.schemas import MAX_ROW_ID, OutModel, Page

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditEventOut(OutModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: int | None
    detail: dict[str, Any]


@router.get("", response_model=Page[AuditEventOut])
def list_audit(
    session: SessionDep,
    _: Coordinator,
    page: PageDep,
    entity: Literal["need", "match", "offer", "helper", "run", "emergency", "token", "message"] | None = None,
    entity_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
) -> Page[AuditEventOut]:
    """Status changes, newest first, with who made them (coordinators)."""
    rows, total = service.list_events(session=session, page=page, entity=entity, entity_id=entity_id)
    return Page[AuditEventOut](
        items=[AuditEventOut.model_validate(r) for r in rows], total=total, limit=page.limit, offset=page.offset
    )
