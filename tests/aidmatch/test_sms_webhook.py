"""SMS in: signatures (Twilio's own vectors), idempotency, conversations, commands, the loop by SMS."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus, MessageDirection, MessageStatus, NeedStatus, Source, Urgency
from aidmatch.helpers.models import Helper
from aidmatch.main import create_app
from aidmatch.matches.models import Match
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import DeliveryReport, Message, SmsOptOut
from aidmatch.messages.outbox import drain
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer
from aidmatch.scheduler import upkeep_job
from aidmatch.sms.service import _locate
from aidmatch.sms.signature import public_request_url, valid_signature
from geo.geocoding import GazetteerGeocoder
from geo.sphere import haversine_km
from notifications.parser import parse_sms
from notifications.ratelimit import TokenBucket
from notifications.segments import segments
from notifications.senders import FakeSender, Sent, TwilioSender, UnknownOutcomeError
from tests.aidmatch.conftest import PUBLIC, TOKEN
from tests.fake_twilio import FakeTwilio, fake_twilio

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "data" / "twilio" / "signature_vectors.md"
BELOOMUT = (54.94478, 39.33941)


def _signed(client: TestClient, path: str, form: dict[str, str], *, token: str = TOKEN) -> Any:
    signature = RequestValidator(token).compute_signature(PUBLIC + path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature})


_sids = iter(range(1, 1_000_000))


def _text(client: TestClient, phone: str, body: str, sid: str | None = None) -> str:
    form = {"MessageSid": sid or f"SMin{next(_sids):030d}", "From": phone, "To": "+15005550006", "Body": body}
    r = _signed(client, "/sms/inbound", form)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/xml")
    found = re.search(r"<Message>(.*)</Message>", r.text, re.S)
    return found.group(1) if found else ""


# -- signatures ----------------------------------------------------------------------------------

COMMON = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
    ("Caller", "+14158675309"),
]
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
MULTI = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
BODY = '{"property": "value", "boolean": true}'
BODY_URL = URL + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"


def test_the_seven_vectors_are_those_of_the_shared_data() -> None:
    if not VECTORS.exists():
        pytest.skip(f"{VECTORS} is absent (the shared evaluation data is not on this machine)")
    text = VECTORS.read_text()
    for signature in [
        "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
        "kvajT1Ptam85bY51eRf/AJRuM3w=",
        "0ZXoZLH/DfblKGATFgpif+LLRf4=",
        "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
        "a9nBmqA0ju/hNViExpshrM61xv4=",
    ]:
        assert signature in text


@pytest.mark.parametrize(
    ("url", "params", "signature"),
    [
        (URL, COMMON, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # 1
        ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", COMMON, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # 2
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", COMMON, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),  # 3
        (URL, COMMON, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # 4
        ("http://mycompany.com/myapp.php?foo=1&bar=2", COMMON, "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # 5
        (URL, MULTI, "IK+Dwps556ElfBT0I3Rgjkr1wJU="),  # 6: sorted, duplicates dropped
        (BODY_URL, BODY, "a9nBmqA0ju/hNViExpshrM61xv4="),  # 7: JSON body with its hash in the URL
    ],
)
def test_twilio_signature_vectors_pass_the_webhook_validation(url: str, params: Any, signature: str) -> None:
    assert valid_signature(auth_token="12345", url=url, params=params, signature=signature)
    # One character off, another token, a changed parameter: refused.
    assert not valid_signature(auth_token="12345", url=url, params=params, signature=signature[:-2] + "A=")
    assert not valid_signature(auth_token="54321", url=url, params=params, signature=signature)
    if isinstance(params, list):
        changed = [(k, v + "5") if k == "Digits" else (k, v) for k, v in params]
        assert not valid_signature(auth_token="12345", url=url, params=changed, signature=signature)
    else:
        assert not valid_signature(
            auth_token="12345", url=url, params=params.replace("true", "false"), signature=signature
        )


def test_the_public_url_is_checked_not_the_one_behind_the_proxy() -> None:
    assert public_request_url("https://mycompany.com/", "/myapp.php", "foo=1&bar=2") == URL
    params = COMMON
    assert valid_signature(
        auth_token="12345",
        url=public_request_url("https://mycompany.com", "/myapp.php", "foo=1&bar=2"),
        params=params,
        signature="RSOYDt4T1cUTdK1PDd93/VVr8B8=",
    )
    assert not valid_signature(
        auth_token="12345",
        url="http://10.0.0.5:8000/myapp.php?foo=1&bar=2",
        params=params,
        signature="RSOYDt4T1cUTdK1PDd93/VVr8B8=",
    )


def test_forged_or_unsigned_requests_get_403_and_create_nothing(sms: TestClient, db: Session) -> None:
    form = {"MessageSid": "SM" + "f" * 32, "From": "+79161234567", "Body": "нужна вода, Белоомут"}
    unsigned = sms.post("/sms/inbound", data=form)
    forged = _signed(sms, "/sms/inbound", form, token="not-the-token")
    tampered = sms.post(
        "/sms/inbound",
        data=form | {"Body": "нужна еда, Белоомут"},
        headers={"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(PUBLIC + "/sms/inbound", form)},
    )
    for r in (unsigned, forged, tampered):
        assert r.status_code == 403
        assert set(r.json()) == {"type", "title", "status", "detail", "errors"}
    assert db.scalar(select(func.count(Message.id))) == 0
    assert db.scalar(select(func.count(Need.id))) == 0


def test_without_an_auth_token_the_webhook_is_closed(client: TestClient, db: Session) -> None:
    r = client.post("/sms/inbound", data={"From": "+79161234567", "Body": "SOS"})
    assert r.status_code == 403
    assert "AIDMATCH_TWILIO_AUTH_TOKEN" in r.json()["detail"]


def test_a_repeated_message_sid_creates_one_need(sms: TestClient, db: Session) -> None:
    first = _text(sms, "+79161234567", "нужна вода, Белоомут", sid="SM" + "1" * 32)
    again = _text(sms, "+79161234567", "нужна вода, Белоомут", sid="SM" + "1" * 32)
    assert first == again
    assert db.scalar(select(func.count(Need.id))) == 1
    assert db.scalar(select(func.count(Message.id)).where(Message.direction == MessageDirection.inbound)) == 1


@pytest.mark.parametrize(
    ("reply", "status"), [("Да", NeedStatus.open), ("YES", NeedStatus.open), ("нет", NeedStatus.cancelled)]
)
def test_a_bare_answer_to_still_needed_applies_to_the_need_that_was_asked(
    sms: TestClient, db: Session, reply: str, status: NeedStatus
) -> None:
    phone = "+79161234567"
    _text(sms, phone, "нужна вода, Белоомут")
    need = db.scalars(select(Need)).one()
    expires = need.expires_at
    assert expires is not None
    need.expires_at = expires - timedelta(hours=60)  # near its expiry: upkeep asked «ещё нужна?»
    need.reconfirm_requested_at = utcnow()
    db.commit()
    answer = _text(sms, phone, reply)
    assert need.code in answer
    db.expire_all()
    need = db.scalars(select(Need)).one()
    assert need.status is status
    if status is NeedStatus.open:
        assert need.expires_at is not None
        assert need.expires_at > expires - timedelta(hours=60)  # renewed
        assert need.reconfirm_requested_at is None


def test_yes_to_still_needed_asks_a_helper_who_came_since(sms: TestClient, db: Session) -> None:
    phone = "+79161234567"
    _text(sms, phone, "нужна вода, Белоомут")  # nobody to ask yet
    need = db.scalars(select(Need)).one()
    assert db.scalar(select(func.count(Match.id))) == 0
    r = sms.post(
        "/api/offers",
        json={"categories": ["water"], "capacity": 2, "radius_km": 40, "lat": BELOOMUT[0], "lon": BELOOMUT[1]}
        | {"phone": "+79165550009"},
    )
    assert r.status_code == 201, r.text
    assert need.code in _text(sms, phone, f"ДА {need.code}")
    (match,) = db.scalars(select(Match).where(Match.need_id == need.id))
    assert match.reason.startswith("still needed")
    assert match.status is MatchStatus.notified


def test_a_bare_done_to_has_help_arrived_closes_the_taken_need_and_its_task(
    sms: TestClient, db: Session, sms_settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    _water_offer(sms, "+79165550001")
    phone = "+79161234567"
    _text(sms, phone, "нужна вода, 55.0 40.0")
    need = db.scalars(select(Need)).one()
    (match,) = db.scalars(select(Match).where(Match.need_id == need.id))
    assert sms.post(f"/api/matches/{match.id}/accept", headers=coordinator_headers).status_code == 200
    assert need.expires_at is not None
    state = sms.app.state  # type: ignore[attr-defined]
    report = upkeep_job(sessions=state.sessionmaker, settings=sms_settings, live=state.live_index, now=need.expires_at)
    assert report is not None
    assert report.reconfirm_requested == 1  # «помощь пришла?»
    answer = _text(sms, phone, "ГОТОВО")
    assert need.code in answer
    db.expire_all()
    assert db.get(Need, need.id).status is NeedStatus.fulfilled  # type: ignore[union-attr]
    assert db.get(Match, match.id).status is MatchStatus.completed  # type: ignore[union-attr]


def _taken_and_asked_if_help_came(
    sms: TestClient, db: Session, settings: Settings, headers: dict[str, str], phone: str, days_ago: int = 0
) -> tuple[Need, Match]:
    """A water need by SMS from ``phone``, fully taken by a helper, asked «помощь пришла?» by upkeep
    (``days_ago`` as if posted so many days ago)."""
    _water_offer(sms, "+79165550001")
    _text(sms, phone, "нужна вода, 55.0 40.0")
    need = db.scalars(select(Need).where(Need.contact_phone == phone)).one()
    (match,) = db.scalars(select(Match).where(Match.need_id == need.id))
    assert sms.post(f"/api/matches/{match.id}/accept", headers=headers).status_code == 200
    db.refresh(need)
    assert need.expires_at is not None
    if days_ago:
        need.expires_at -= timedelta(days=days_ago)
        db.commit()
    state = sms.app.state  # type: ignore[attr-defined]
    report = upkeep_job(sessions=state.sessionmaker, settings=settings, live=state.live_index, now=need.expires_at)
    assert report is not None
    assert report.reconfirm_requested == 1
    return need, match


@pytest.mark.parametrize(
    ("answer", "said"),
    # "NO" in Latin letters from a requester who wrote in Russian: answered in Russian
    [("НЕТ", "{code} ждёт помощника"), ("нет {code}", "{code} ждёт"), ("NO", "{code} ждёт")],
)
def test_no_to_has_help_arrived_means_not_yet_and_keeps_the_helper(
    sms: TestClient, db: Session, sms_settings: Settings, coordinator_headers: dict[str, str], answer: str, said: str
) -> None:
    phone = "+79161234567"
    need, match = _taken_and_asked_if_help_came(sms, db, sms_settings, coordinator_headers, phone)
    expires = need.expires_at
    assert expires is not None
    reply = _text(sms, phone, answer.format(code=need.code))
    assert said.format(code=need.code) in reply
    db.expire_all()
    kept = db.get(Need, need.id)
    assert kept is not None
    assert kept.status is NeedStatus.assigned
    assert kept.expires_at is not None
    assert kept.expires_at > expires  # asked again later
    assert kept.reconfirm_requested_at is None
    assert db.get(Match, match.id).status is MatchStatus.accepted  # type: ignore[union-attr]
    called_off = db.scalars(select(Message).where(Message.match_id == match.id, Message.body.like("%отменена%")))
    assert called_off.all() == []
    # The helper hears that they are still awaited, once.
    nudge = db.scalars(select(Message).where(Message.idempotency_key.like(f"match:{match.id}:still-waiting:%"))).one()
    assert nudge.phone == "+79165550001"
    assert f"НЕТ {match.id}" in nudge.body


def test_the_latest_question_is_the_one_a_bare_yes_answers(
    sms: TestClient, db: Session, sms_settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    phone = "+79161234567"
    # «помощь пришла?» a day ago, not answered
    taken, _ = _taken_and_asked_if_help_came(sms, db, sms_settings, coordinator_headers, phone, days_ago=1)
    _text(sms, phone, "нужна еда, 56.0 41.0")
    food = db.scalars(select(Need).where(Need.contact_phone == phone, Need.id != taken.id)).one()
    assert food.expires_at is not None
    expires = food.expires_at
    ask_at = expires - timedelta(hours=sms_settings.need_reconfirm_before_hours - 1)
    state = sms.app.state  # type: ignore[attr-defined]
    upkeep_job(sessions=state.sessionmaker, settings=sms_settings, live=state.live_index, now=ask_at)
    reply = _text(sms, phone, "ДА")
    assert food.code in reply
    db.expire_all()
    renewed = db.get(Need, food.id)
    assert renewed is not None
    assert renewed.reconfirm_requested_at is None
    assert renewed.expires_at is not None
    assert renewed.expires_at > expires
    assert db.get(Need, taken.id).reconfirm_requested_at is not None  # type: ignore[union-attr]


def test_a_bare_yes_to_two_questions_asked_at_once_asks_which(
    sms: TestClient, db: Session, sms_settings: Settings
) -> None:
    phone = "+79161234567"
    _text(sms, phone, "нужна вода, 55.0 40.0")
    _text(sms, phone, "нужна еда, 55.0 40.0")
    needs = db.scalars(select(Need).where(Need.contact_phone == phone).order_by(Need.id)).all()
    assert len(needs) == 2
    latest = max(n.expires_at for n in needs if n.expires_at is not None)
    ask_at = latest - timedelta(hours=sms_settings.need_reconfirm_before_hours - 1)
    state = sms.app.state  # type: ignore[attr-defined]
    report = upkeep_job(sessions=state.sessionmaker, settings=sms_settings, live=state.live_index, now=ask_at)
    assert report is not None
    assert report.reconfirm_requested == 2
    reply = _text(sms, phone, "ДА")
    assert all(n.code in reply for n in needs)
    assert reply.startswith("Какая заявка?")
    db.expire_all()
    assert all(db.get(Need, n.id).reconfirm_requested_at is not None for n in needs)  # type: ignore[union-attr]


def test_a_helper_who_accepted_by_sms_can_give_the_task_back_with_no(sms: TestClient, db: Session) -> None:
    helper_phone = "+79165550001"
    _water_offer(sms, helper_phone)
    _text(sms, "+79161234567", "нужна вода, 55.0 40.0")
    need = db.scalars(select(Need)).one()
    (match,) = db.scalars(select(Match).where(Match.need_id == need.id))
    assert "Контакт" in _text(sms, helper_phone, f"ДА {match.id}")
    assert _text(sms, helper_phone, "НЕТ").startswith("Укажите номер задачи")  # a bare NO gives nothing back
    db.expire_all()
    assert db.get(Match, match.id).status is MatchStatus.accepted  # type: ignore[union-attr]
    assert f"задачу {match.id} другому" in _text(sms, helper_phone, f"НЕТ {match.id}")
    db.expire_all()
    assert db.get(Match, match.id).status is MatchStatus.declined  # type: ignore[union-attr]
    back = db.get(Need, need.id)
    assert back is not None
    assert (back.status, back.quantity_assigned) == (NeedStatus.open, 0)
    told = db.scalars(select(Message).where(Message.idempotency_key == f"match:{match.id}:given-back")).one()
    assert told.phone == "+79161234567"


def _food_offer(client: TestClient) -> None:
    """A food helper 1 km north of (56.0, 41.0), radius 40 km."""
    r = client.post(
        "/api/offers",
        json={
            "categories": ["food"],
            "capacity": 1,
            "radius_km": 40,
            "lat": 56.01,
            "lon": 41.0,
            "phone": "+79165550009",
        },
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("given_back", [False, True])
def test_no_to_still_needed_for_a_need_taken_since_still_withdraws_it_and_no_other(
    sms: TestClient, db: Session, sms_settings: Settings, coordinator_headers: dict[str, str], given_back: bool
) -> None:
    """«Ещё нужна?» asked of A, then of B; a helper takes B; the author's bare НЕТ answers B (the
    last question) and withdraws it: a NO to «still needed?» is not "help has not come yet"."""
    phone = "+79161234567"
    patient = sms_settings.model_copy(update={"match_response_timeout_s": 10**7})  # requests stay open
    state = sms.app.state  # type: ignore[attr-defined]
    _food_offer(sms)
    _text(sms, phone, "нужна вода, 55.0 40.0")  # A: nobody in range
    _text(sms, phone, "нужна еда, 56.0 41.0")  # B: the food helper is asked
    a = db.scalars(select(Need).where(Need.contact_phone == phone, Need.category == "water")).one()
    b = db.scalars(select(Need).where(Need.contact_phone == phone, Need.category == "food")).one()
    assert a.expires_at is not None
    base = a.expires_at
    b.expires_at = base + timedelta(hours=5)
    db.commit()
    for hours_before in (11, 6):  # A asked, then B
        report = upkeep_job(
            sessions=state.sessionmaker,
            settings=patient,
            live=state.live_index,
            now=base - timedelta(hours=hours_before),
        )
        assert report is not None
        assert report.reconfirm_requested == 1
    (m,) = db.scalars(select(Match).where(Match.need_id == b.id))
    assert sms.post(f"/api/matches/{m.id}/accept", headers=coordinator_headers).status_code == 200
    if given_back:  # and the helper gave it back: the question still waits for its answer
        assert sms.post(f"/api/matches/{m.id}/decline", headers=coordinator_headers).status_code == 200
    # Not sent yet when taken: «ещё нужна?» no longer fits a need helpers took all of.
    sender = FakeSender()
    drain(sessions=state.sessionmaker, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100))
    asked_b = [m["key"] for m in sender.sent if m["key"].startswith(f"need:{b.id}:still-needed:")]
    assert len(asked_b) == (1 if given_back else 0)
    reply = _text(sms, phone, "НЕТ")
    assert b.code in reply
    db.expire_all()
    assert db.get(Need, a.id).status is NeedStatus.open  # type: ignore[union-attr]
    assert db.get(Need, b.id).status is NeedStatus.cancelled  # type: ignore[union-attr]
    called_off = MatchStatus.declined if given_back else MatchStatus.cancelled  # the helper is called off
    assert db.get(Match, m.id).status is called_off  # type: ignore[union-attr]


# -- understanding and conversations -------------------------------------------------------------


def test_a_missing_place_is_asked_for_once_and_remembered(sms: TestClient, db: Session) -> None:
    question = _text(sms, "+79161234567", "нужна вода, 2 человека")
    assert "Где вы" in question
    assert db.scalar(select(func.count(Need.id))) == 0
    done = _text(sms, "+79161234567", "Белоомут")
    need = db.scalar(select(Need))
    assert need is not None
    assert need.code in done
    assert need.category.value == "water"
    assert need.quantity == 2
    assert need.source is Source.sms
    assert haversine_km(need.lat, need.lon, *BELOOMUT) < 10
    # A new message starts afresh: nothing is asked twice, nothing left over.
    _text(sms, "+79161234567", "нужна еда, Белоомут")
    assert db.scalar(select(func.count(Need.id))) == 2


def test_a_street_address_with_its_settlement_after_it_is_not_asked_again(sms: TestClient, db: Session) -> None:
    """«дом 12 ул. Ленина Рязань»: the house before its street, the settlement right after the
    street's name; the need is made at once, its address as written."""
    reply = _text(sms, "+79161234567", "нужна вода дом 12 ул. Ленина Рязань")
    need = db.scalar(select(Need))
    assert need is not None, reply
    assert need.code in reply
    assert haversine_km(need.lat, need.lon, *RYAZAN) < 10
    assert need.address is not None
    assert "ул. Ленина" in need.address
    assert "дом 12" in need.address


