"""Match and match-run payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aidmatch.enums import MatchRunStatus, MatchStatus
from aidmatch.schemas import InModel, OutModel


class MatchOut(OutModel):
    id: int
    need_id: int
    offer_id: int
    run_id: int | None
    quantity: int
    distance_km: float
    reason: str
    status: MatchStatus
    wave: int | None
    created_at: datetime
    updated_at: datetime
    responded_at: datetime | None


class MatchAction(InModel):
    """Who acts: a coordinator's bearer token, or the helper's own private task link."""

    link: str | None = None


class MatchRunOut(OutModel):
    id: int
    status: MatchRunStatus
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    needs_count: int
    offers_count: int
    matched_needs: int
    unmatched_needs: int
    assigned_quantity: int
    total_distance_km: float
    unmatched_reasons: dict[str, Any]
    timings_s: dict[str, Any]


class UnmetNeedOut(OutModel):
    """An open need with units nobody holds, and why (no contact data)."""

    id: int
    code: str | None
    category: str
    urgency: str
    units: int
    lat: float
    lon: float
    age_s: float
    reason: str
    nearest_helper_km: float | None
