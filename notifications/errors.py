"""Errors raised by the notifications package."""


class NotificationsError(Exception):
    """Base of every notifications error."""


class InvalidPhoneError(NotificationsError, ValueError):
    """A phone number that cannot be a real number."""
