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


def help_arrived(*, language: str, code: str, what: str) -> str:
    """Asks the author of a need whose every unit a helper took, when it was due to expire: done?"""
    if language == "en":
        return f"Request {code} ({what}): has help arrived? Reply DONE {code}. Still waiting? Reply YES {code}."
    return f"Заявка {code} ({what}): помощь пришла? Ответьте ГОТОВО {code}. Ещё ждёте — ДА {code}."


def task_done_reminder(*, language: str, match_id: int, what: str) -> str:
    """To a helper whose accepted task is still open when its need was due to expire."""
    if language == "en":
        return f"Task {match_id} ({what}): helped already? Reply DONE {match_id}. Cannot go? NO {match_id}."
    return f"Задача {match_id} ({what}): уже помогли — ГОТОВО {match_id}. Не сможете — НЕТ {match_id}."


def task_still_waiting(*, language: str, match_id: int, what: str) -> str:
    """To a helper with an accepted task whose author says help has not come yet."""
    if language == "en":
        return f"Task {match_id} ({what}): they are still waiting for you. Cannot go? Reply NO {match_id}."
    return f"Задача {match_id} ({what}): вас всё ещё ждут. Не сможете — НЕТ {match_id}."


def need_received(*, language: str, code: str, what: str) -> str:
    """To the author of a need at once: its code."""
    if language == "en":
        return f"Request {code} received: {what}. We are looking for helpers and will text you. STATUS {code} to check."
    return f"Заявка {code} принята: {what}. Ищем помощь, сообщим по SMS. СТАТУС {code} — проверить."


def helper_signed_up(*, language: str) -> str:
    """To a phone signed up as a helper on the web or by a coordinator (not by SMS from it): what
    comes next, and STOP if someone else gave this number. No name or text from the form: whoever
    signs a stranger up must not be able to put words in our SMS to them."""
    if language == "en":
        return (
            "aidmatch: this number was signed up as a helper; requests for help will come by SMS. Not you? Reply STOP."
        )
    return "aidmatch: номер записан в помощники, просьбы о помощи придут по SMS. Не вы? Ответьте СТОП."


def helper_on_the_way(*, language: str, code: str, helper_name: str) -> str:
    """To the author of a need when a helper accepts it."""
    if language == "en":
        return f"Request {code}: {helper_name} accepted and will contact you."
    return f"Заявка {code}: {helper_name} взял(а) её и свяжется с вами."


def helper_cannot_come(*, language: str, code: str) -> str:
    """To the author of a need when a helper who accepted it gives the task back."""
    if language == "en":
        return f"Request {code}: the helper cannot come after all. We are looking for another one."
    return f"Заявка {code}: помощник не сможет приехать. Ищем другого, сообщим по SMS."


def task_called_off(*, language: str, match_id: int, what: str, why: str) -> str:
    """To a helper who accepted a task that no longer stands (the need was withdrawn, expired or merged)."""
    if language == "en":
        return f"Task {match_id} ({what}) is called off: {why}. No need to go. Thank you!"
    return f"Задача {match_id} ({what}) отменена: {why}. Ехать не нужно. Спасибо!"


def requester_contact(*, language: str, match_id: int, what: str, quantity: int, contact: str, address: str) -> str:
    """To the helper who accepted: how to reach the person in need."""
    where = f", {address}" if address else ""
    if language == "en":
        return f"Task {match_id}: {what} x{quantity}. Contact: {contact}{where}. Reply DONE {match_id} when delivered."
    return (
        f"Задача {match_id}: {what} x{quantity}. Контакт: {contact}{where}. Ответьте ГОТОВО {match_id}, когда поможете."
    )


