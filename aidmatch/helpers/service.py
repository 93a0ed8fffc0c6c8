"""Helpers: register, look up, list."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.auth.service import hash_secret
from aidmatch.database import dialect_insert, utcnow
from aidmatch.enums import Language, VettingTier
from aidmatch.errors import NotFoundError
from aidmatch.helpers.models import Helper
from aidmatch.helpers.schemas import HelperIn
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import SmsOptOut
from aidmatch.query import PageParams, paginate
from notifications.templates import helper_signed_up


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
    by_sms: bool = False,
) -> tuple[Helper, str | None]:
    """The helper with this phone, or a new one. For a new helper also the private link secret.

    A new helper has SMS consent unless the phone said STOP before. One signed up other than by an
    SMS from the phone itself (``by_sms``) is told so by SMS, with STOP if it was not them.
    Safe when two requests register the same phone at once: the insert is ON CONFLICT DO NOTHING.
    """
    helper = session.scalar(select(Helper).where(Helper.phone == phone))
    if helper is not None:
        return helper, None
    secret = new_link_secret()
    now = utcnow()
    values = {
        "name": name,
        "phone": phone,
        "language": language,
        "is_organisation": is_organisation,
        "max_active_tasks": max_active_tasks,
        "sms_consent": session.get(SmsOptOut, phone) is None,
        "vetting_tier": VettingTier.unverified,
        "link_hash": hash_secret(secret),
        "created_at": now,
        "updated_at": now,
    }
    insert = dialect_insert(session)
    new_id = session.scalar(
        insert(Helper).values(**values).on_conflict_do_nothing(index_elements=[Helper.phone]).returning(Helper.id)
    )
    helper = session.scalar(select(Helper).where(Helper.phone == phone))
    assert helper is not None  # inserted now or by the request we raced with
    if new_id is None:
        return helper, None
    if not by_sms:
        language_code = helper.language.value
        messages_service.queue(
            session=session,
            phone=phone,
            body=helper_signed_up(language=language_code),
            language=language_code,
            idempotency_key=f"helper:{helper.id}:signed-up",
            helper_id=helper.id,
        )
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


def new_link(*, session: Session, helper_id: int) -> tuple[Helper, str]:
    """A new private link for the helper (a coordinator's call, e.g. when one leaked): the old one
    stops working at once. Returns the helper and the new secret (stored only as its hash)."""
    helper = get(session=session, helper_id=helper_id)
    secret = new_link_secret()
    helper.link_hash = hash_secret(secret)
    helper.updated_at = utcnow()
    audit.record(session, "link_replaced", "helper", helper.id)
    session.flush()
    return helper, secret


def revoke_link(*, session: Session, helper_id: int) -> Helper:
    """The helper's private link stops working and no new one is made (SMS replies still work)."""
    helper = get(session=session, helper_id=helper_id)
    helper.link_hash = None
    helper.updated_at = utcnow()
    audit.record(session, "link_revoked", "helper", helper.id)
    session.flush()
    return helper


def get(*, session: Session, helper_id: int) -> Helper:
    helper = session.get(Helper, helper_id)
    if helper is None:
        raise NotFoundError(f"no helper with id {helper_id}")
    return helper


def list_helpers(*, session: Session, page: PageParams) -> tuple[list[Helper], int]:
    return paginate(session, select(Helper).order_by(Helper.id.desc()), page)
