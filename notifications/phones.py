"""Phone numbers: everything stored and texted is E.164, parsed with ``phonenumbers``."""

from __future__ import annotations

import functools
import re

import phonenumbers

from notifications.errors import InvalidPhoneError

_MAX_RAW_CHARS = 40


def normalize_phone(raw: str, *, default_region: str = "RU") -> str:
    """E.164 form of ``raw`` (``8 912 345-67-89`` → ``+79123456789`` with region RU).

    Raises InvalidPhoneError with the reason when it is not a valid number.
    """
    text = raw.strip()
    if not text:
        raise InvalidPhoneError("phone number is empty")
    if len(text) > _MAX_RAW_CHARS:
        raise InvalidPhoneError(f"phone number is {len(text)} characters long; at most {_MAX_RAW_CHARS}")
    return _normalize(text, default_region)


@functools.lru_cache(maxsize=4096)
def _normalize(text: str, default_region: str) -> str:
    # Cached: the same numbers come back (a conversation's SMS, a helper's answers), and parsing one
    # is most of what validating a post costs. Errors are raised anew each time, never cached.
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        # The number itself stays out of the message: error bodies never echo what was sent.
        raise InvalidPhoneError(
            f"not a valid phone number (numbers without a country code are read as {default_region})"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_DIGIT_RUN = re.compile(r"\+?\d[\d\s().,_/-]{5,}\d")
# Dates and times as the service writes them into texts ("[2026-11-28 00:51 UTC, api] …"): never a phone.
# Only real calendar dates (years 1900-2099) that no further digits continue: «8916-12-34-567» is a phone.
_DATE_TIME = re.compile(
    r"(?<![\d+-])(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!\d|-\d)(?:[ T]\d{2}:\d{2}(?::\d{2})?)?"
)


def _outside_dates(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans with the dates and times in ``text`` cut out; a piece left keeps its place only if it
    still holds 7 digits (so a number written right after a date stays hidden)."""
    dates = [(m.start(), m.end()) for m in _DATE_TIME.finditer(text)]
    if not dates:
        return spans
    out = []
    for start, end in spans:
        pieces = [(start, end)]
        for d_start, d_end in dates:
            pieces = [p for a, b in pieces for p in ((a, min(b, d_start)), (max(a, d_end), b)) if p[0] < p[1]]
        out += [(a, b) for a, b in pieces if sum(c.isdigit() for c in text[a:b]) >= 7]
    return out


def redact_phones(text: str, *, default_region: str = "RU") -> str:
    """``text`` with every phone number in it replaced by ``[phone hidden]``."""
    spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, default_region, leniency=0)]
    # PhoneNumberMatcher skips invalid-looking numbers; long digit runs are hidden anyway.
    spans += [(m.start(), m.end()) for m in _DIGIT_RUN.finditer(text) if sum(c.isdigit() for c in m.group()) >= 7]
    spans = _outside_dates(text, spans)
    if not spans:
        return text
    spans.sort()
    out, pos = [], 0
    for start, end in spans:
        if start < pos:
            start = pos
        if start >= end:
            continue
        out.append(text[pos:start])
        out.append("[phone hidden]")
        pos = end
    out.append(text[pos:])
    return "".join(out)
