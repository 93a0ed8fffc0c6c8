"""SMS segments: GSM-7 texts take 160 characters a segment (153 when split), anything else is
UCS-2 at 70 (67 when split). Cyrillic is UCS-2, so a Russian SMS is short."""

from __future__ import annotations

# The GSM 03.38 basic character set, and the extension table (each extension costs two septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")


def is_gsm7(text: str) -> bool:
    return all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text)


def _units(text: str) -> int:
    """Length in the encoding's units: septets for GSM-7, UTF-16 code units for UCS-2."""
    if is_gsm7(text):
        return sum(2 if c in _GSM_EXTENDED else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2


def segments(text: str) -> int:
    """How many SMS segments the text takes (0 for an empty text)."""
    units = _units(text)
    single, multi = (160, 153) if is_gsm7(text) else (70, 67)
    if units == 0:
        return 0
    return 1 if units <= single else -(-units // multi)


def fit(text: str, max_segments: int) -> str:
    """The text cut at a word boundary (with "…", or "..." in a GSM-7 text) so that it takes at most
    ``max_segments``."""
    if max_segments < 1:
        raise ValueError(f"max_segments = {max_segments} must be >= 1")
    if segments(text) <= max_segments:
        return text
    # "…" is not a GSM-7 character: after a GSM-7 text it would make the whole text UCS-2 (70
    # characters a segment instead of 160), so such a text ends with "..." instead.
    more = "..." if is_gsm7(text) else "…"
    words = text.split(" ")
    while len(words) > 1:
        words.pop()
        candidate = " ".join(words).rstrip(",.;:") + more
        if segments(candidate) <= max_segments:
            return candidate
    # One very long word: cut characters.
    out = text
    while out and segments(out + more) > max_segments:
        out = out[:-1]
    return out + more