_REPLIES: dict[str, tuple[str, str]] = {
    "help": (
        "Напишите, что нужно и где: «нужна вода, 3 чел, Белоомут». Помочь: «могу помочь: вода, 30 км, Рязань». "
        "Задачи: ДА/НЕТ/ГОТОВО номер. СТАТУС, СТОП.",
        "Text what you need and where: 'need water, 3 people, Beloomut'. To help: 'can help: water, 30 km, Ryazan'. "
        "Tasks: YES/NO/DONE number. STATUS, STOP.",
    ),
    "unparsed": ("Не поняли сообщение. ", "Sorry, we did not understand. "),
    "in_progress": ("Сообщение получено, обрабатываем.", "Message received, we are working on it."),
    "number_not_accepted": (
        "Не можем записать заявку с этого номера. Сообщение передано координаторам.",
        "We cannot register a request from this number. Your message was passed to the coordinators.",
    ),
    "thanks_waiting": (
        "Пожалуйста! Заявка ещё не принята: ответьте на наш вопрос выше.",
        "You are welcome! The request is not registered yet: please answer our question above.",
    ),
    "place_to_coordinators": (
        "Не смогли понять, где вы. Передали ваши сообщения координатору, с вами свяжутся.",
        "We could not tell where you are. Your messages went to a coordinator who will contact you.",
    ),
    "stop": ("Вы отписались от SMS aidmatch. СТАРТ — снова получать.", "You are unsubscribed. Send START to resume."),
    "start": ("Вы снова получаете SMS aidmatch.", "You will get aidmatch SMS again."),
    "offer_saved": (
        "Спасибо! Вы помощник: {what}, до {km:g} км. Задачи придут по SMS. СТОП — отписаться.",
        "Thank you! You help with {what} within {km:g} km. Tasks come by SMS. STOP to unsubscribe.",
    ),
    "place_not_found": (
        "Не нашли «{place}». Напишите ближайший город или село.",
        "Could not find '{place}'. Send the nearest town or village.",
    ),
    "taken": ("Задача {id} уже закрыта или занята. Спасибо!", "Task {id} is already taken or closed. Thank you!"),
    "at_limit": (
        "Задача {id} ждёт вас, но у вас уже {limit} взятых, это ваш предел. ГОТОВО номер или НЕТ номер, затем ДА {id}.",
        "Task {id} waits for you, but you hold {limit} accepted, your limit. Reply DONE or NO with a number, then YES {id}.",
    ),
    "declined": ("Хорошо, передадим задачу {id} другому.", "OK, task {id} goes to someone else."),
    "done": ("Спасибо! Задача {id} выполнена.", "Thank you! Task {id} is done."),
    "not_yours": ("Нет задачи {id} для вашего номера.", "There is no task {id} for your number."),
    "which_task": ("Укажите номер задачи: ДА номер или НЕТ номер.", "Which task? Reply YES number or NO number."),
    "nothing_pending": (
        "Нет заявок и задач, ждущих вашего ответа. СТАТУС — ваши заявки, ПОМОЩЬ — команды.",
        "Nothing is waiting for your answer. STATUS lists your requests, HELP the commands.",
    ),
    "confirmed": ("Заявка {code} продлена. Спасибо!", "Request {code} stays open. Thank you!"),
    "still_waiting": (
        "Заявка {code} ждёт помощника. Уже не нужна — НЕТ {code}.",
        "Request {code} waits for its helper. Not needed any more? Reply NO {code}.",
    ),
    "which_request": ("Какая заявка? Ответьте с кодом: {codes}.", "Which request? Reply with its code: {codes}."),
    "closed": ("Заявка {code} закрыта. Спасибо!", "Request {code} is closed. Thank you!"),
    "already_closed": ("Заявка {code} уже закрыта.", "Request {code} is closed already."),
    "too_many_open": (
        "У вас уже {count} открытых заявок. Закройте одну (ГОТОВО код) или позвоните координатору.",
        "You already have {count} open requests. Close one (DONE code) or call a coordinator.",
    ),
    "withdraw_one": (
        "Заявка {code} ({what}): уже не нужна — ответьте НЕТ {code}; помощь пришла — ГОТОВО {code}.",
        "Request {code} ({what}): not needed any more? Reply NO {code}. Help came? Reply DONE {code}.",
    ),
    "withdraw_which": (
        "Ваши заявки: {codes}. Уже не нужна — НЕТ код; помощь пришла — ГОТОВО код.",
        "Your requests: {codes}. Not needed any more: NO code. Help came: DONE code.",
    ),
    "withdraw_none": (
        "Хорошо, заявку не создаём. Открытых заявок у вас нет.",
        "OK, no request is made. You have no open requests.",
    ),
    "status_none": ("У вас нет открытых заявок и задач.", "You have no open requests or tasks."),
    "status_needs": ("Заявки: {items}.", "Requests: {items}."),
    "status_tasks": ("Задачи: {items}.", "Tasks: {items}."),
}


# How the STATUS reply names a need's or a task's state (the enums' values, in both languages).
STATE_WORDS: dict[str, tuple[str, str]] = {
    "open": ("ищем помощника", "looking for a helper"),
    "partially_assigned": ("часть взята", "partly taken"),
    "assigned": ("помощник едет", "a helper is coming"),
    "proposed": ("ждёт ответа", "waiting for your answer"),
    "notified": ("ждёт ответа", "waiting for your answer"),
    "accepted": ("принята", "accepted"),
}


def state_word(state: str, language: str) -> str:
    """A need's or a task's state as the STATUS reply says it (the state itself when unknown)."""
    ru, en = STATE_WORDS.get(state, (state, state))
    return en if language == "en" else ru


def sms_reply(key: str, language: str, **values: object) -> str:
    """A reply to an SMS, in the sender's language (Russian unless English)."""
    ru, en = _REPLIES[key]
    return (en if language == "en" else ru).format(**values)