def test_a_street_whose_name_ends_in_a_far_villages_name_is_asked_about(sms: TestClient, db: Session) -> None:
    """«ул. Сергея Лазо» is a street, not the village Лазо 7,000 km east: the place is asked for
    instead of a need made there; the settlement sent next places it."""
    reply = _text(sms, "+79161234567", "нужна вода ул. Сергея Лазо 5")
    assert db.scalar(select(func.count(Need.id))) == 0, reply
    _text(sms, "+79161234567", "Рязань")
    need = db.scalar(select(Need))
    assert need is not None
    assert haversine_km(need.lat, need.lon, *RYAZAN) < 10


def test_an_unknown_place_is_asked_again_in_other_words(sms: TestClient, db: Session) -> None:
    reply = _text(sms, "+79161234567", "нужна вода в Нигдевильске")
    assert "Нигдевильск" in reply
    assert db.scalar(select(func.count(Need.id))) == 0
    _text(sms, "+79161234567", "Рязань")
    assert db.scalar(select(func.count(Need.id))) == 1


def test_a_message_nobody_understands_is_kept_for_triage_and_answered_with_a_hint(
    sms: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    reply = _text(sms, "+79161234567", "ааа ыыы")
    assert reply.startswith("Не поняли")
    (message,) = db.scalars(select(Message))
    assert message.status is MessageStatus.unparsed
    assert message.body == "ааа ыыы"
    triage = sms.get("/api/messages?status=unparsed", headers=coordinator_headers).json()
    assert [m["body"] for m in triage["items"]] == ["ааа ыыы"]


def test_a_helper_registers_by_sms(sms: TestClient, db: Session) -> None:
    reply = _text(sms, "+79165550001", "могу помочь: вода, машина, 30 км, Рязань")
    assert reply.startswith("Спасибо")
    helper = db.scalar(select(Helper).where(Helper.phone == "+79165550001"))
    assert helper is not None
    (offer,) = db.scalars(select(Offer).where(Offer.helper_id == helper.id))
    assert {c.value for c in offer.categories} == {"water", "transport"}
    assert offer.radius_km == 30
    assert haversine_km(offer.lat, offer.lon, 54.62696, 39.70415) < 10


def test_stop_and_start(sms: TestClient, db: Session, sms_settings: Settings) -> None:
    _text(sms, "+79165550001", "могу помочь: вода, 30 км, Рязань")
    assert "СТАРТ" in _text(sms, "+79165550001", "СТОП")
    assert db.get(SmsOptOut, "+79165550001") is not None
    helper = db.scalar(select(Helper).where(Helper.phone == "+79165550001"))
    assert helper is not None
    assert helper.sms_consent is False
    _text(sms, "+79165550001", "START")
    db.expire_all()
    assert db.get(SmsOptOut, "+79165550001") is None
    assert db.get(Helper, helper.id).sms_consent is True  # type: ignore[union-attr]


@pytest.mark.parametrize(("out", "back"), [("CANCEL", "UNSTOP"), ("quit", "start"), ("End", "СТАРТ")])
def test_twilios_own_opt_out_words_stop_us_too(
    sms: TestClient, db: Session, sms_settings: Settings, out: str, back: str
) -> None:
    """Twilio blocks a phone that texts CANCEL, END, QUIT… (and lets it back on UNSTOP): we follow,
    or the helper's requests would be suppressed while we wait for their answer."""
    _text(sms, "+79165550002", "могу помочь: вода, 30 км, Рязань")
    _text(sms, "+79165550002", out)
    helper = db.scalar(select(Helper).where(Helper.phone == "+79165550002"))
    assert helper is not None
    assert (helper.sms_consent, db.get(SmsOptOut, "+79165550002") is not None) == (False, True)
    _text(sms, "+79165550002", back)
    db.expire_all()
    assert (db.get(Helper, helper.id).sms_consent, db.get(SmsOptOut, "+79165550002")) == (True, None)  # type: ignore[union-attr]


def test_an_opt_out_twilio_reports_in_the_webhook_is_followed(sms: TestClient, db: Session) -> None:
    """Twilio's Advanced Opt-Out may know words we do not: its ``OptOutType`` says what it did."""
    _text(sms, "+79165550003", "могу помочь: вода, 30 км, Рязань")
    form = {"MessageSid": "SMin" + "7" * 30, "From": "+79165550003", "To": "+15005550006", "Body": "ОТВАЛИТЕ"}
    assert _signed(sms, "/sms/inbound", form | {"OptOutType": "STOP"}).status_code == 200
    helper = db.scalar(select(Helper).where(Helper.phone == "+79165550003"))
    assert helper is not None
    assert helper.sms_consent is False
    assert db.get(SmsOptOut, "+79165550003") is not None
    again = {**form, "MessageSid": "SMin" + "8" * 30, "Body": "ВЕРНИТЕ", "OptOutType": "START"}
    assert _signed(sms, "/sms/inbound", again).status_code == 200
    db.expire_all()
    assert db.get(Helper, helper.id).sms_consent is True  # type: ignore[union-attr]
    assert db.get(SmsOptOut, "+79165550003") is None


def test_a_helper_twilio_reports_unsubscribed_stops_being_asked_by_sms(
    sms: TestClient, db: Session, sms_settings: Settings
) -> None:
    """A send refused with 21610 (opted out at Twilio): the helper's consent is withdrawn, so their
    next request waits on the task page (``proposed``) rather than for an SMS that cannot go."""
    offer = {"categories": ["water"], "capacity": 3, "radius_km": 30, "lat": BELOOMUT[0], "lon": BELOOMUT[1]}
    assert sms.post("/api/offers", json=offer | {"phone": "+79165550004"}).status_code == 201
    _text(sms, "+79260004455", "нужна вода, Белоомут")
    with fake_twilio() as twilio:
        twilio.fail_next(400, 21610)
        _drain(sms, twilio, sms_settings)
    helper = db.scalar(select(Helper).where(Helper.phone == "+79165550004"))
    assert helper is not None
    assert helper.sms_consent is False
    _text(sms, "+79260004466", "нужна вода, Белоомут")
    db.expire_all()
    statuses = [(m.helper_id, m.status) for m in db.scalars(select(Match).order_by(Match.id))]
    assert statuses == [(helper.id, MatchStatus.notified), (helper.id, MatchStatus.proposed)]


# -- the whole loop by SMS -----------------------------------------------------------------------


def _drain(sms: TestClient, twilio: FakeTwilio, settings: Settings) -> None:
    sender = TwilioSender(account_sid="AC" + "9" * 32, auth_token="x", from_="+15005550006", base_url=twilio.base_url)
    drain(sessions=sms.app.state.sessionmaker, sender=sender, settings=settings, bucket=TokenBucket(1000, burst=1000))  # type: ignore[attr-defined]


def test_a_russian_sms_need_reaches_helpers_and_the_author_hears_back(
    sms: TestClient, db: Session, sms_settings: Settings
) -> None:
    for k, (dlat, dlon) in enumerate([(0.01, 0.0), (0.0, 0.02), (0.03, 0.01), (0.05, -0.02)]):
        r = sms.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": 2,
                "radius_km": 40,
                "lat": BELOOMUT[0] + dlat,
                "lon": BELOOMUT[1] + dlon,
                "name": f"Помощник{k} Иванов",
                "phone": f"+7916555{k:04d}",
            },
        )
        assert r.status_code == 201
    requester = "+79260001122"
    reply = _text(sms, requester, "Срочно нужна вода, 3 человека, Белоомут")
    need = db.scalar(select(Need))
    assert need is not None
    assert need.code in reply
    assert (need.category.value, need.urgency, need.quantity) == ("water", Urgency.critical, 3)
    assert haversine_km(need.lat, need.lon, *BELOOMUT) < 10
    with fake_twilio() as twilio:
        _drain(sms, twilio, sms_settings)
        offers = {m["to"]: m["body"] for m in twilio.messages}
        assert len(offers) >= 2  # the first wave, by SMS through Twilio
        helper_phone, body = sorted(offers.items())[0]
        match_id = re.search(r"ДА (\d+)", body).group(1)  # type: ignore[union-attr]
        answer = _text(sms, helper_phone, f"ДА {match_id}")
        assert requester in answer  # the helper who accepted gets the author's contact
        assert "Задача" in answer
        db.expire_all()
        taken = db.get(Need, need.id)
        assert taken is not None
        assert taken.status is NeedStatus.partially_assigned or taken.status is NeedStatus.assigned
        assert db.get(Match, int(match_id)).status is MatchStatus.accepted  # type: ignore[union-attr]
        _drain(sms, twilio, sms_settings)
        to_requester = [m["body"] for m in twilio.messages if m["to"] == requester]
    assert len(to_requester) == 1
    assert need.code in to_requester[0]
    assert "Помощник" in to_requester[0]
    assert "+7916555" not in to_requester[0]  # the author learns a first name, not the helper's phone
    # Someone else cannot accept that helper's task, and a second YES changes nothing.
    assert "Нет задачи" in _text(sms, "+79990000000", f"ДА {match_id}")
    assert "закрыта" in _text(sms, helper_phone, f"ДА {match_id}")


