"""Errors raised by the matching package."""


class MatchingError(Exception):
    """Base of every matching error."""


class InvalidInputError(MatchingError, ValueError):
    """Need or offer columns that are malformed: NaN, out of range, mismatched lengths, …"""
