"""An offer: what a helper can do, from where, how far and until when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aidmatch.categories import Category
from aidmatch.columns import enum_type
from aidmatch.database import Base, UTCDateTime, utcnow
from aidmatch.enums import OfferStatus
from aidmatch.helpers.models import Helper


class OfferCategory(Base):
    """One category an offer serves (an offer with several sits in several matcher trees)."""

    __tablename__ = "offer_categories"

    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"), primary_key=True)
    category: Mapped[Category] = mapped_column(enum_type(Category, "category"), primary_key=True)


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint("capacity > 0", name="capacity_positive"),
        CheckConstraint("capacity_used >= 0 AND capacity_used <= capacity", name="used_in_range"),
        CheckConstraint("radius_km > 0", name="radius_positive"),
        CheckConstraint("lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180", name="coordinates"),
        Index("ix_offers_status_updated_at", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    helper_id: Mapped[int] = mapped_column(ForeignKey("helpers.id", ondelete="CASCADE"), index=True)
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    # Units taken by accepted matches; changed only by conditional updates.
    capacity_used: Mapped[int] = mapped_column(Integer, default=0)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(500))
    radius_km: Mapped[float] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(Text)
    available_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    available_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[OfferStatus] = mapped_column(enum_type(OfferStatus, "offer_status"), default=OfferStatus.active)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Indexed: each worker's live offer index asks for the rows stamped after the newest it has seen.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, index=True)

    helper: Mapped[Helper] = relationship(lazy="joined")
    category_rows: Mapped[list[OfferCategory]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by=OfferCategory.category
    )

    @property
    def categories(self) -> list[Category]:
        order = list(Category)
        return sorted((row.category for row in self.category_rows), key=order.index)
