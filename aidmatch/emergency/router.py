"""HTTP routes for emergency mode (coordinators)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request

from aidmatch.database import SessionDep
from aidmatch.deps import Coordinator, SettingsDep
from aidmatch.emergency import service
from aidmatch.emergency.schemas import EmergencyIn, EmergencyOut

router = APIRouter(prefix="/api/emergency", tags=["emergency"])


def _out(mode: service.EmergencyMode, batch_interval_s: float) -> EmergencyOut:
    return EmergencyOut(
        enabled=mode.enabled,
        changed_at=mode.changed_at,
        changed_by=mode.changed_by,
        note=mode.note,
        batch_interval_s=batch_interval_s,
    )


@router.get("", response_model=EmergencyOut)
def get_emergency(session: SessionDep, settings: SettingsDep, _: Coordinator) -> EmergencyOut:
    """Whether emergency mode is on (the batch matcher then runs every ``batch_interval_s``)."""
    return _out(service.get(session=session), settings.batch_interval_s)


@router.post("", response_model=EmergencyOut)
def set_emergency(
    body: EmergencyIn, request: Request, session: SessionDep, settings: SettingsDep, principal: Coordinator
) -> EmergencyOut:
    """Switch emergency mode on or off for every worker; switched on, the first batch runs at once."""
    mode = service.set_mode(session=session, enabled=body.enabled, changed_by=principal.name, note=body.note)
    session.commit()
    scheduler = request.app.state.scheduler
    if mode.enabled and scheduler is not None:
        scheduler.modify_job("batch", next_run_time=datetime.now(UTC))
    return _out(mode, settings.batch_interval_s)
