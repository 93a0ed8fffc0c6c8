"""Every user-facing string of the web pages, in Russian (default) and English, in one table."""

from __future__ import annotations

from typing import Final

from fastapi import Request

LANGUAGES: Final = ("ru", "en")
DEFAULT_LANGUAGE: Final = "ru"
LANG_COOKIE: Final = "aidmatch_lang"

# key: (Russian, English). Placeholders are str.format fields.
TEXTS: Final[dict[str, tuple[str, str]]] = {
    "site_name": ("Карта помощи", "Help map"),
    "tagline": (
        "Люди, пострадавшие от пожара, наводнения или мороза, просят о помощи — волонтёры рядом откликаются.",
        "People hit by a fire, flood or frost ask for help; volunteers nearby answer.",
    ),
    "nav_home": ("Главная", "Home"),
    "nav_need": ("Мне нужна помощь", "I need help"),
    "nav_offer": ("Я могу помочь", "I can help"),
    "nav_dashboard": ("Координаторам", "Coordinators"),
    "switch_language": ("English", "Русский"),
    "skip_to_content": ("К содержанию", "Skip to content"),
    # landing
    "landing_need_text": (
        "Опишите, что нужно: вам дадут код, по которому можно следить за заявкой.",
        "Tell us what you need; you get a code to follow your request.",
    ),
    "landing_offer_text": (
        "Укажите, чем и как далеко можете помочь: мы пришлём задачи рядом с вами.",
        "Say how and how far you can help: we send you tasks near you.",
    ),
    "landing_sms": (
        "Нет интернета? Отправьте SMS с тем, что нужно, и местом — например «вода 3 Тума».",
        "No internet? Send an SMS with what you need and where, e.g. “water 3 Tuma”.",
    ),
    "check_code": ("Проверить заявку по коду", "Check a request by its code"),
    "code_label": ("Код заявки", "Request code"),
    "check": ("Проверить", "Check"),
    # need form
    "need_title": ("Мне нужна помощь", "I need help"),
    "need_intro": (
        "Заполните форму. Номер телефона видят только координатор и волонтёр, который возьмёт заявку.",
        "Fill in the form. Only the coordinator and the volunteer who takes your request see your phone number.",
    ),
    "what_needed": ("Что нужно", "What is needed"),
    "choose": ("— выберите —", "— choose —"),
    "quantity": ("Сколько (человек, штук, мест)", "How many (people, items, places)"),
    "urgency": ("Срочность", "Urgency"),
    "urgency_critical": ("Угроза жизни", "Life in danger"),
    "urgency_urgent": ("Срочно", "Urgent"),
    "urgency_normal": ("Обычная", "Normal"),
    "where": ("Где", "Where"),
    "address": ("Населённый пункт, адрес", "Place or address"),
    "address_hint": (
        "Например: «Тума, ул. Ленина 5». Или нажмите «Моё местоположение».",
        "For example “Tuma, Lenina st. 5”. Or press “Use my location”.",
    ),
    "use_location": ("Моё местоположение", "Use my location"),
    "pick_on_map": ("Указать на карте", "Pick on the map"),
    "location_set": ("Точка выбрана: {lat}, {lon}", "Point chosen: {lat}, {lon}"),
    "location_failed": ("Не удалось определить местоположение", "Could not get your location"),
    "location_working": ("Определяем местоположение…", "Getting your location…"),
    "map_hint": ("Нажмите на карту, чтобы выбрать точку", "Click the map to choose the point"),
    "description": ("Что случилось, подробности", "What happened, details"),
    "contact_name": ("Ваше имя", "Your name"),
    "contact_phone": ("Телефон", "Phone"),
    "phone_hint": (
        "На этот номер придёт SMS с кодом и когда кто-то возьмёт заявку.",
        "We text the code to this number, and again when someone takes your request.",
    ),
    "optional": ("необязательно", "optional"),
    "submit_need": ("Отправить заявку", "Send the request"),
    "form_has_errors": ("Исправьте, пожалуйста:", "Please correct:"),
    # errors
    "err_category": ("Выберите, что нужно.", "Choose what is needed."),
    "err_categories": ("Отметьте хотя бы одно, чем можете помочь.", "Tick at least one way you can help."),
    "err_quantity": ("Укажите число от 1 до 10000.", "Give a number from 1 to 10000."),
    "err_capacity": ("Укажите число от 1 до 10000.", "Give a number from 1 to 10000."),
    "err_radius_km": ("Укажите расстояние от 1 до 500 км.", "Give a distance from 1 to 500 km."),
    "err_urgency": ("Выберите срочность.", "Choose the urgency."),
    "err_location": (
        "Укажите населённый пункт или адрес (или точку на карте).",
        "Give a place or an address (or a point on the map).",
    ),
    "err_address_unknown": (
        "Не нашли «{address}». Уточните название населённого пункта или выберите точку на карте.",
        "We could not find “{address}”. Check the place name or choose a point on the map.",
    ),
    "err_phone": (
        "Не похоже на номер телефона. Пример: +7 916 123-45-67.",
        "This does not look like a phone number. Example: +7 916 123-45-67.",
    ),
    "err_phone_required": ("Укажите телефон.", "Give a phone number."),
    "err_phone_taken": (
        "Этот номер уже зарегистрирован. Добавьте помощь со своей страницы задач (по личной ссылке) "
        "или SMS с этого номера: «могу помочь: вода, 30 км, город».",
        "This phone is registered already. Add help from your task page (your private link) "
        "or by SMS from that phone: “can help: water, 30 km, town”.",
    ),
    "offer_more": ("Предложить ещё помощь", "Offer more help"),
    "err_too_many_open": (
        "С этого телефона уже {limit} открытых заявок. Дождитесь ответа по ним или отмените лишние.",
        "This phone already has {limit} open needs. Wait for answers to them or cancel some first.",
    ),
    "err_too_long": ("Слишком длинный текст.", "The text is too long."),
    "err_available_until": ("Укажите дату и время в будущем.", "Give a date and time in the future."),
    "err_invalid": ("Неверное значение.", "Invalid value."),
    # status page
    "status_title": ("Заявка {code}", "Request {code}"),
    "status_new": (
        "Заявка принята. Запишите код: {code}. По нему можно проверить заявку на этой странице.",
        "Your request is registered. Write down its code: {code}. Use it to check the request on this page.",
    ),
    "your_code": ("Код заявки", "Request code"),
    "status": ("Состояние", "Status"),
    "need_status_open": ("Ищем помощника", "Looking for a helper"),
    "need_status_partially_assigned": ("Помощь частично найдена", "Help partly found"),
    "need_status_assigned": ("Помощник едет", "A helper is coming"),
    "need_status_fulfilled": ("Выполнено", "Done"),
    "need_status_expired": ("Срок заявки истёк", "Expired"),
    "need_status_cancelled": ("Отменена", "Cancelled"),
    "need_status_duplicate": ("Повтор другой заявки", "Duplicate of another request"),
    "helpers_asked": ("Спросили помощников", "Helpers asked"),
    "units_accepted": ("Взято помощниками", "Taken by helpers"),
    "units_done": ("Выполнено", "Delivered"),
    "created": ("Создана", "Created"),
    "stage_matched": ("Помощник найден", "Matched"),
    "stage_accepted": ("Помощник согласился", "Accepted"),
    "stage_fulfilled": ("Помощь оказана", "Fulfilled"),
    "yes": ("да", "yes"),
    "no": ("нет", "no"),
    "still_needed": ("Помощь всё ещё нужна", "Still needed"),
    "reconfirmed": ("Спасибо, заявка продлена.", "Thank you, the request stays open."),
    "not_found_code": ("Заявка с кодом «{code}» не найдена.", "No request has the code “{code}”."),
    "not_found": ("Страница не найдена.", "Page not found."),
    # offer form
    "offer_title": ("Я могу помочь", "I can help"),
    "offer_intro": (
        "Укажите, чем можете помочь и как далеко готовы ехать. Задачи рядом придут по SMS и на вашу личную страницу.",
        "Say how you can help and how far you can travel. Tasks nearby come by SMS and on your private page.",
    ),
    "offer_categories": ("Чем можете помочь", "How you can help"),
    "capacity": ("Сколько задач или единиц можете взять", "How many tasks or units you can take"),
    "radius_km": ("Как далеко готовы ехать, км", "How far you can travel, km"),
    "offer_address": ("Откуда (населённый пункт, адрес)", "From where (place or address)"),
    "available_until": ("Доступен до", "Available until"),
    "name": ("Имя или организация", "Name or organisation"),
    "phone": ("Телефон", "Phone"),
    "submit_offer": ("Предложить помощь", "Offer help"),
    "offer_done_title": ("Спасибо!", "Thank you!"),
    "offer_done_link": (
        "Ваша личная страница задач (сохраните ссылку, никому её не передавайте):",
        "Your private task page (keep the link, share it with nobody):",
    ),
    "offer_done_known": (
        "Этот номер уже зарегистрирован: задачи появятся на странице, ссылку на которую вы получили раньше.",
        "This phone is already registered: tasks appear on the page whose link you got before.",
    ),
    # tasks page
    "tasks_title": ("Мои задачи", "My tasks"),
    "tasks_intro": ("Здравствуйте, {name}! Это ваша личная страница.", "Hello, {name}! This is your private page."),
    "no_tasks": (
        "Пока задач нет. Загляните позже: новые задачи приходят и по SMS.",
        "No tasks yet. Come back later: new tasks also come by SMS.",
    ),
    "distance": ("Расстояние", "Distance"),
    "km": ("{km} км", "{km} km"),
    "needed": ("Нужно", "Needed"),
    "details": ("Подробности", "Details"),
    "requester_contact": ("Контакт", "Contact"),
    "contact_after_accept": (
        "Контакт появится после того, как вы согласитесь.",
        "The contact appears once you accept.",
    ),
    "contact_after_done": (
        "Задача выполнена: контакт больше не показывается.",
        "Task done: the contact is no longer shown.",
    ),
    "accept": ("Беру", "Accept"),
    "decline": ("Не могу", "Decline"),
    "cannot_come": ("Не смогу приехать", "I cannot come"),
    "complete": ("Сделано", "Done"),
    "match_status_proposed": ("Предложено вам", "Proposed to you"),
    "match_status_notified": ("Предложено вам", "Proposed to you"),
    "match_status_accepted": ("Вы взяли", "You accepted"),
    "match_status_completed": ("Выполнено", "Done"),
    "task_accepted": ("Вы взяли задачу. Свяжитесь с человеком.", "You accepted the task. Contact the person."),
    "task_declined": ("Задача передана другому помощнику.", "The task goes to another helper."),
    "task_completed": ("Спасибо! Задача выполнена.", "Thank you! The task is done."),
    "task_conflict": (
        "Это уже нельзя сделать: задачу взял кто-то другой или она закрыта.",
        "This cannot be done any more: someone else took the task or it is closed.",
    ),
    "task_limit": (
        "Вы уже взяли столько задач, сколько указали как предел. Отметьте выполненную или откажитесь от "
        "одной — и эту можно будет взять.",
        "You already hold as many accepted tasks as your limit. Mark one done or give one back, then you "
        "can take this one.",
    ),
    "link_unknown": ("Ссылка недействительна.", "This link is not valid."),
    # login
    "login_title": ("Вход для координаторов", "Coordinator sign-in"),
    "token": ("Токен доступа", "Access token"),
    "token_hint": (
        "Токен выдаёт администратор: aidmatch token create --role coordinator ИМЯ",
        "An administrator issues tokens: aidmatch token create --role coordinator NAME",
    ),
    "sign_in": ("Войти", "Sign in"),
    "sign_out": ("Выйти", "Sign out"),
    "login_bad": ("Токен неизвестен или отозван.", "The token is unknown or revoked."),
    "login_not_coordinator": ("Этот токен не координаторский.", "This is not a coordinator token."),
    # dashboard
    "dashboard_title": ("Панель координатора", "Coordinator dashboard"),
    "signed_in_as": ("Вы вошли как {name}", "Signed in as {name}"),
    "emergency_mode": ("Режим ЧС", "Emergency mode"),
    "emergency_on": ("включён: подбор каждые {s} с", "on: matching every {s} s"),
    "emergency_off": ("выключен", "off"),
    "emergency_switch_on": ("Включить режим ЧС", "Switch emergency mode on"),
    "emergency_switch_off": ("Выключить режим ЧС", "Switch emergency mode off"),
    "filters": ("Фильтры", "Filters"),
    "category": ("Категория", "Category"),
    "all": ("все", "all"),
    "max_age_h": ("Не старше, часов", "Not older than, hours"),
    "apply": ("Применить", "Apply"),
    "map": ("Карта открытых заявок", "Map of open needs"),
    "map_noscript": (
        "Карта работает с JavaScript; таблицы ниже — без него.",
        "The map needs JavaScript; the tables below do not.",
    ),
    "coverage": ("Зоны помощников", "Helpers' coverage"),
    "labels": ("Населённые пункты", "Settlements"),
    "needs_layer": ("Заявки", "Needs"),
    "map_capped": (
        "На карте новейшие {shown} из {total} заявок; фильтры выше сужают выбор.",
        "The map shows the newest {shown} of {total} needs; the filters above narrow the choice.",
    ),
    "open_needs": ("Открытые заявки", "Open needs"),
    "unmet_summary": (
        "Без помощника: заявок — {needs}, единиц — {units}; самая старая ждёт {age}.",
        "Without a helper: {needs} needs ({units} units); the oldest has waited {age}.",
    ),
    "unmet_none": (
        "Все открытые заявки кем-то взяты или ждут ответа.",
        "Every open need is taken or awaiting an answer.",
    ),
    "counts_title": ("Без помощника: категория × срочность", "Without a helper: category × urgency"),
    "total": ("Всего", "Total"),
    "shown_of": ("{shown} из {total}", "{shown} of {total}"),
    "unmet_title": ("Заявки без помощника и почему", "Needs without a helper, and why"),
    "reason": ("Причина", "Reason"),
    "reason_no_helper_of_category": ("Нет помощников этой категории", "No helper of this category anywhere"),
    "reason_outside_every_radius": ("Помощники есть, но не так далеко", "Helpers exist, none travels this far"),
    "reason_all_in_range_busy": ("Все рядом заняты", "All helpers in range are busy"),
    "reason_waiting_for_helper": ("Ждём следующего подбора", "Waiting for the next matching"),
    "reason_all_in_range_asked": (
        "Все помощники рядом уже отказались или молчат — позвоните",
        "Every helper in range was asked and declined or kept silent: call someone",
    ),
    "nearest_helper": ("Ближайший помощник", "Nearest helper"),
    "age": ("Ждёт", "Waiting"),
    "code": ("Код", "Code"),
    "place": ("Место", "Place"),
    "runs_title": ("Последние запуски подбора", "Recent matching runs"),
    "run_started": ("Начат", "Started"),
    "run_status": ("Итог", "Result"),
    "run_matched": ("Подобрано", "Matched"),
    "run_unmatched": ("Без пары", "Unmatched"),
    "no_runs": ("Запусков ещё не было.", "No runs yet."),
    "sms_log": ("Журнал SMS", "SMS log"),
    "direction": ("Направление", "Direction"),
    "direction_inbound": ("входящее", "in"),
    "direction_outbound": ("исходящее", "out"),
    "text": ("Текст", "Text"),
    "time": ("Время", "Time"),
    "no_messages": ("Сообщений нет.", "No messages."),
    "triage_title": ("Нераспознанные SMS", "Unparsed SMS to triage"),
    "triage_none": ("Всё разобрано.", "Nothing to triage."),
    "triage_dismiss": ("Не заявка — убрать", "Not a need: dismiss"),
    "triage_held_back": (
        "ещё {count} SMS с этого номера не обработано (первые {shown} уберутся вместе с этим)",
        "{count} more SMS from this phone not acted on (the first {shown} are dismissed with this one)",
    ),
    "triage_rate_limited": (
        "не обработано: слишком много SMS с этого номера",
        "not acted on: too many SMS from this phone",
    ),
    "triage_make_need": ("Создать заявку", "Create a need"),
    "triage_more": ("Показать больше", "Show more"),
    "triage_merged": (
        "SMS повторяет уже открытую заявку {code} этого телефона: добавлено к ней.",
        "The SMS repeats this phone's open need {code}: added to it.",
    ),
    "triage_done": ("Заявка {code} создана из SMS.", "Need {code} created from the SMS."),
    "exports": ("Выгрузки", "Exports"),
    "none": ("—", "—"),
    "refreshed": ("Обновлено {time}", "Updated {time}"),
    "age_minutes": ("{n} мин", "{n} min"),
    "age_hours": ("{n} ч", "{n} h"),
    "age_days": ("{n} дн", "{n} d"),
    "bad_csrf": (
        "Форма устарела: обновите страницу и попробуйте снова.",
        "The form is stale: reload the page and try again.",
    ),
}


def translate(lang: str, key: str, **fields: object) -> str:
    """The text for ``key`` in ``lang``; an unknown key shows as itself so a gap is visible, not fatal."""
    pair = TEXTS.get(key)
    if pair is None:
        return key
    text = pair[1] if lang == "en" else pair[0]
    return text.format(**fields) if fields else text


def pick_language(request: Request) -> str:
    """``?lang=`` first, then the cookie, then Russian."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked
    remembered = request.cookies.get(LANG_COOKIE)
    if remembered in LANGUAGES:
        return remembered
    return DEFAULT_LANGUAGE
