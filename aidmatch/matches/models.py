"""Matches between needs and offers, and the batch runs that propose them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aidmatch.columns import enum_type
from aidmatch.database import Base, UTCDateTime, utcnow
from aidmatch.enums import MatchRunStatus, MatchStatus


class MatchRun(Base):
    """One batch run of the matcher: what went in, how it was set up, what came out and why."""

    __tablename__ = "match_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[MatchRunStatus] = mapped_column(
        enum_type(MatchRunStatus, "match_run_status"), default=MatchRunStatus.running
    )
    trigger: Mapped[str] = mapped_column(String(32), default="scheduler")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    needs_count: Mapped[int] = mapped_column(Integer, default=0)
    offers_count: Mapped[int] = mapped_column(Integer, default=0)
    matched_needs: Mapped[int] = mapped_column(Integer, default=0)
    unmatched_needs: Mapped[int] = mapped_column(Integer, default=0)
    assigned_quantity: Mapped[int] = mapped_column(Integer, default=0)
    total_distance_km: Mapped[float] = mapped_column(Float, default=0.0)
    seed: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings_s: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    unmatched_reasons: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class Match(Base):
    __tablename__ = "matches"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("distance_km >= 0", name="distance_nonnegative"),
        Index("ix_matches_need_id_status", "need_id", "status"),
        Index("ix_matches_offer_id_status", "offer_id", "status"),
        # A helper is asked about a need once, whatever the answer: several workers' batch runs,
        # escalation waves and declines may pick the same pair at once, and the database keeps one.
        Index("uq_matches_need_id_helper_id", "need_id", "helper_id", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    need_id: Mapped[int] = mapped_column(ForeignKey("needs.id", ondelete="CASCADE"))
    offer_id: Mapped[int] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"))
    # The offer's helper (it never changes). NULL only on rows written before migration 0007 that
    # repeated a pair asked before, so the unique index could be built over the rest.
    helper_id: Mapped[int | None] = mapped_column(ForeignKey("helpers.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("match_runs.id", ondelete="SET NULL"), index=True)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    distance_km: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[MatchStatus] = mapped_column(enum_type(MatchStatus, "match_status"), default=MatchStatus.proposed)
    wave: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Indexed: each worker's live tasks ask for the rows stamped after the newest they have seen.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, index=True)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
