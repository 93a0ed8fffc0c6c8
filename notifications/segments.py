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


def _widths(text: str, gsm: bool) -> list[int]:
    """Each character's length in the encoding's units: septets for GSM-7 (an extension character
    is an escape and itself), UTF-16 code units for UCS-2 (a character beyond the BMP, an emoji, is
    a surrogate pair)."""
    if gsm:
        return [2 if c in _GSM_EXTENDED else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def segments(text: str) -> int:
    """How many SMS segments the text takes (0 for an empty text).

    A split text's segments hold 153 septets or 67 code units each, and a character whose two units
    (an escape and its character, a surrogate pair) would straddle a boundary moves whole to the
    next segment, as phones split it.
    """
    if not text:
        return 0
    gsm = is_gsm7(text)
    widths = _widths(text, gsm)
    single, multi = (160, 153) if gsm else (70, 67)
    if sum(widths) <= single:
        return 1
    count, used = 1, 0
    for width in widths:
        if used + width > multi:
            count, used = count + 1, 0
        used += width
    return count


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
