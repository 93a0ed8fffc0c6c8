"""Conversations by SMS end: an answer is read as one, nothing is asked twice, and what stays
unfinished reaches the coordinators."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker, utcnow
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.helpers.models import Helper
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.messages.models import Message, SmsConversation
from aidmatch.needs import service as needs_service
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from aidmatch.sms import service as sms_service
from aidmatch.web.service import dismiss, triage_queue
from geo.geocoding import GazetteerGeocoder
from tests.aidmatch.test_sms_webhook import _text


def _needs(db: Session, phone: str) -> list[Need]:
    db.expire_all()
    return list(db.scalars(select(Need).where(Need.contact_phone == phone).order_by(Need.id)))


@pytest.mark.parametrize(
    ("first", "answer", "lang"),
    [
        ("нужна вода, у нас дети", "Рязань, могу сам забрать", "ru"),
        ("Нужна питьевая вода", "Рязань. Можем забрать сами", "ru"),
        ("need water for my kids", "Ryazan, I can pick it up myself", "en"),
    ],
)
def test_i_can_pick_it_up_in_the_answer_to_where_are_you_keeps_the_need(
    sms: TestClient, db: Session, first: str, answer: str, lang: str
) -> None:
    phone = "+79161230001"
    assert _text(sms, phone, first).startswith("Где вы?" if lang == "ru" else "Where are you?")
    reply = _text(sms, phone, answer)
    (need,) = _needs(db, phone)
    assert need.category.value == "water"
    assert need.code in reply
    assert abs(need.lat - 54.63) < 0.1
    assert db.scalar(select(Helper).where(Helper.phone == phone)) is None  # not registered as a helper


# -- nothing asked twice; what stays unfinished reaches the coordinators -------------------------


@pytest.mark.parametrize("answer", ["всё сгорело, ничего не осталось", "всё", "что угодно, всё пропало"])
def test_what_is_needed_is_asked_once_then_the_need_is_other_with_the_whole_text(
    sms: TestClient, db: Session, answer: str
) -> None:
    phone = "+79161230002"
    assert _text(sms, phone, "помогите, Рязань").startswith("Что нужно?")
    reply = _text(sms, phone, answer)
    (need,) = _needs(db, phone)
    assert need.code in reply
    assert need.category.value == "other"
    assert "помогите, Рязань" in (need.description or "")
    assert answer in (need.description or "")
    assert db.get(SmsConversation, phone) is None


@pytest.mark.parametrize("answer", ["чем угодно", "всем, чем смогу"])
def test_how_one_can_help_is_asked_once_then_the_offer_is_other(sms: TestClient, db: Session, answer: str) -> None:
    phone = "+79161230003"
    assert _text(sms, phone, "могу помочь, Рязань").startswith("Чем можете помочь?")
    _text(sms, phone, answer)
    db.expire_all()
    (offer,) = db.scalars(select(Offer).join(Helper, Helper.id == Offer.helper_id).where(Helper.phone == phone))
    assert [c.value for c in offer.categories] == ["other"]
    assert db.get(SmsConversation, phone) is None


@pytest.mark.parametrize(
    ("first", "answers"),
    [
        ("нужна вода", ["где-то у речки", "рядом с магазином"]),
        ("Срочно нужна вода", ["не знаю где", "возле речки"]),
        ("need water", ["somewhere by the riverbank", "by the old schoolhouse"]),
    ],
)
def test_a_place_asked_for_and_not_found_twice_goes_to_the_coordinators_with_the_whole_conversation(
    sms: TestClient, db: Session, first: str, answers: list[str]
) -> None:
    phone = "+79161230004"
    _text(sms, phone, first)
    replies = [_text(sms, phone, a) for a in answers]
    assert len(set(replies)) == 2  # never the same question twice
    assert "координатор" in replies[-1] or "coordinator" in replies[-1]
    db.expire_all()
    assert _needs(db, phone) == []
    assert db.get(SmsConversation, phone) is None
    (entry,) = [m for m in triage_queue(session=db) if m.phone == phone]
    assert entry.body == answers[-1]
    assert (entry.parsed or {}).get("conversation") == "\n".join([first, *answers])


def _age(db: Session, phone: str, by: timedelta) -> None:
    conversation = db.get(SmsConversation, phone)
    assert conversation is not None
    conversation.updated_at = utcnow() - by
    db.commit()


@pytest.mark.parametrize(("first", "soon"), [("Срочно нужна вода", True), ("нужна вода", False), ("need food", False)])
def test_a_conversation_left_unanswered_reaches_triage_and_becomes_a_need_there(
    sms: TestClient, db: Session, coordinator_headers: dict[str, str], first: str, soon: bool
) -> None:
    phone = "+79161230005"
    _text(sms, phone, first)
    db.expire_all()
    assert [m for m in triage_queue(session=db) if m.phone == phone] == []  # a question may still be answered
    _age(db, phone, timedelta(minutes=20))
    db.expire_all()
    assert len([m for m in triage_queue(session=db) if m.phone == phone]) == (1 if soon else 0)
    _age(db, phone, timedelta(hours=2))
    db.expire_all()
    (entry,) = [m for m in triage_queue(session=db) if m.phone == phone]
    page = sms.get("/dashboard", headers=coordinator_headers)
    assert first in page.text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "category": "water", "address": "Рязань", "contact_phone": phone}
    made = sms.post(f"/dashboard/triage/{entry.id}", data=form, headers=coordinator_headers, follow_redirects=False)
    assert made.status_code == 303, made.text[:300]
    db.expire_all()
    (need,) = _needs(db, phone)
    assert db.get(Message, entry.id).need_id == need.id  # type: ignore[union-attr]
    assert db.get(SmsConversation, phone) is None  # ended: the next SMS starts afresh
    assert [m for m in triage_queue(session=db) if m.phone == phone] == []


def test_an_abandoned_conversation_can_be_dismissed(sms: TestClient, db: Session) -> None:
    phone = "+79161230006"
    _text(sms, phone, "нужна вода")
    _age(db, phone, timedelta(hours=2))
    db.expire_all()
    (entry,) = [m for m in triage_queue(session=db) if m.phone == phone]
    dismiss(session=db, message_id=entry.id)
    db.commit()
    db.expire_all()
    assert [m for m in triage_queue(session=db) if m.phone == phone] == []
    assert db.get(SmsConversation, phone) is None


def test_a_conversation_past_its_window_stays_in_triage_when_the_phone_writes_again(
    sms: TestClient, db: Session, sms_settings: Settings
) -> None:
    phone = "+79161230007"
    _text(sms, phone, "нужна вода")
    _age(db, phone, timedelta(hours=sms_settings.sms_conversation_hours + 1))
    _text(sms, phone, "могу помочь: машина, Рязань")
    db.expire_all()
    (entry,) = [m for m in triage_queue(session=db) if m.phone == phone]
    assert entry.body == "нужна вода"
    assert entry.status is MessageStatus.unparsed


@pytest.mark.parametrize(
    ("first", "later", "alone"),
    [
        ("нужна вода", "нужны лекарства, Тула", "medicine"),
        ("Нужна еда", "Нужен врач, Рязань", "medical"),
        ("need water", "need food in Tula", "food"),
    ],
)
def test_a_complete_message_long_after_an_unanswered_question_stands_alone(
    sms: TestClient, db: Session, first: str, later: str, alone: str
) -> None:
    phone = "+79161230008"
    _text(sms, phone, first)
    _age(db, phone, timedelta(hours=3))
    _text(sms, phone, later)
    assert [n.category.value for n in _needs(db, phone)] == [alone]
    # the unanswered request is not lost: it waits for a coordinator
    (entry,) = [m for m in triage_queue(session=db) if m.phone == phone]
    assert entry.body == first


@pytest.mark.parametrize(
    ("first", "later", "both"),
    [
        ("нужна вода", "нужны лекарства, Тула", {"water", "medicine"}),
        ("need water", "need food in Tula", {"water", "food"}),
    ],
)
def test_a_complete_message_soon_after_the_question_adds_to_the_request(
    sms: TestClient, db: Session, first: str, later: str, both: set[str]
) -> None:
    phone = "+79161230009"
    _text(sms, phone, first)
    _age(db, phone, timedelta(minutes=5))
    _text(sms, phone, later)
    assert {n.category.value for n in _needs(db, phone)} == both


def test_the_same_request_again_in_full_long_after_completes_it(sms: TestClient, db: Session) -> None:
    phone = "+79161230010"
    _text(sms, phone, "нужна вода")
    _age(db, phone, timedelta(hours=3))
    _text(sms, phone, "нужна вода, Тула")
    assert [n.category.value for n in _needs(db, phone)] == ["water"]
    assert [m for m in triage_queue(session=db) if m.phone == phone] == []


@pytest.mark.parametrize("text", ["да 999999999999", "ДА 89161234567", "НЕТ 2147483648", "done 99999999999"])
def test_a_task_number_beyond_any_id_names_no_task(sms: TestClient, db: Session, text: str) -> None:
    phone = "+79161230011"
    assert "помощник" in _text(sms, phone, "могу помочь: вода, Рязань")
    reply = _text(sms, phone, text)
    assert "Нет задачи" in reply or "no task" in reply
    db.expire_all()
    (message,) = db.scalars(select(Message).where(Message.phone == phone, Message.body == text))
    assert message.status is MessageStatus.parsed
    assert "error" not in (message.parsed or {})


_CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)


@pytest.mark.parametrize("command", ["ok {code}", "Stop", "STATUS", "yes {code}"])
def test_a_latin_command_is_answered_in_the_language_of_the_senders_request(
    sms: TestClient, db: Session, command: str
) -> None:
    phone = "+79161230012"
    _text(sms, phone, "нужна вода, Рязань")
    (need,) = _needs(db, phone)
    reply = _text(sms, phone, command.format(code=need.code))
    assert _CYRILLIC.search(reply), reply


@pytest.mark.parametrize("command", ["Stop", "status"])
def test_a_latin_command_in_a_russian_conversation_is_answered_in_russian(
    sms: TestClient, db: Session, command: str
) -> None:
    phone = "+79161230013"
    _text(sms, phone, "нужна вода")
    assert _CYRILLIC.search(_text(sms, phone, command))


@pytest.mark.parametrize(("first", "command"), [("need water in Ryazan", "STOP"), (None, "Stop"), (None, "status")])
def test_a_latin_command_from_an_english_or_unknown_sender_is_answered_in_english(
    sms: TestClient, db: Session, first: str | None, command: str
) -> None:
    phone = "+79161230014"
    if first:
        _text(sms, phone, first)
    assert not _CYRILLIC.search(_text(sms, phone, command))


@pytest.mark.parametrize(
    ("first", "thanks", "place"),
    [
        ("нужна вода", "спасибо", "Рязань"),
        ("нужна вода", "Спасибо большое!", "Рязань"),
        ("need water", "thanks!", "Ryazan"),
    ],
)
def test_thanks_in_answer_to_where_are_you_is_not_a_place(
    sms: TestClient, db: Session, first: str, thanks: str, place: str
) -> None:
    phone = "+79161230015"
    _text(sms, phone, first)
    reply = _text(sms, phone, thanks)
    assert thanks.strip("!").lower() not in reply.lower()  # not «Не нашли «спасибо»»
    assert _needs(db, phone) == []
    done = _text(sms, phone, place)  # the question is still open: the place completes the request
    (need,) = _needs(db, phone)
    assert need.code in done
    assert need.category.value == "water"


# -- a settlement's name first, then the need ----------------------------------------------------


@pytest.mark.parametrize(
    ("conversation", "category", "lat"),
    [
        (["Рязань нужна вода"], "water", 54.63),
        (["Тула нужны лекарства"], "medicine", 54.19),
        (["Коломна нужен генератор"], "power", 55.08),
        (["Ryazan need water"], "water", 54.63),
        (["Tula needs food"], "food", 54.19),
        (["нужна вода", "Рязань нужна вода"], "water", 54.63),
        (["помогите", "Рязань нужна вода"], "water", 54.63),
        # A settlement whose name is built on a keyword («приют»): still the place, not shelter.
        (["Приютово нужна вода"], "water", 53.9),
    ],
)
def test_a_settlement_named_first_before_need_is_the_place(
    sms: TestClient, db: Session, conversation: list[str], category: str, lat: float
) -> None:
    phone = "+79161230101"
    for body in conversation:
        reply = _text(sms, phone, body)
    (need,) = _needs(db, phone)
    assert need.code in reply
    assert need.category.value == category
    assert abs(need.lat - lat) < 0.1


@pytest.mark.parametrize(
    "body",
    [
        "Сыну нужен инсулин",
        "Маме нужна скорая",
        "Палатка нужна",
        "Anna needs insulin",
        "Olga needs water",
        "Rosa needs food",
        "Maya needs insulin",
        "Ольга, нужна вода",
        "Olga, we need water",
    ],
)
def test_who_needs_it_named_first_is_not_the_place(sms: TestClient, db: Session, body: str) -> None:
    phone = "+79161230102"
    assert _text(sms, phone, body).startswith(("Где вы?", "Where are you?"))
    assert _needs(db, phone) == []


@pytest.mark.parametrize(
    ("first", "answer", "categories", "address"),
    [
        ("помогите", "вода, Рязань", ["water"], "Рязань"),
        ("помогите", "Рязань, вода", ["water"], "Рязань"),
        ("помогите", "Еда, Тула", ["food"], "Тула"),
        ("нужна вода", "Москва, и еда", ["water", "food"], "Москва"),
        ("нужна вода", "Кошки", ["water"], "Кошки"),
    ],
)
def test_the_answer_to_where_are_you_naming_what_is_needed_too_keeps_it(
    sms: TestClient, db: Session, first: str, answer: str, categories: list[str], address: str
) -> None:
    phone = "+79161230103"
    assert _text(sms, phone, first).startswith("Где вы?")
    reply = _text(sms, phone, answer)
    needs = _needs(db, phone)
    assert [n.category.value for n in needs] == categories
    assert all(n.code in reply and n.address == address for n in needs)


@pytest.mark.parametrize(
    ("answer", "address"),
    [
        ("Рязань, у больницы", "Рязань, у больницы"),
        ("Рязань, в палатке", "Рязань, в палатке"),
        ("Рязань, в машине", "Рязань, в машине"),
        ("Тула, Хлебозаводская 3", "Тула, Хлебозаводская 3"),
    ],
)
def test_what_is_near_the_place_in_the_answer_to_where_are_you_is_the_address_not_a_need(
    sms: TestClient, db: Session, answer: str, address: str
) -> None:
    phone = "+79161230105"
    assert _text(sms, phone, "нужна вода").startswith("Где вы?")
    reply = _text(sms, phone, answer)
    (need,) = _needs(db, phone)
    assert need.category.value == "water"
    assert need.code in reply
    assert need.address == address


def test_a_helper_answering_where_with_what_and_where_is_registered(sms: TestClient, db: Session) -> None:
    phone = "+79161230104"
    _text(sms, phone, "Могу помочь")
    _text(sms, phone, "машина, Рязань")
    db.expire_all()
    (offer,) = db.scalars(select(Offer).join(Helper).where(Helper.phone == phone))
    assert [c.value for c in offer.categories] == ["transport"]
    assert _needs(db, phone) == []


@pytest.mark.postgres
@pytest.mark.parametrize("migrated_url", ["postgresql"], indirect=True)  # row and advisory locks
def test_dismissing_an_abandoned_conversation_while_the_phone_writes_does_not_deadlock(
    settings: Settings, gazetteer: GazetteerGeocoder
) -> None:
    """PostgreSQL: an SMS holds the phone's lock and ends the conversation by updating its last
    message; a coordinator dismissing that message at the same moment waits for the phone first."""
    phone = "+79161230105"
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    old = utcnow() - timedelta(hours=settings.sms_conversation_hours + 1)
    with sessions() as s:
        first = Message(
            direction=MessageDirection.inbound,
            status=MessageStatus.parsed,
            phone=phone,
            body="нужна вода",
            parsed={"intent": "need"},
            created_at=old,
            updated_at=old,
        )
        s.add(first)
        s.flush()
        state = {"text": "нужна вода", "categories": ["water"], "intent": "need", "message_id": first.id}
        s.add(SmsConversation(phone=phone, state=state | {"asked_before": ["place"]}, asked="place", updated_at=old))
        new = Message(direction=MessageDirection.inbound, status=MessageStatus.received, phone=phone, body="еда, Тула")
        s.add(new)
        s.commit()
        first_id, new_id = first.id, new.id
    errors: dict[str, str] = {}
    inbound = sessions()
    needs_service.lock_phones(inbound, [phone])  # the SMS has begun: it holds the phone

    def coordinator() -> None:
        try:
            with sessions() as s:
                dismiss(session=s, message_id=first_id)
                s.commit()
        except Exception as e:
            errors["dismiss"] = repr(e)[:300]

    thread = threading.Thread(target=coordinator)
    thread.start()
    time.sleep(0.5)
    try:
        message = inbound.get(Message, new_id)
        assert message is not None
        sms_service.handle(
            session=inbound, settings=settings, live=LiveOfferIndex(), geocoder=gazetteer, message=message, now=utcnow()
        )
        inbound.commit()
    except Exception as e:
        errors["handle"] = repr(e)[:300]
        inbound.rollback()
    thread.join(timeout=30)
    inbound.close()
    engine.dispose()
    assert errors == {}


@pytest.mark.parametrize(
    ("first", "question", "then"),
    [
        ("нужна вода", "Где вы?", "Заявка"),
        ("помогите", "Где вы?", "Что нужно?"),
        ("Могу помочь", "Где вы находитесь?", "Чем можете помочь?"),
    ],
)
def test_the_request_sent_again_is_asked_the_question_again_and_the_answer_completes_it(
    sms: TestClient, db: Session, first: str, question: str, then: str
) -> None:
    phone = "+79161230106"
    assert _text(sms, phone, first).startswith(question)
    assert _text(sms, phone, first).startswith(question)  # no answer: not a place not found twice
    assert _text(sms, phone, "Рязань").startswith(then)
    db.expire_all()
    assert [m for m in triage_queue(session=db) if m.phone == phone] == []
    assert len(_needs(db, phone)) == (1 if then == "Заявка" else 0)


def test_conversations_whose_message_was_handled_do_not_crowd_the_triage_list(db: Session) -> None:
    old = utcnow() - timedelta(hours=2)
    for k, status in enumerate([MessageStatus.unparsed, MessageStatus.unparsed, MessageStatus.parsed]):
        phone = f"+7916123020{k}"
        message = Message(
            direction=MessageDirection.inbound, status=status, phone=phone, body="нужна вода", created_at=old
        )
        db.add(message)
        db.flush()
        state = {"text": "нужна вода", "intent": "need", "message_id": message.id, "urgency": "normal"}
        db.add(SmsConversation(phone=phone, state=state, asked="place", updated_at=old + timedelta(minutes=k)))
    urgent = Message(direction=MessageDirection.inbound, status=MessageStatus.parsed, phone="+79161230209", body="x")
    db.add(urgent)
    db.flush()
    recent = utcnow() - timedelta(minutes=20)
    db.add(SmsConversation(phone=urgent.phone, state={"message_id": urgent.id, "urgency": "urgent"}, updated_at=recent))
    db.commit()
    # Only the conversations still waiting for their message: one whose message was handled
    # (parsed into a need, or left unparsed and so in triage already) is not listed again.
    waiting = db.scalars(sms_service.abandoned_query(utcnow()).limit(10)).all()
    assert sorted(m.phone for m in waiting) == sorted(["+79161230202", urgent.phone])
    assert sms_service.release_to_triage(db, urgent, utcnow())
    assert db.get(Message, urgent.id).status is MessageStatus.unparsed  # type: ignore[union-attr]


def test_the_request_sent_again_more_urgently_keeps_its_urgency_and_what_it_adds(sms: TestClient, db: Session) -> None:
    phone = "+79161230107"
    assert _text(sms, phone, "нужна вода").startswith("Где вы?")
    assert _text(sms, phone, "СРОЧНО нужна вода, ребенку плохо").startswith("Где вы?")
    assert _text(sms, phone, "Рязань").startswith("Заявка")
    (need,) = _needs(db, phone)
    assert need.category.value == "water"
    assert need.urgency.value == "critical"  # «ребенку плохо»
    assert "ребенку плохо" in (need.description or "")


def test_the_request_sent_again_and_again_reaches_a_coordinator(sms: TestClient, db: Session) -> None:
    phone = "+79161230108"
    assert _text(sms, phone, "нужна вода").startswith("Где вы?")
    db.expire_all()
    conversation = db.get(SmsConversation, phone)
    assert conversation is not None
    started = conversation.updated_at
    assert _text(sms, phone, "нужна вода").startswith("Где вы?")  # asked again once
    db.expire_all()
    conversation = db.get(SmsConversation, phone)
    assert conversation is not None
    assert conversation.updated_at == started  # the resend does not restart the abandoned timer
    assert not _text(sms, phone, "нужна вода").startswith("Где вы?")
    db.expire_all()
    assert [m.phone for m in triage_queue(session=db) if m.phone == phone] == [phone]
    assert _needs(db, phone) == []


@pytest.mark.parametrize("body", ["нужна вода, Зажопинск", "need water in Zzzville", "помогите, Зажопинск"])
def test_the_request_sent_again_with_its_unfound_place_is_asked_again_once_then_reaches_a_coordinator(
    sms: TestClient, db: Session, body: str
) -> None:
    phone = "+79161230109"
    first = _text(sms, phone, body)
    assert _text(sms, phone, body) == first  # asked again once, as any request sent again
    db.expire_all()
    assert [m for m in triage_queue(session=db) if m.phone == phone] == []
    last = _text(sms, phone, body)
    assert "координатор" in last or "coordinator" in last
    db.expire_all()
    (entry,) = [m for m in triage_queue(session=db) if m.phone == phone]
    assert entry.body == body
    assert db.get(SmsConversation, phone) is None
    assert _needs(db, phone) == []


def _last_inbound_language(db: Session, phone: str) -> str | None:
    db.expire_all()
    message = db.scalar(
        select(Message)
        .where(Message.phone == phone, Message.direction == MessageDirection.inbound)
        .order_by(Message.id.desc())
        .limit(1)
    )
    assert message is not None
    return message.language


@pytest.mark.parametrize("command", ["YES {code}", "STATUS", "Stop", "ok {code}", "DONE {code}"])
def test_a_latin_command_keeps_a_russian_speaker_russian(sms: TestClient, db: Session, command: str) -> None:
    phone = "+79161230110"
    _text(sms, phone, "нужна вода, Рязань")
    (need,) = _needs(db, phone)
    assert _CYRILLIC.search(_text(sms, phone, command.format(code=need.code)))
    assert _last_inbound_language(db, phone) == "ru"


def test_a_whole_sentence_in_english_still_switches_to_english(sms: TestClient, db: Session) -> None:
    phone = "+79161230111"
    _text(sms, phone, "нужна вода, Рязань")
    assert not _CYRILLIC.search(_text(sms, phone, "we also need food in Ryazan"))
    assert _last_inbound_language(db, phone) == "en"
    _text(sms, phone, "STATUS")
    assert _last_inbound_language(db, phone) == "en"  # the newest request is in English


def test_a_latin_command_from_an_unknown_sender_is_english(sms: TestClient, db: Session) -> None:
    phone = "+79161230112"
    _text(sms, phone, "STATUS")
    assert _last_inbound_language(db, phone) == "en"


@pytest.mark.parametrize(
    ("body", "category"),
    [("сгорел дом 5, Рязань", "shelter"), ("Улица горит, помогите, Рязань", "firefighting")],
)
def test_what_happened_beside_a_street_word_is_the_need(sms: TestClient, db: Session, body: str, category: str) -> None:
    phone = "+79161230113"
    reply = _text(sms, phone, body)
    (need,) = _needs(db, phone)
    assert need.category.value == category
    assert need.code in reply
    assert abs(need.lat - 54.63) < 0.1


def test_and_so_on_before_the_settlement_finds_it(sms: TestClient, db: Session) -> None:
    phone = "+79161230114"
    reply = _text(sms, phone, "Нужно: вода, еда, одеяла и пр. Белоомут")
    assert "Не нашли" not in reply
    needs = _needs(db, phone)
    assert {n.category.value for n in needs} >= {"water", "food"}
    assert {n.address for n in needs} == {"Белоомут"}


def test_a_flat_number_in_its_own_sentence_is_no_place(sms: TestClient, db: Session) -> None:
    phone = "+79161230115"
    assert _text(sms, phone, "Нужна вода! Квартира 5").startswith("Где вы?")
    assert _needs(db, phone) == []


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ("Нужна вода, деревня Старая", "Старая"),
        ("Нужна вода, пос. Новый", "Новый"),
        ("Нужна вода, посёлок Красный", "Красный"),
        ("Нужна вода, в поселке Новом", "Новый"),
    ],
)
def test_an_adjective_said_to_be_a_settlement_is_where_the_need_is(
    sms: TestClient, db: Session, gazetteer: GazetteerGeocoder, body: str, name: str
) -> None:
    phone = "+79161230116"
    reply = _text(sms, phone, body)
    (need,) = _needs(db, phone)
    assert need.code in reply
    expected = gazetteer.geocode(f"посёлок {name}")  # a lone adjective is no settlement
    assert (need.lat, need.lon) == pytest.approx((expected.lat_deg, expected.lon_deg))


# -- the triage queue on the dashboard -----------------------------------------------------------


def _triage_header(page: str) -> str:
    found = re.search(r'<h2 id="triage-h">([^<]*)</h2>', page)
    assert found is not None
    return " ".join(found.group(1).split())


def test_a_critical_conversation_is_not_pushed_out_of_triage_by_a_flood_of_thanks(
    sms: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    for k in range(60):
        _text(sms, f"+7916124{k:04d}", "спасибо вам всем")
    phone = "+79161239999"
    assert _text(sms, phone, "СРОЧНО нужна вода, ребенку плохо").startswith("Где вы?")
    _age(db, phone, timedelta(minutes=40))
    db.expire_all()
    queue = triage_queue(session=db)
    assert queue[0].phone == phone  # the critical request first, before 60 older thanks
    assert len(queue) == 50
    page = sms.get("/dashboard", headers=coordinator_headers).text
    assert "СРОЧНО нужна вода, ребенку плохо</textarea>" in page
    assert _triage_header(page) == "Нераспознанные SMS (50 из 61)"  # the real total, not the page
    more = re.search(r'href="(/dashboard\?[^"]*triage=\d+[^"]*)"', page)
    assert more is not None, "a way to see the rest"
    everything = sms.get(more.group(1).replace("&amp;", "&"), headers=coordinator_headers).text
    assert _triage_header(everything) == "Нераспознанные SMS (61)"
    assert everything.count('class="triage-form"') == 61


def test_an_sms_triaged_after_the_same_request_came_clearly_is_merged_into_its_need(
    sms: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    """The same phone, category, place and day make one need by triage too, as by web, API and SMS."""
    phone = "+79161230200"
    _text(sms, phone, "вадаа нада")
    db.expire_all()
    (entry,) = [m for m in triage_queue(session=db) if m.phone == phone]
    reply = _text(sms, phone, "Нужна вода, 3 человека, Рязань")
    (need,) = _needs(db, phone)
    assert need.code in reply
    page = sms.get("/dashboard", headers=coordinator_headers).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    form = {
        "csrf": csrf,
        "category": "water",
        "urgency": "urgent",
        "address": "Рязань",
        "description": entry.body,
        "contact_phone": phone,
    }
    made = sms.post(f"/dashboard/triage/{entry.id}", data=form, headers=coordinator_headers, follow_redirects=False)
    assert made.status_code == 303, made.text[:300]
    assert made.headers["location"].startswith(f"/dashboard?created={need.code}&merged=1")
    (merged,) = _needs(db, phone)  # no second need, no second code
    assert merged.id == need.id
    assert "вадаа нада" in (merged.description or "")
    assert merged.urgency.value == "urgent"  # the repeat's higher urgency is kept
    assert db.get(Message, entry.id).need_id == need.id  # type: ignore[union-attr]
    assert [m for m in triage_queue(session=db) if m.phone == phone] == []
    shown = sms.get(made.headers["location"], headers=coordinator_headers).text
    assert f"уже открытую заявку {need.code}" in shown