def test_status_done_and_delivery_callbacks(sms: TestClient, db: Session, sms_settings: Settings) -> None:
    r = sms.post(
        "/api/offers",
        json={
            "categories": ["food"],
            "capacity": 1,
            "radius_km": 40,
            "lat": BELOOMUT[0],
            "lon": BELOOMUT[1],
            "phone": "+79165550009",
            "name": "Анна",
        },
    )
    assert r.status_code == 201
    requester = "+79260003344"
    _text(sms, requester, "нужна еда, Белоомут")
    need = db.scalar(select(Need))
    assert need is not None
    status = _text(sms, requester, "СТАТУС")
    assert f"{need.code} ищем помощника" in status  # the state in the sender's language, not "open"
    (match,) = db.scalars(select(Match))
    task_status = _text(sms, "+79165550009", "STATUS")
    assert f"{match.id} waiting for your answer" in task_status or f"{match.id} ждёт ответа" in task_status
    _text(sms, "+79165550009", "ДА")  # only one task waiting: YES without a number takes it
    db.expire_all()
    assert db.get(Match, match.id).status is MatchStatus.accepted  # type: ignore[union-attr]
    assert "выполнена" in _text(sms, "+79165550009", f"ГОТОВО {match.id}")
    db.expire_all()
    assert db.get(Match, match.id).status is MatchStatus.completed  # type: ignore[union-attr]
    assert db.get(Need, need.id).status is NeedStatus.fulfilled  # type: ignore[union-attr]
    # Delivery callbacks: signed ones update the message, forged ones are refused.
    with fake_twilio() as twilio:
        _drain(sms, twilio, sms_settings)
        sent = db.scalars(
            select(Message).where(Message.provider_sid.is_not(None), Message.direction == MessageDirection.outbound)
        ).all()
        assert sent
        sid = sent[0].provider_sid
        assert sid is not None
    form = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": "AC" + "9" * 32}
    assert sms.post("/sms/status", data=form).status_code == 403
    assert _signed(sms, "/sms/status", form).status_code == 204
    db.expire_all()
    assert db.scalar(select(Message.status).where(Message.provider_sid == sid)) is MessageStatus.delivered
    failed = form | {"MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert _signed(sms, "/sms/status", failed).status_code == 204
    db.expire_all()
    message = db.scalar(select(Message).where(Message.provider_sid == sid))
    assert message is not None
    assert message.status is MessageStatus.failed
    assert "30003" in (message.error or "")
    assert _signed(sms, "/sms/status", form | {"MessageSid": "SMunknown"}).status_code == 204


class _CallbackFirst(FakeSender):
    """Accepts a message and has its delivery callback arrive before the send's answer does (or
    instead of it: ``lose_answer``, a read timeout after the provider took it)."""

    def __init__(self, sms: TestClient, status: str, *, lose_answer: bool = False) -> None:
        super().__init__()
        self.sms, self.status, self.lose_answer = sms, status, lose_answer

    def send(self, *, to: str, body: str, key: str, status_callback: str | None = None) -> Sent:
        sent = super().send(to=to, body=body, key=key)
        form = {"MessageSid": sent.provider_sid, "MessageStatus": self.status, "ErrorCode": "30003"}
        assert _signed(self.sms, "/sms/status", form).status_code == 204
        if self.lose_answer:
            raise UnknownOutcomeError("read timeout")
        return sent


@pytest.mark.parametrize("status", ["delivered", "undelivered"])
def test_a_delivery_callback_that_overtakes_the_drain_is_not_lost(
    sms: TestClient, db: Session, sms_settings: Settings, status: str
) -> None:
    message = messages_service.queue(
        session=db, phone="+79161234567", body="Заявка принята", language="ru", idempotency_key="t:1"
    )
    db.commit()
    sessions = sms.app.state.sessionmaker  # type: ignore[attr-defined]
    sender = _CallbackFirst(sms, status)
    started = time.monotonic()
    drain(sessions=sessions, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100))
    assert time.monotonic() - started < 2.0  # the callback did not sit waiting for the id
    db.expire_all()
    stored = db.get(Message, message.id)
    assert stored is not None
    assert stored.provider_sid == sender.sent[0]["sid"]
    assert stored.status is (MessageStatus.delivered if status == "delivered" else MessageStatus.failed)
    assert db.scalar(select(func.count()).select_from(DeliveryReport)) == 0


