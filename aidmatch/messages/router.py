"""HTTP routes for the SMS log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aidmatch.database import SessionDep
from aidmatch.deps import Coordinator
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.messages import service
from aidmatch.messages.schemas import MessageOut
from aidmatch.query import PageDep
from aidmatch.schemas import Page

router = APIRouter(prefix="/api/messages", tags=["messages"])


@router.get("", response_model=Page[MessageOut])
def list_messages(
    session: SessionDep,
    _: Coordinator,
    page: PageDep,
    direction: Annotated[list[MessageDirection] | None, Query()] = None,
    status: Annotated[list[MessageStatus] | None, Query()] = None,
) -> Page[MessageOut]:
    """Every SMS in and out, newest first (coordinators)."""
    rows, total = service.list_messages(session=session, page=page, direction=direction or (), status=status or ())
    return Page[MessageOut](
        items=[MessageOut.model_validate(m) for m in rows], total=total, limit=page.limit, offset=page.offset
    )
