"""A helper: a person or an organisation that offers help."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aidmatch.columns import enum_type
from aidmatch.database import Base, UTCDateTime, utcnow
from aidmatch.enums import Language, VettingTier


class Helper(Base):
    __tablename__ = "helpers"
    __table_args__ = (CheckConstraint("max_active_tasks > 0", name="max_active_tasks_positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    language: Mapped[Language] = mapped_column(enum_type(Language, "language"), default=Language.ru)
    is_organisation: Mapped[bool] = mapped_column(Boolean, default=False)
    # STOP/START by SMS flips this; nothing is texted to a helper without it.
    sms_consent: Mapped[bool] = mapped_column(Boolean, default=True)
    vetting_tier: Mapped[VettingTier] = mapped_column(
        enum_type(VettingTier, "vetting_tier"), default=VettingTier.unverified
    )
    max_active_tasks: Mapped[int] = mapped_column(Integer, default=3)
    # SHA-256 of the helper's private task link; the link itself is shown once.
    link_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Indexed: each worker's live tasks follow the caps by the rows stamped after the newest seen.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, index=True)