def test_a_delivery_callback_for_a_send_whose_answer_was_lost_is_applied_when_reconciled(
    sms: TestClient, db: Session, sms_settings: Settings
) -> None:
    """The send timed out after Twilio took it; its "undelivered" came minutes before the outbox
    found the message at Twilio and stored its id: the helper never got it, and it shows."""
    message = messages_service.queue(
        session=db, phone="+79161234567", body="Нужна помощь", language="ru", idempotency_key="t:2"
    )
    db.commit()
    sessions = sms.app.state.sessionmaker  # type: ignore[attr-defined]
    sender = _CallbackFirst(sms, "undelivered", lose_answer=True)
    drain(sessions=sessions, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100))
    db.expire_all()
    assert db.get(Message, message.id).status is MessageStatus.sending  # type: ignore[union-attr]
    later = utcnow() + timedelta(seconds=sms_settings.sms_stale_sending_s + 1)
    report = drain(
        sessions=sessions, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100), now=later
    )
    assert report.reconciled == 1
    db.expire_all()
    stored = db.get(Message, message.id)
    assert stored is not None
    assert stored.status is MessageStatus.failed
    assert "30003" in (stored.error or "")
    assert len(sender.sent) == 1  # not sent again
    # A report for no message of ours is forgotten after a while.
    assert _signed(sms, "/sms/status", {"MessageSid": "SM" + "5" * 32, "MessageStatus": "delivered"}).status_code == 204
    drain(
        sessions=sessions,
        sender=sender,
        settings=sms_settings,
        bucket=TokenBucket(100, burst=100),
        now=later + timedelta(days=3),
    )
    assert db.scalar(select(func.count()).select_from(DeliveryReport)) == 0


