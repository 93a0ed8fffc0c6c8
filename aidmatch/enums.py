"""Enumerations shared by several domain slices. Stored as their string values."""

from __future__ import annotations

from enum import StrEnum


class Urgency(StrEnum):
    critical = "critical"  # life-safety: starts SMS escalation waves
    urgent = "urgent"
    normal = "normal"


class Language(StrEnum):
    ru = "ru"
    en = "en"


class Source(StrEnum):
    web = "web"
    sms = "sms"
    api = "api"
    import_ = "import"


class NeedStatus(StrEnum):
    open = "open"
    partially_assigned = "partially_assigned"
    assigned = "assigned"
    fulfilled = "fulfilled"
    expired = "expired"
    cancelled = "cancelled"
    duplicate = "duplicate"


OPEN_NEED_STATUSES = (NeedStatus.open, NeedStatus.partially_assigned)


class OfferStatus(StrEnum):
    active = "active"
    paused = "paused"
    expired = "expired"


class MatchStatus(StrEnum):
    proposed = "proposed"
    notified = "notified"
    accepted = "accepted"
    completed = "completed"
    declined = "declined"
    timed_out = "timed_out"
    cancelled = "cancelled"


class VettingTier(StrEnum):
    unverified = "unverified"
    verified = "verified"
    organisation = "organisation"


class Role(StrEnum):
    coordinator = "coordinator"
    volunteer = "volunteer"


class MessageDirection(StrEnum):
    inbound = "inbound"
    outbound = "outbound"


class MessageStatus(StrEnum):
    # inbound
    received = "received"
    parsed = "parsed"
    unparsed = "unparsed"  # kept for coordinator triage
    # outbound
    queued = "queued"
    sending = "sending"
    sent = "sent"
    delivered = "delivered"
    failed = "failed"
    suppressed = "suppressed"  # not sent on purpose: recipient opted out (STOP), or the request was withdrawn


class MatchRunStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    skipped = "skipped"
