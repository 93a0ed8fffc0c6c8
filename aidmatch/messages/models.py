"""Every SMS in and out, kept as it came even when it could not be understood."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aidmatch.columns import enum_type
from aidmatch.database import Base, UTCDateTime, utcnow
from aidmatch.enums import MessageDirection, MessageStatus


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_direction_status", "direction", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[MessageDirection] = mapped_column(enum_type(MessageDirection, "message_direction"))
    status: Mapped[MessageStatus] = mapped_column(enum_type(MessageStatus, "message_status"))
    channel: Mapped[str] = mapped_column(String(16), default="sms")
    # The other party: E.164 when it parsed, else exactly what the provider sent.
    phone: Mapped[str] = mapped_column(String(32), index=True)
    body: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    need_id: Mapped[int | None] = mapped_column(ForeignKey("needs.id", ondelete="SET NULL"), index=True)
    match_id: Mapped[int | None] = mapped_column(ForeignKey("matches.id", ondelete="SET NULL"), index=True)
    helper_id: Mapped[int | None] = mapped_column(ForeignKey("helpers.id", ondelete="SET NULL"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    parsed: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    send_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SmsOptOut(Base):
    """A phone that sent STOP: nothing is texted to it until it sends START."""

    __tablename__ = "sms_optouts"

    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SmsConversation(Base):
    """What a phone told us so far when a need or an offer by SMS is still missing something."""

    __tablename__ = "sms_conversations"

    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    asked: Mapped[str] = mapped_column(String(32), default="")  # what the last follow-up asked for
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RateBucket(Base):
    """A token bucket every worker shares (``aidmatch.messages.ratelimit.SharedTokenBucket``):
    its tokens as of ``at`` (seconds since the epoch); the rate and burst come from the settings."""

    __tablename__ = "rate_buckets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)


class DeliveryReport(Base):
    """A delivery callback for a message whose provider id is not stored yet (its send's answer
    was late or lost): kept until the outbox stores that id, then applied to the message."""

    __tablename__ = "delivery_reports"

    provider_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # the provider's word: delivered, undelivered…
    error_code: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