# -- what the review of session 7 found ------------------------------------------------------------


def test_an_sos_from_a_phone_registering_as_helper_is_a_need_not_the_offers_place(sms: TestClient, db: Session) -> None:
    assert "Где" in _text(sms, "+79260001122", "могу помочь с водой")
    reply = _text(sms, "+79260001122", "SOS срочно нужна вода, 3 человека, дети, Белоомут")
    (need,) = db.scalars(select(Need))
    assert need.code in reply
    assert need.urgency is Urgency.critical
    assert db.scalar(select(func.count(Offer.id))) == 0


@pytest.mark.parametrize(
    ("first", "answer"),
    [("Могу помочь, Белоомут", "вода, машина"), ("I can help, Beloomut", "water, transport")],
)
def test_a_helper_answering_what_they_can_bring_registers_an_offer_not_a_need(
    sms: TestClient, db: Session, first: str, answer: str
) -> None:
    phone = "+79260001133"
    asked = _text(sms, phone, first)
    assert "помочь" in asked or "help" in asked  # «Чем можете помочь?»
    reply = _text(sms, phone, answer)  # alone, «вода, машина» would read as a need
    assert "Где" not in reply
    assert "Where" not in reply  # the place was given already: not asked again
    assert db.scalar(select(func.count(Need.id))) == 0
    (offer,) = db.scalars(select(Offer))
    assert {c.value for c in offer.categories} == {"water", "transport"}
    assert abs(offer.lat - 55.0) < 0.5  # Beloomut, near Ryazan


def test_a_bare_yes_with_nothing_waiting_says_so_plainly(sms: TestClient) -> None:
    assert _text(sms, "+79161230000", "ДА").startswith("Нет заявок и задач, ждущих вашего ответа.")
    assert _text(sms, "+79161230001", "YES").startswith("Nothing is waiting for your answer.")


def test_a_need_sent_right_after_another_takes_its_place_without_asking_again(sms: TestClient, db: Session) -> None:
    phone = "+79161234568"
    _text(sms, phone, "нужна вода, Белоомут")
    reply = _text(sms, phone, "и еда тоже")
    assert "Где" not in reply
    water, food = db.scalars(select(Need).order_by(Need.id)).all()
    assert food.category.value == "food"
    assert food.code in reply
    assert (food.lat, food.lon) == (water.lat, water.lon)
    # Long after, the place is asked again: people move.
    food.created_at = water.created_at = utcnow() - timedelta(hours=2)
    db.commit()
    assert "Где" in _text(sms, phone, "нужны лекарства")


def test_an_answer_of_the_same_kind_adds_what_it_asks_for(sms: TestClient, db: Session) -> None:
    _text(sms, "+79161234567", "нужна вода, 2 человека")
    _text(sms, "+79161234567", "нужна еда, Белоомут")
    needs = db.scalars(select(Need).order_by(Need.id)).all()
    assert [n.category.value for n in needs] == ["water", "food"]
    # The description holds the whole conversation, not only its last message.
    assert all(n.description == "нужна вода, 2 человека\nнужна еда, Белоомут" for n in needs)


@pytest.mark.parametrize(
    ("body", "category"),
    [
        ("Нет сахара и хлеба, детям нечего есть, Белоомут", "food"),  # «сахара» folds to CAXAPA
        ("Да, вместе с детьми, нужна эвакуация, Белоомут", "evacuation"),  # «вместе» to BMECTE
    ],
)
def test_a_need_starting_like_a_command_with_a_code_like_word_is_a_need(
    sms: TestClient, db: Session, body: str, category: str
) -> None:
    reply = _text(sms, "+79161234567", body)
    (need,) = db.scalars(select(Need))
    assert need.category.value == category
    assert need.code in reply
    # A bare command with a code nobody has stays a command.
    assert "Нет задачи" in _text(sms, "+79161234567", "НЕТ CAXAPA")
    assert db.scalar(select(func.count(Need.id))) == 1


def test_a_need_code_of_digits_only_works_by_sms(sms: TestClient, db: Session) -> None:
    _text(sms, "+79161234567", "нужна еда, Белоомут")
    need = db.scalar(select(Need))
    assert need is not None
    need.code = "234567"  # 8 of the 18 code characters are digits: about 0.8 % of codes are like this
    db.commit()
    assert "продлена" in _text(sms, "+79161234567", "ДА 234567")
    assert "закрыта" in _text(sms, "+79161234567", "ГОТОВО 234567")
    db.expire_all()
    assert db.get(Need, need.id).status is NeedStatus.fulfilled  # type: ignore[union-attr]
    # Another phone cannot use the code; a closed need stays as it was.
    assert "Нет задачи" in _text(sms, "+79169999999", "НЕТ 234567")
    assert "уже закрыта" in _text(sms, "+79161234567", "НЕТ 234567")
    db.expire_all()
    assert db.get(Need, need.id).status is NeedStatus.fulfilled  # type: ignore[union-attr]


def test_stop_is_acted_on_even_over_the_phones_rate_limit(
    sms_settings: Settings, gazetteer: GazetteerGeocoder, db: Session
) -> None:
    strict = sms_settings.model_copy(update={"sms_per_phone_burst": 2.0, "sms_per_phone_per_min": 0.01})
    with TestClient(create_app(strict, geocoder=gazetteer), raise_server_exceptions=False) as c:
        _text(c, "+79165550001", "могу помочь: вода, 30 км, Рязань")
        _text(c, "+79165550001", "СТАТУС")
        form = {"MessageSid": "SMlimited" + "0" * 25, "From": "+79165550001", "To": "+15005550006", "Body": "ещё"}
        assert _signed(c, "/sms/inbound", form).status_code == 429  # the limit holds for the rest
        assert "СТАРТ" in _text(c, "+79165550001", "СТОП")
    assert db.get(SmsOptOut, "+79165550001") is not None


