"""Service-wide switches shared by every worker (kept in the database, not in memory)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from aidmatch.database import Base, UTCDateTime, utcnow


class ServiceState(Base):
    """One named switch and its value, e.g. ``emergency`` → ``{"enabled": true, ...}``."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
