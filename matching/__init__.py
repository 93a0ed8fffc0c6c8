"""matching: global, capacity-aware assignment of needs to offers (numpy + scipy only)."""

from matching.batch import (
    ALL_IN_RANGE_AT_CAPACITY,
    ALL_IN_RANGE_EXCLUDED,
    NO_OFFER_IN_RANGE,
    ONLY_TOO_FAR,
    SERVED,
    Assignment,
    match,
    objective,
)
from matching.candidates import CandidateEdges, build_candidates, offer_index
from matching.columns import CRITICAL, NORMAL, URGENCY_WEIGHT, URGENT, Needs, Offers
from matching.errors import InvalidInputError, MatchingError
from matching.online import in_reach, nearest_capable

__all__ = [
    "ALL_IN_RANGE_AT_CAPACITY",
    "ALL_IN_RANGE_EXCLUDED",
    "CRITICAL",
    "NORMAL",
    "NO_OFFER_IN_RANGE",
    "ONLY_TOO_FAR",
    "SERVED",
    "URGENCY_WEIGHT",
    "URGENT",
    "Assignment",
    "CandidateEdges",
    "InvalidInputError",
    "MatchingError",
    "Needs",
    "Offers",
    "build_candidates",
    "in_reach",
    "match",
    "nearest_capable",
    "objective",
    "offer_index",
]