def test_the_open_needs_limit_by_sms_is_said_plainly(
    sms_settings: Settings, gazetteer: GazetteerGeocoder, db: Session
) -> None:
    one = sms_settings.model_copy(update={"max_open_needs_per_phone": 1})
    with TestClient(create_app(one, geocoder=gazetteer), raise_server_exceptions=False) as c:
        _text(c, "+79161234567", "need water, Beloomut")
        reply = _text(c, "+79161234567", "need food, Beloomut")
    assert reply == "You already have 1 open requests. Close one (DONE code) or call a coordinator."
    assert db.scalar(select(func.count(Need.id))) == 1
    last = db.scalars(select(Message).where(Message.direction == MessageDirection.inbound).order_by(Message.id)).all()[
        -1
    ]
    assert last.status is MessageStatus.parsed
    assert last.parsed is not None
    assert "error" not in last.parsed


def _water_offer(client: TestClient, phone: str) -> None:
    """A water helper 1 km north of (55.0, 40.0), radius 40 km."""
    r = client.post(
        "/api/offers",
        json={"categories": ["water"], "capacity": 1, "radius_km": 40, "lat": 55.01, "lon": 40.0, "phone": phone},
    )
    assert r.status_code == 201, r.text


def test_a_request_withdrawn_before_the_drain_is_not_sent(sms: TestClient, db: Session, sms_settings: Settings) -> None:
    _water_offer(sms, "+79160000001")
    need = sms.post(
        "/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.0, "contact_phone": "+79260001122"}
    ).json()
    assert need["helpers_in_range"] == 1
    assert "закрыта" in _text(sms, "+79260001122", f"НЕТ {need['code']}")  # the author cancels at once
    sender = FakeSender()
    drain(sessions=sms.app.state.sessionmaker, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100))  # type: ignore[attr-defined]
    sent = [m["to"] for m in sender.sent if not m["key"].endswith(":signed-up")]
    assert sent == ["+79260001122"]  # the author's receipt; no task to the helper
    (ask,) = db.scalars(select(Message).where(Message.phone == "+79160000001", Message.match_id.is_not(None)))
    assert ask.status is MessageStatus.suppressed
    assert ask.error == "request withdrawn"


def test_a_question_answered_and_a_reminder_for_a_task_done_before_the_drain_are_not_sent(
    sms: TestClient, db: Session, sms_settings: Settings, coordinator_headers: dict[str, str]
) -> None:
    phone = "+79161234567"
    need, _ = _taken_and_asked_if_help_came(sms, db, sms_settings, coordinator_headers, phone)
    assert need.code in _text(sms, phone, "ГОТОВО")  # answered before the outbox ran
    sender = FakeSender()
    drain(sessions=sms.app.state.sessionmaker, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100))  # type: ignore[attr-defined]
    keys = [m["key"] for m in sender.sent]
    assert not [k for k in keys if "help-arrived" in k or "done-reminder" in k]  # neither went out
    assert any(k.endswith(":accepted:helper") for k in keys)  # what still stood did
    late = {
        m.idempotency_key.split(":")[2]: (m.status, m.error)
        for m in db.scalars(select(Message).where(Message.idempotency_key.like("%:help-arrived:%")))
        if m.idempotency_key
    } | {
        m.idempotency_key.split(":")[2]: (m.status, m.error)
        for m in db.scalars(select(Message).where(Message.idempotency_key.like("%:done-reminder:%")))
        if m.idempotency_key
    }
    assert late == {
        "help-arrived": (MessageStatus.suppressed, "question answered"),
        "done-reminder": (MessageStatus.suppressed, "task settled"),
    }


def test_a_question_of_an_earlier_round_is_not_sent_after_its_need_was_renewed_and_asked_again(
    sms: TestClient, db: Session, sms_settings: Settings
) -> None:
    phone = "+79161234567"
    _text(sms, phone, "нужна вода, 55.0 40.0")
    need = db.scalars(select(Need)).one()
    state = sms.app.state  # type: ignore[attr-defined]
    lead = timedelta(hours=sms_settings.need_reconfirm_before_hours - 1)
    first = need.expires_at
    assert first is not None
    upkeep_job(sessions=state.sessionmaker, settings=sms_settings, live=state.live_index, now=first - lead)
    assert need.code in _text(sms, phone, "ДА")  # answered (by SMS) before the outbox sent the question
    db.expire_all()
    renewed = db.get(Need, need.id)
    assert renewed is not None
    assert renewed.expires_at is not None
    upkeep_job(sessions=state.sessionmaker, settings=sms_settings, live=state.live_index, now=renewed.expires_at - lead)
    sender = FakeSender()
    drain(sessions=state.sessionmaker, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100))
    asked = [m["key"] for m in sender.sent if ":still-needed:" in m["key"]]
    assert asked == [f"need:{need.id}:still-needed:{renewed.expires_at.isoformat()}"]  # the present round only
    dropped = db.scalars(select(Message).where(Message.status == MessageStatus.suppressed)).all()
    assert [(m.error, m.idempotency_key) for m in dropped] == [
        ("question answered", f"need:{need.id}:still-needed:{first.isoformat()}")
    ]


def test_an_answer_by_sms_stays_within_the_segment_limit(sms: TestClient, db: Session, sms_settings: Settings) -> None:
    helper_phone = "+79160000041"
    _water_offer(sms, helper_phone)
    address = "ул. Длинная, дом 5, подъезд 2, за мостом у старой школы, " * 6
    need = sms.post(
        "/api/needs",
        json={"category": "water", "lat": 55.0, "lon": 40.0, "address": address, "contact_phone": "+79260001122"},
    ).json()
    (match,) = db.scalars(select(Match).where(Match.need_id == need["id"]))
    answer = _text(sms, helper_phone, f"ДА {match.id}")
    assert "Контакт: +79260001122" in answer  # the contact comes first and is kept
    assert segments(answer) <= sms_settings.sms_max_segments
    stored = db.scalars(select(Message).where(Message.direction == MessageDirection.inbound)).all()[-1]
    assert stored.parsed is not None
    assert stored.parsed["reply"] == answer  # a Twilio retry gets the same answer


# Two messages from one phone at the same moment: handled one after the other (a per-phone lock).


