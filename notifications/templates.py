"""SMS texts in Russian and English. Short: Cyrillic SMS are UCS-2, 70 characters a segment."""

from __future__ import annotations


def urgent_request(*, language: str, what: str, quantity: int, distance_km: float, match_id: int) -> str:
    """The text asking a helper to take a critical need; the reply names the match id."""
    if language == "en":
        return f"URGENT: {what} x{quantity}, {distance_km:.1f} km from you. Reply YES {match_id} or NO {match_id}."
    return f"СРОЧНО: {what} x{quantity}, {distance_km:.1f} км от вас. Ответьте ДА {match_id} или НЕТ {match_id}."
