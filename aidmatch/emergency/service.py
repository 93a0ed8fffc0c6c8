"""Emergency mode, stored in the database so every worker and the CLI see the same switch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from aidmatch.audit import service as audit
from aidmatch.database import dialect_insert, utcnow
from aidmatch.emergency.models import ServiceState

_KEY = "emergency"


@dataclass(frozen=True, slots=True)
class EmergencyMode:
    enabled: bool
    changed_at: datetime | None
    changed_by: str | None
    note: str | None


def get(*, session: Session) -> EmergencyMode:
    row = session.get(ServiceState, _KEY, populate_existing=True)  # as stored now (``set_mode`` writes past the ORM)
    if row is None:
        return EmergencyMode(enabled=False, changed_at=None, changed_by=None, note=None)
    return EmergencyMode(
        enabled=bool(row.value.get("enabled", False)),
        changed_at=row.updated_at,
        changed_by=row.value.get("changed_by"),
        note=row.value.get("note"),
    )


def set_mode(*, session: Session, enabled: bool, changed_by: str, note: str | None = None) -> EmergencyMode:
    """Switch emergency mode on or off (the caller commits)."""
    now = utcnow()
    value = {"enabled": enabled, "changed_by": changed_by, "note": note}
    # One statement, the row created or changed: two first switches at once both succeed (the
    # later wins) instead of one failing on the key the other inserted.
    insert = dialect_insert(session)
    session.execute(
        insert(ServiceState)
        .values(key=_KEY, value=value, updated_at=now)
        .on_conflict_do_update(index_elements=[ServiceState.key], set_={"value": value, "updated_at": now})
    )
    audit.record(session, "switched_on" if enabled else "switched_off", "emergency", None, note=note)
    return get(session=session)
