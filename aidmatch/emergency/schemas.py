"""Emergency mode in and out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool  # 0/1 or "yes" are refused: this switch must be meant
    note: Annotated[str | None, Field(max_length=500)] = None


class EmergencyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    enabled: bool
    changed_at: datetime | None
    changed_by: str | None
    note: str | None
    batch_interval_s: float
