"""Message payloads (the SMS log for coordinators)."""

from __future__ import annotations

from datetime import datetime

from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.schemas import OutModel


class MessageOut(OutModel):
    id: int
    direction: MessageDirection
    status: MessageStatus
    channel: str
    phone: str
    body: str
    language: str | None
    need_id: int | None
    match_id: int | None
    helper_id: int | None
    attempts: int
    error: str | None
    created_at: datetime
    sent_at: datetime | None
