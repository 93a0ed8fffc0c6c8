"""HTTP routes for helpers."""

from __future__ import annotations

from fastapi import APIRouter, Response

from aidmatch.database import SessionDep
from aidmatch.deps import Coordinator, SettingsDep
from aidmatch.helpers import service
from aidmatch.helpers.schemas import HelperCreated, HelperFull, HelperIn
from aidmatch.query import PageDep
from aidmatch.schemas import Page

router = APIRouter(prefix="/api/helpers", tags=["helpers"])


def task_link(settings_public_url: str, secret: str | None) -> str | None:
    return f"{settings_public_url.rstrip('/')}/tasks/{secret}" if secret else None


@router.post("", status_code=201, response_model=HelperCreated)
def register_helper(
    helper_in: HelperIn, session: SessionDep, settings: SettingsDep, response: Response
) -> HelperCreated:
    """Register as a helper. A phone already registered returns that helper (200), without its link."""
    helper, secret = service.register(session=session, helper_in=helper_in)
    session.commit()
    if secret is None:
        response.status_code = 200
    out = HelperCreated.model_validate(helper)
    out.task_link = task_link(settings.public_url, secret)
    return out


@router.get("", response_model=Page[HelperFull])
def list_helpers(session: SessionDep, page: PageDep, _: Coordinator) -> Page[HelperFull]:
    """All helpers with their phones (coordinators)."""
    helpers, total = service.list_helpers(session=session, page=page)
    return Page[HelperFull](
        items=[HelperFull.model_validate(h) for h in helpers], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/{helper_id}", response_model=HelperFull)
def get_helper(helper_id: int, session: SessionDep, _: Coordinator) -> HelperFull:
    """One helper with their phone (coordinators)."""
    return HelperFull.model_validate(service.get(session=session, helper_id=helper_id))
