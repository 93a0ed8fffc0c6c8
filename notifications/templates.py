"""SMS texts in Russian and English. Short: Cyrillic SMS are UCS-2, 70 characters a segment."""

from __future__ import annotations


def urgent_request(*, language: str, what: str, quantity: int, distance_km: float, match_id: int) -> str:
    """The text asking a helper to take a critical need; the reply names the match id."""
    if language == "en":
        return f"URGENT: {what} x{quantity}, {distance_km:.1f} km from you. Reply YES {match_id} or NO {match_id}."
    return f"СРОЧНО: {what} x{quantity}, {distance_km:.1f} км от вас. Ответьте ДА {match_id} или НЕТ {match_id}."


def task_request(*, language: str, what: str, quantity: int, distance_km: float, match_id: int) -> str:
    """The text offering a helper a task that is not life-critical."""
    if language == "en":
        return f"Help needed: {what} x{quantity}, {distance_km:.1f} km from you. Reply YES {match_id} or NO {match_id}."
    return f"Нужна помощь: {what} x{quantity}, {distance_km:.1f} км от вас. Ответьте ДА {match_id} или НЕТ {match_id}."


def still_needed(*, language: str, code: str, what: str, hours_left: float) -> str:
    """Asks the author of a need whether it still stands, before it expires."""
    hours = max(1, round(hours_left))
    if language == "en":
        return f"Is your request {code} ({what}) still needed? Reply YES {code} within {hours} h or it will close."
    return f"Ваша заявка {code} ({what}) ещё актуальна? Ответьте ДА {code} в течение {hours} ч, иначе она закроется."
