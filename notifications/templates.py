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


def need_received(*, language: str, code: str, what: str) -> str:
    """To the author of a need at once: its code."""
    if language == "en":
        return f"Request {code} received: {what}. We are looking for helpers and will text you. STATUS {code} to check."
    return f"Заявка {code} принята: {what}. Ищем помощь, сообщим по SMS. СТАТУС — проверить."


def helper_on_the_way(*, language: str, code: str, helper_name: str) -> str:
    """To the author of a need when a helper accepts it."""
    if language == "en":
        return f"Request {code}: {helper_name} accepted and will contact you."
    return f"Заявка {code}: {helper_name} взял(а) её и свяжется с вами."


def requester_contact(*, language: str, match_id: int, what: str, quantity: int, contact: str, address: str) -> str:
    """To the helper who accepted: how to reach the person in need."""
    where = f", {address}" if address else ""
    if language == "en":
        return f"Task {match_id}: {what} x{quantity}. Contact: {contact}{where}. Reply DONE {match_id} when delivered."
    return f"Задача {match_id}: {what} x{quantity}. Контакт: {contact}{where}. Ответьте ГОТОВО {match_id}, когда поможете."
