"""Helpers: register, look up, list."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.auth.service import hash_secret
from aidmatch.database import utcnow
from aidmatch.enums import Language
from aidmatch.errors import NotFoundError
from aidmatch.helpers.models import Helper
from aidmatch.helpers.schemas import HelperIn
from aidmatch.query import PageParams, paginate


def new_link_secret() -> str:
    return secrets.token_urlsafe(24)


def get_or_create(
    *,
    session: Session,
    name: str,
    phone: str,
    language: Language,
    is_organisation: bool = False,
    max_active_tasks: int = 3,
) -> tuple[Helper, str | None]:
    """The helper with this phone, or a new one. For a new helper also the private link secret."""
    helper = session.scalar(select(Helper).where(Helper.phone == phone))
    if helper is not None:
        return helper, None
    secret = new_link_secret()
    now = utcnow()
    helper = Helper(
        name=name,
        phone=phone,
        language=language,
        is_organisation=is_organisation,
        max_active_tasks=max_active_tasks,
        sms_consent=True,
        link_hash=hash_secret(secret),
        created_at=now,
        updated_at=now,
    )
    session.add(helper)
    session.flush()
    return helper, secret


def register(*, session: Session, helper_in: HelperIn) -> tuple[Helper, str | None]:
    return get_or_create(
        session=session,
        name=helper_in.name,
        phone=helper_in.phone,
        language=helper_in.language,
        is_organisation=helper_in.is_organisation,
        max_active_tasks=helper_in.max_active_tasks,
    )


def get(*, session: Session, helper_id: int) -> Helper:
    helper = session.get(Helper, helper_id)
    if helper is None:
        raise NotFoundError(f"no helper with id {helper_id}")
    return helper


def list_helpers(*, session: Session, page: PageParams) -> tuple[list[Helper], int]:
    return paginate(session, select(Helper).order_by(Helper.id.desc()), page)