def _at_once(sms: TestClient, monkeypatch: pytest.MonkeyPatch, phone: str, bodies: list[str]) -> list[str]:
    """Send the bodies from one phone at once; each handling waits up to 2 s for the other to catch up
    right after it starts (as two requests of two workers could), then goes on."""
    from aidmatch.sms import service as sms_service

    meet = threading.Barrier(len(bodies), timeout=2)
    real = sms_service.parse_sms  # type: ignore[attr-defined]

    def slow_parse(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(sms_service, "parse_sms", slow_parse)
    answers: dict[int, str] = {}

    def send(k: int) -> None:
        answers[k] = _text(sms, phone, bodies[k])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [answers[k] for k in range(len(bodies))]


def test_the_same_need_sent_twice_at_once_is_one_need(
    sms: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = _at_once(
        sms, monkeypatch, "+79161230001", ["нужна вода 5 литров Белоомут", "нужна вода, 5 литров, Белоомут"]
    )
    needs = list(db.scalars(select(Need)))
    assert len(needs) == 1
    assert all(needs[0].code in a for a in answers)


def test_two_messages_opening_a_conversation_at_once_both_join_it(
    sms: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = _at_once(sms, monkeypatch, "+79161230002", ["need water please", "need food for 3 people"])
    assert all("Where" in a for a in answers), answers  # both asked where, in English; neither failed
    inbound = list(db.scalars(select(Message).where(Message.direction == MessageDirection.inbound)))
    assert [m.status for m in inbound] != [MessageStatus.unparsed] * 2
    assert all((m.parsed or {}).get("error") is None for m in inbound)
    _text(sms, "+79161230002", "Белоомут")  # the place completes the conversation: both requests stand
    assert sorted(n.category.value for n in db.scalars(select(Need))) == ["food", "water"]


def test_a_need_from_a_number_we_cannot_read_goes_to_the_coordinators(sms: TestClient, db: Session) -> None:
    reply = _text(sms, "+447700900123", "need water for 3 people in Beloomut")  # not a valid number
    assert "cannot register" in reply  # in the sender's language, not a Russian "not understood"
    (message,) = db.scalars(select(Message).where(Message.direction == MessageDirection.inbound))
    assert message.status is MessageStatus.unparsed  # in the coordinators' triage queue
    assert db.scalar(select(func.count(Need.id))) == 0


def test_a_retry_while_the_first_delivery_is_handled_is_answered(
    sms: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aidmatch.sms import router as sms_router
    from aidmatch.sms import service as sms_service

    monkeypatch.setattr(sms_router, "RETRY_WAIT_S", 0.3)
    real = sms_service.handle
    during: list[str] = []

    def slow_handle(**kwargs: Any) -> Any:
        if not during:  # Twilio's retry lands while this delivery is still at work
            during.append(_text(sms, "+79161234567", "нужна вода 5 литров Белоомут", sid="SM" + "7" * 32))
        return real(**kwargs)

    monkeypatch.setattr(sms_service, "handle", slow_handle)
    first = _text(sms, "+79161234567", "нужна вода 5 литров Белоомут", sid="SM" + "7" * 32)
    assert during == ["Сообщение получено, обрабатываем."]  # not an empty answer
    code = db.scalars(select(Need.code)).one()
    assert code in first
    assert _text(sms, "+79161234567", "нужна вода 5 литров Белоомут", sid="SM" + "7" * 32) == first  # later: the reply


def test_a_retry_of_a_message_whose_delivery_died_handles_it(sms: TestClient, db: Session) -> None:
    long_ago = utcnow() - timedelta(minutes=5)
    db.add(
        Message(
            direction=MessageDirection.inbound,
            status=MessageStatus.received,  # stored, then the process died before handling it
            phone="+79161234567",
            body="нужна вода 5 литров Белоомут",
            provider_sid="SM" + "8" * 32,
            created_at=long_ago,
            updated_at=long_ago,
        )
    )
    db.commit()
    reply = _text(sms, "+79161234567", "нужна вода 5 литров Белоомут", sid="SM" + "8" * 32)
    need = db.scalars(select(Need)).one()
    assert need.code in reply
    db.expire_all()
    (message,) = db.scalars(select(Message).where(Message.direction == MessageDirection.inbound))
    assert message.status is MessageStatus.parsed
    assert message.need_id == need.id


def test_the_same_offer_sent_twice_is_one_offer(sms: TestClient, db: Session) -> None:
    for text in ("могу помочь: вода, машина, 30 км, Рязань", "могу помочь: вода, машина, 50 км, Рязань"):
        assert _text(sms, "+79165550002", text).startswith("Спасибо")
    (offer,) = db.scalars(select(Offer))  # a resend bumps the offer: its helper's capacity counts once
    assert offer.radius_km == 50
    assert _text(sms, "+79165550002", "могу помочь: еда, Рязань").startswith("Спасибо")  # another offer
    assert sorted(len(o.categories) for o in db.scalars(select(Offer))) == [1, 2]


def test_a_repeat_by_sms_asking_for_more_asks_the_next_helper(sms: TestClient, db: Session) -> None:
    for k, km in enumerate((1, 2)):  # water helpers 1 and 2 km north of Beloomut, one unit each
        r = sms.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": 1,
                "radius_km": 40,
                "lat": BELOOMUT[0] + km / 111.2,
                "lon": BELOOMUT[1],
                "phone": f"+7916555000{k}",
            },
        )
        assert r.status_code == 201, r.text
    phone = "+79161230077"
    first = _text(sms, phone, "нужна вода, Белоомут")
    (need,) = db.scalars(select(Need).where(Need.contact_phone == phone))
    assert need.code in first

    def asked() -> list[str]:
        db.expire_all()
        rows = db.execute(
            select(Helper.phone).join(Offer, Offer.helper_id == Helper.id).join(Match, Match.offer_id == Offer.id)
        )
        return [p for (p,) in rows.all()]

    assert asked() == ["+79165550000"]
    again = _text(sms, phone, "ещё нужна вода, 2 человека, Белоомут")
    assert need.code in again
    assert db.scalar(select(func.count(Need.id))) == 1
    assert sorted(asked()) == ["+79165550000", "+79165550001"]  # the second unit: the next helper
    _text(sms, phone, "ещё нужна вода, 2 человека, Белоомут")
    assert len(asked()) == 2  # nothing more to ask for, nobody asked twice


def test_odd_inbound_fields_are_stored_not_a_500(sms: TestClient, db: Session) -> None:
    """A NUL in the text (PostgreSQL refuses it in a text column) and a sid longer than any of
    Twilio's: the message is kept and answered all the same."""
    reply = _text(sms, "+79260001122", "нужна вода\x00, Белоомут")
    assert "вода" in reply.lower() or "Питьевая" in reply
    stored = db.scalar(select(Message).where(Message.phone == "+79260001122"))
    assert stored is not None
    assert stored.body == "нужна вода, Белоомут"
    _text(sms, "+79260001123", "помощь", sid="SM" + "9" * 100)
    kept = db.scalar(select(Message).where(Message.phone == "+79260001123"))
    assert kept is not None
    assert kept.body == "помощь"
    assert kept.provider_sid is None


def test_a_delivery_callback_without_a_sid_changes_no_message(sms: TestClient, db: Session) -> None:
    """``provider_sid == None`` would pick a message not sent yet and mark it delivered (never sent)."""
    messages_service.queue(session=db, phone="+79260001124", body="код", language="ru", idempotency_key="k:1")
    db.commit()
    queued = db.scalars(select(Message).where(Message.status == MessageStatus.queued)).all()
    assert len(queued) == 1
    assert _signed(sms, "/sms/status", {"MessageStatus": "delivered"}).status_code == 204
    db.expire_all()
    assert {db.get(Message, m.id).status for m in queued} == {MessageStatus.queued}  # type: ignore[union-attr]


# -- a phone signed up as a helper by someone else -----------------------------------------------


def _outbound_to(db: Session, phone: str) -> list[Message]:
    db.expire_all()
    return list(
        db.scalars(
            select(Message)
            .where(Message.phone == phone, Message.direction == MessageDirection.outbound)
            .order_by(Message.id)
        )
    )


@pytest.mark.parametrize("route", ["api-offer", "web-offer", "api-helper"])
def test_a_phone_signed_up_on_the_web_is_told_by_sms_and_can_say_stop(
    sms: TestClient, db: Session, sms_settings: Settings, route: str
) -> None:
    """Anyone may give any number when offering help: its owner hears of it at once, without a word
    of the form in the SMS, and STOP ends their requests by SMS."""
    phone = "+79160000077"
    name = "Buy cheap pills at spam.example"  # whoever signs a stranger up writes nothing to them
    if route == "api-offer":
        r = sms.post(
            "/api/offers",
            json={
                "categories": ["water"],
                "capacity": 1,
                "radius_km": 40,
                "lat": 55.01,
                "lon": 40.0,
                "phone": phone,
                "name": name,
                "language": "en",
            },
        )
        assert r.status_code == 201, r.text
    elif route == "web-offer":
        r = sms.post(
            "/offer?lang=en",
            data={
                "categories": "water",
                "capacity": "1",
                "radius_km": "40",
                "lat": "55.01",
                "lon": "40.0",
                "phone": phone,
                "name": name,
                "language": "en",
            },
        )
        assert r.status_code == 200, r.text
        assert "/tasks/" in r.text
    else:
        r = sms.post("/api/helpers", json={"name": name, "phone": phone, "language": "en"})
        assert r.status_code == 201, r.text
    (told,) = _outbound_to(db, phone)
    helper = db.scalar(select(Helper).where(Helper.phone == phone))
    assert helper is not None
    assert helper.sms_consent
    assert told.idempotency_key == f"helper:{helper.id}:signed-up"
    assert told.helper_id == helper.id
    assert "signed up as a helper" in told.body
    assert "Reply STOP" in told.body
    assert "spam" not in told.body  # neither the name
    assert "/tasks/" not in told.body  # nor the link
    sender = FakeSender()
    drain(sessions=sms.app.state.sessionmaker, sender=sender, settings=sms_settings, bucket=TokenBucket(100, burst=100))  # type: ignore[attr-defined]
    assert [m["to"] for m in sender.sent] == [phone]

    _text(sms, phone, "STOP")  # "not me"
    db.expire_all()
    assert not db.scalar(select(Helper.sms_consent).where(Helper.phone == phone))
    if route != "api-helper":  # a need near by: the request waits on the task page, no SMS
        need = sms.post("/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.0}).json()
        (match,) = db.scalars(select(Match).where(Match.need_id == need["id"]))
        assert match.status is MatchStatus.proposed
        assert [m.idempotency_key for m in _outbound_to(db, phone)] == [told.idempotency_key]


def test_a_helper_signed_up_by_their_own_sms_gets_the_reply_only(sms: TestClient, db: Session) -> None:
    phone = "+79160000078"
    reply = _text(sms, phone, "могу помочь: вода, машина, 30 км, Рязань")
    assert reply
    assert db.scalar(select(Helper).where(Helper.phone == phone)) is not None
    assert _outbound_to(db, phone) == []  # the reply was the SMS; nothing more queued


def test_a_phone_that_said_stop_signed_up_later_has_no_sms_consent(sms: TestClient, db: Session) -> None:
    """STOP said before (as the author of a need, say) stands when someone later signs the phone up."""
    phone = "+79160000079"
    _text(sms, phone, "СТОП")
    r = sms.post(
        "/api/offers",
        json={"categories": ["water"], "capacity": 1, "radius_km": 40, "lat": 55.01, "lon": 40.0, "phone": phone},
    )
    assert r.status_code == 201, r.text
    helper = db.scalar(select(Helper).where(Helper.phone == phone))
    assert helper is not None
    assert not helper.sms_consent
    need = sms.post("/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.0}).json()
    (match,) = db.scalars(select(Match).where(Match.need_id == need["id"]))
    assert match.status is MatchStatus.proposed  # not "notified" by an SMS the outbox would block
    assert not [m for m in _outbound_to(db, phone) if m.match_id is not None]


# -- review of the inbound SMS path --------------------------------------------------------------


@pytest.mark.parametrize(
    "words", ["{id} дня воды, Рязань", "{id} суток без воды, Рязань", "{id} days without water, Ryazan"]
)
def test_a_helper_saying_how_long_they_are_without_water_makes_a_need_and_keeps_the_task(
    sms: TestClient, db: Session, words: str
) -> None:
    helper_phone = "+79165550001"
    _water_offer(sms, helper_phone)
    _text(sms, "+79161234567", "нужна вода, 55.0 40.0")
    (match,) = db.scalars(select(Match))
    command = "No" if "days" in words else "Нет"
    reply = _text(sms, helper_phone, f"{command} {words.format(id=match.id)}")
    db.expire_all()
    assert db.get(Match, match.id).status is not MatchStatus.declined  # type: ignore[union-attr]
    (need,) = db.scalars(select(Need).where(Need.contact_phone == helper_phone))
    assert need.category.value == "water"
    assert need.code in reply


@pytest.mark.parametrize("body", ["Нет 3, воды нет совсем, Рязань", "нет 4 - нет еды, Тула"])
def test_a_number_that_names_nothing_of_the_sender_before_a_whole_request_is_a_need(
    sms: TestClient, db: Session, body: str
) -> None:
    reply = _text(sms, "+79161234567", body)
    (need,) = db.scalars(select(Need))
    assert need.code in reply
    # Alone, or before a short tail, the number stays a task number.
    assert "Нет задачи 3" in _text(sms, "+79161234567", "НЕТ 3")
    assert "Нет задачи 12" in _text(sms, "+79161234567", "нет 12, спасибо")


@pytest.mark.parametrize("body", ["Вода больше не нужна", "Спасибо, воду привезли", "we dont need water anymore"])
def test_no_longer_needed_neither_renews_the_need_nor_makes_one_and_says_how_to_close_it(
    sms: TestClient, db: Session, body: str
) -> None:
    phone = "+79161234567"
    _text(sms, phone, "нужна вода, Рязань")
    (need,) = db.scalars(select(Need))
    expires, updated = need.expires_at, need.updated_at
    reply = _text(sms, phone, body)
    db.expire_all()
    (again,) = db.scalars(select(Need))  # no second need, and the first is not renewed
    assert (again.status, again.expires_at, again.updated_at) == (NeedStatus.open, expires, updated)
    assert f"{need.code}" in reply
    assert ("НЕТ" in reply) or ("NO" in reply)
    # Said while we were asking where: the conversation ends, nothing is asked or made.
    other = "+79161234599"
    assert "Где" in _text(sms, other, "нужна вода")
    assert "Где" not in _text(sms, other, body)
    assert "Где" not in _text(sms, other, "Рязань")
    assert db.scalar(select(func.count(Need.id)).where(Need.contact_phone == other)) == 0


@pytest.mark.parametrize(
    ("body", "category"),
    [
        ("У кого есть лодка? Нужно вывезти людей, Белоомут", "transport"),
        ("Есть ли у кого генератор? Белоомут", "power"),
        ("Who can give us water? Ryazan", "water"),
        ("Могу ли я получить помощь? Нет воды, Рязань", "water"),
    ],
)
def test_asking_who_has_something_makes_a_need_not_a_helper(
    sms: TestClient, db: Session, body: str, category: str
) -> None:
    reply = _text(sms, "+79161234567", body)
    assert db.scalar(select(func.count(Offer.id))) == 0
    assert db.scalar(select(func.count(Helper.id))) == 0
    needs = db.scalars(select(Need)).all()
    assert category in {n.category.value for n in needs}
    assert all(n.code in reply for n in needs)


RYAZAN = (54.6269, 39.6916)


@pytest.mark.parametrize(
    "body",
    [
        "Маме нужна скорая, Рязань",
        "Мальчику нужна вода, Рязань",
        "Поселку нужна вода, Рязань",
        "Папе нужен врач, Рязань",
    ],
)
def test_the_town_named_later_wins_over_a_capitalised_first_word(sms: TestClient, db: Session, body: str) -> None:
    reply = _text(sms, "+79161234567", body)
    (need,) = db.scalars(select(Need))
    assert need.code in reply
    assert haversine_km(need.lat, need.lon, *RYAZAN) < 20
    assert need.address == "Рязань"  # what the helper is sent, not «Маме» or «Папе»


def test_who_needs_it_is_not_taken_for_the_place(sms: TestClient, db: Session) -> None:
    assert _text(sms, "+79161234567", "Сыну нужен инсулин").startswith("Где вы?")
    _text(sms, "+79161234567", "Рязань")
    (need,) = db.scalars(select(Need))
    assert need.category.value == "medicine"
    assert haversine_km(need.lat, need.lon, *RYAZAN) < 20


def test_a_place_found_in_the_text_is_stored_by_its_name(gazetteer: GazetteerGeocoder) -> None:
    body = "нужна вода, Рязань"
    parsed = dataclasses.replace(parse_sms(body), place_text="Папе")  # words the gazetteer cannot place
    place = _locate(parsed, gazetteer, body)
    assert place is not None
    assert place.text == "Рязань"
    assert haversine_km(place.lat, place.lon, *RYAZAN) < 20


@pytest.mark.parametrize("answer", ["Приютово", "приютово", "Кошки", "в Кошках"])
def test_a_settlement_named_like_a_keyword_answers_where_you_are(sms: TestClient, db: Session, answer: str) -> None:
    phone = "+79161234567"
    assert _text(sms, phone, "нужна вода").startswith("Где вы?")
    reply = _text(sms, phone, answer)
    (need,) = db.scalars(select(Need))  # water only: the town's name adds no category
    assert need.category.value == "water"
    assert need.code in reply
    assert need.address == answer


@pytest.mark.parametrize(
    ("body", "status_word"), [("нужна вода, Рязань", "СТАТУС"), ("need water in Ryazan", "STATUS")]
)
def test_the_receipt_says_status_with_the_code_in_either_language(
    sms: TestClient, db: Session, body: str, status_word: str
) -> None:
    phone = "+79161239901"
    reply = _text(sms, phone, body)
    db.expire_all()
    (need,) = db.scalars(select(Need).where(Need.contact_phone == phone))
    assert f"{status_word} {need.code}" in reply
    # and that is a command that answers with the request's state
    assert need.code in _text(sms, phone, f"{status_word} {need.code}")
