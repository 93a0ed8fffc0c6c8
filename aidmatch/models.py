"""Every ORM model, imported once so ``Base.metadata`` is complete (Alembic, tests)."""

from aidmatch.audit.models import AuditEvent
from aidmatch.auth.models import ApiToken
from aidmatch.database import Base
from aidmatch.emergency.models import ServiceState
from aidmatch.helpers.models import Helper
from aidmatch.matches.models import Match, MatchRun
from aidmatch.messages.models import Message, SmsConversation, SmsOptOut
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Base",
    "Helper",
    "Match",
    "MatchRun",
    "Message",
    "Need",
    "Offer",
    "OfferCategory",
    "ServiceState",
    "SmsConversation",
    "SmsOptOut",
]
