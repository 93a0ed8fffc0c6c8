"""A need: something a person or a place affected by the emergency lacks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aidmatch.categories import Category
from aidmatch.columns import enum_type
from aidmatch.database import Base, UTCDateTime, utcnow
from aidmatch.enums import Language, NeedStatus, Source, Urgency


class Need(Base):
    __tablename__ = "needs"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("quantity_assigned >= 0 AND quantity_assigned <= quantity", name="assigned_in_range"),
        CheckConstraint("lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180", name="coordinates"),
        Index("ix_needs_status_category", "status", "category"),
        Index("ix_needs_escalation_next_at", "escalation_next_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    category: Mapped[Category] = mapped_column(enum_type(Category, "category"))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    # Units already taken by accepted matches; changed only by conditional updates.
    quantity_assigned: Mapped[int] = mapped_column(Integer, default=0)
    urgency: Mapped[Urgency] = mapped_column(enum_type(Urgency, "urgency"), default=Urgency.normal)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(500))
    location_accuracy_m: Mapped[float | None] = mapped_column(Float)
    max_distance_km: Mapped[float | None] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(Text)
    contact_name: Mapped[str | None] = mapped_column(String(200))
    contact_phone: Mapped[str | None] = mapped_column(String(20), index=True)
    language: Mapped[Language] = mapped_column(enum_type(Language, "language"), default=Language.ru)
    source: Mapped[Source] = mapped_column(enum_type(Source, "source"), default=Source.web)
    status: Mapped[NeedStatus] = mapped_column(enum_type(NeedStatus, "need_status"), default=NeedStatus.open)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("needs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, index=True)
    needed_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the "still needed?" message was queued; cleared when the need is re-confirmed.
    reconfirm_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Escalation of a critical need: the wave now running (1-based) and when the next step is
    # due (the next wave, or the end of the last one); None once it has stopped.
    escalation_wave: Mapped[int | None] = mapped_column(Integer)
    escalation_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A post with an ``Idempotency-Key`` header: the key's SHA-256 and the body's. Posting the same
    # key again answers with this need instead of making another (a retry after a lost answer).
    idempotency_key: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    idempotency_body: Mapped[str | None] = mapped_column(String(64))
