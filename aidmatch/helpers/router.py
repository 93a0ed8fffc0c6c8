"""HTTP routes for helpers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from aidmatch.database import SessionDep
from aidmatch.deps import Coordinator, SettingsDep
from aidmatch.errors import ConflictError
from aidmatch.helpers import service
from aidmatch.helpers.schemas import HelperCreated, HelperFull, HelperIn, HelperLink
from aidmatch.limits import limit_public_posts
from aidmatch.query import PageDep
from aidmatch.schemas import Page, RowId

router = APIRouter(prefix="/api/helpers", tags=["helpers"])


def task_link(settings_public_url: str, secret: str | None) -> str | None:
    return f"{settings_public_url.rstrip('/')}/tasks/{secret}" if secret else None


@router.post(
    "",
    status_code=201,
    response_model=HelperCreated,
    responses={409: {"description": "phone taken"}},
    dependencies=[Depends(limit_public_posts)],
)
def register_helper(helper_in: HelperIn, session: SessionDep, settings: SettingsDep) -> HelperCreated:
    """Register as a helper. A phone already registered is refused (409) without showing its helper."""
    helper, secret = service.register(session=session, helper_in=helper_in)
    if secret is None:
        raise ConflictError("a helper with this phone number is already registered")
    session.commit()
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
def get_helper(helper_id: RowId, session: SessionDep, _: Coordinator) -> HelperFull:
    """One helper with their phone (coordinators)."""
    return HelperFull.model_validate(service.get(session=session, helper_id=helper_id))


@router.post("/{helper_id}/link", response_model=HelperLink)
def replace_link(helper_id: RowId, session: SessionDep, settings: SettingsDep, _: Coordinator) -> HelperLink:
    """A new private task link for the helper (coordinators), shown this once: the old one stops working."""
    helper, secret = service.new_link(session=session, helper_id=helper_id)
    session.commit()
    link = task_link(settings.public_url, secret)
    assert link is not None
    return HelperLink(helper_id=helper.id, task_link=link)


@router.delete("/{helper_id}/link", status_code=204, response_class=Response)
def revoke_link(helper_id: RowId, session: SessionDep, _: Coordinator) -> Response:
    """The helper's private task link stops working (coordinators); SMS replies still work."""
    service.revoke_link(session=session, helper_id=helper_id)
    session.commit()
    return Response(status_code=204)
