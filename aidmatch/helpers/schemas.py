"""Helper payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from aidmatch.enums import Language, VettingTier
from aidmatch.schemas import InModel, OutModel, Phone, ShortText


class HelperIn(InModel):
    name: ShortText
    phone: Phone
    language: Language = Language.ru
    is_organisation: bool = False
    max_active_tasks: Annotated[int, Field(ge=1, le=1000)] = 3


class HelperPublic(OutModel):
    id: int
    name: str
    language: Language
    is_organisation: bool
    vetting_tier: VettingTier
    created_at: datetime


class HelperFull(HelperPublic):
    phone: str
    sms_consent: bool
    max_active_tasks: int
    updated_at: datetime


class HelperCreated(HelperPublic):
    """Answer to a new registration: the private task link is shown this once."""

    task_link: str | None = None


class HelperLink(OutModel):
    """A helper's new private task link, shown this once (only its hash is stored)."""

    helper_id: int
    task_link: str
