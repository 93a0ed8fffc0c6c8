"""The HTML pages through TestClient: forms, status, tasks, login and dashboard, on both backends."""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import MatchStatus, MessageDirection, MessageStatus, NeedStatus, Source
from aidmatch.main import create_app
from aidmatch.matches.models import Match
from aidmatch.messages.models import Message
from aidmatch.needs.models import Need
from aidmatch.query import PageParams
from aidmatch.web import router as web_router
from aidmatch.web import service as web_service
from geo.geocoding import GazetteerGeocoder
from tests.web.conftest import PHONE_RE, unlabelled_fields

NEED_FORM = {
    "category": "water",
    "quantity": "3",
    "urgency": "urgent",
    "address": "Тума",
    "description": "нет воды, звоните 8 916 765-43-21",
    "contact_name": "Мария Иванова",
    "contact_phone": "+7 916 123-45-67",
}
OFFER_FORM = {
    "categories": ["water", "food"],
    "capacity": "5",
    "radius_km": "30",
    "address": "Тума",
    "name": "Пётр",
    "phone": "+79160000001",
}


def _post_need(client: TestClient, **changes: str) -> str:
    r = client.post("/need", data={**NEED_FORM, **changes}, follow_redirects=False)
    assert r.status_code == 303, r.text[:500]
    match = re.fullmatch(r"/status/([A-Z0-9]+)\?new=1", r.headers["location"])
    assert match is not None
    return match.group(1)


def _offer_link(client: TestClient, **changes: object) -> str:
    r = client.post("/offer", data={**OFFER_FORM, **changes})
    assert r.status_code == 200, r.text[:500]
    found = re.search(r'href="(/tasks/[^"]+)"', r.text)
    assert found is not None, "the new helper sees their private task link"
    return found.group(1)


def test_landing_is_russian_by_default_and_english_is_remembered(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert '<html lang="ru">' in r.text
    assert "Мне нужна помощь" in r.text
    r = client.get("/?lang=en")
    assert '<html lang="en">' in r.text
    assert "I need help" in r.text
    assert r.cookies.get("aidmatch_lang") == "en"
    assert '<html lang="en">' in client.get("/need").text  # the cookie remembers it


def test_every_form_field_is_labelled(client: TestClient, coordinator_headers: dict[str, str]) -> None:
    for path in ("/", "/need", "/offer", "/login", "/need?lang=en"):
        r = client.get(path)
        assert r.status_code == 200
        assert unlabelled_fields(r.text) == [], path
    assert unlabelled_fields(client.get("/dashboard", headers=coordinator_headers).text) == []


def test_need_form_creates_the_need_like_the_api_and_shows_its_code(client: TestClient, db: Session) -> None:
    code = _post_need(client)
    need = db.scalar(select(Need).where(Need.code == code))
    assert need is not None
    assert (need.category.value, need.quantity, need.urgency.value, need.source) == ("water", 3, "urgent", Source.web)
    assert need.contact_phone == "+79161234567"
    assert need.contact_name == "Мария Иванова"
    assert abs(need.lat - 55.15) < 0.2
    assert abs(need.lon - 40.56) < 0.2
    queued = db.scalars(select(Message).where(Message.need_id == need.id)).all()
    assert [m.phone for m in queued] == ["+79161234567"]
    assert code in queued[0].body

    page = client.get(f"/status/{code}?new=1")
    assert page.status_code == 200
    assert code in page.text
    assert "Ищем помощника" in page.text
    assert not PHONE_RE.search(page.text), "no phone number on a public page"
    assert "Мария" not in page.text


def test_need_form_uses_the_map_point_when_given(client: TestClient, db: Session) -> None:
    code = _post_need(client, address="", lat="55.75", lon="37.62")
    need = db.scalar(select(Need).where(Need.code == code))
    assert need is not None
    assert (need.lat, need.lon) == (55.75, 37.62)


def test_bad_need_input_rerenders_with_clear_messages_and_the_typed_values(client: TestClient, db: Session) -> None:
    r = client.post(
        "/need",
        data={"category": "", "quantity": "много", "address": "", "contact_phone": "12", "description": "старики одни"},
    )
    assert r.status_code == 422
    for message in (
        "Выберите, что нужно.",
        "Укажите число от 1 до 10000.",
        "Не похоже на номер телефона",
        "Укажите населённый пункт",
    ):
        assert message in r.text
    assert 'value="много"' in r.text
    assert "старики одни</textarea>" in r.text
    assert 'value="12"' in r.text
    assert 'aria-invalid="true"' in r.text
    assert db.scalar(select(Need.id)) is None, "nothing half-written"


def test_a_phone_over_its_open_needs_limit_gets_the_form_back_with_why(
    client: TestClient, db: Session, settings: Settings
) -> None:
    limit = settings.max_open_needs_per_phone
    for k in range(limit):  # 11 km apart: each a need of its own
        _post_need(client, address="", lat=f"{55.0 + 0.1 * k:.1f}", lon="40.0")
    r = client.post(
        "/need?lang=en", data={**NEED_FORM, "address": "", "lat": "57.5", "lon": "40.0", "description": "one more"}
    )
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("text/html")
    assert int(r.headers["retry-after"]) > 0
    assert f"This phone already has {limit} open needs" in r.text
    assert "one more</textarea>" in r.text  # what was typed is kept
    assert db.scalar(select(func.count(Need.id))) == limit


def test_an_address_the_gazetteer_cannot_find_is_explained(client: TestClient) -> None:
    r = client.post("/need?lang=en", data={**NEED_FORM, "address": "Qwzxqwzx"})
    assert r.status_code == 422
    assert "We could not find “Qwzxqwzx”" in r.text
    assert 'value="Qwzxqwzx"' in r.text


def test_unknown_code_is_a_page_not_json(client: TestClient) -> None:
    r = client.get("/status/ZZZZZZ")
    assert r.status_code == 404
    assert "text/html" in r.headers["content-type"]
    assert client.get("/status?code=ab%20c", follow_redirects=False).headers["location"] == "/status/ABC"


def test_helper_sees_the_task_accepts_it_and_only_then_the_contact(client: TestClient, db: Session) -> None:
    link = _offer_link(client)
    code = _post_need(client)
    page = client.get(link)
    assert page.status_code == 200
    assert "Питьевая вода" in page.text
    assert "Беру" in page.text
    assert "Не могу" in page.text
    assert "+79161234567" not in page.text, "no contact before accepting"
    assert "Мария" not in page.text
    assert "765-43-21" not in page.text, "phones typed into the description are hidden too"
    match_id = int(re.search(r'action="/tasks/[^/]+/(\d+)/accept"', page.text).group(1))  # type: ignore[union-attr]

    r = client.post(f"{link}/{match_id}/accept", follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert "+79161234567" in page.text
    assert "Мария Иванова" in page.text
    assert "Сделано" in page.text
    status = client.get(f"/status/{code}").text
    assert "Помощник едет" in status
    assert "3 / 3" in status
    assert not PHONE_RE.search(status)
    assert "Не смогу приехать" in page.text  # an accepted task can be given back

    client.post(f"{link}/{match_id}/complete")
    db.expire_all()
    assert db.scalar(select(Need.status).where(Need.code == code)) is NeedStatus.fulfilled
    assert "Выполнено" in client.get(f"/status/{code}").text
    # Twice is a conflict, shown as a message rather than an error page.
    again = client.post(f"{link}/{match_id}/accept")
    assert again.status_code == 200
    assert "Это уже нельзя сделать" in again.text


def test_a_helper_who_cannot_come_gives_the_task_back_from_the_task_page(client: TestClient, db: Session) -> None:
    link = _offer_link(client)
    code = _post_need(client)
    page = client.get(link)
    match_id = int(re.search(r'action="/tasks/[^/]+/(\d+)/accept"', page.text).group(1))  # type: ignore[union-attr]
    assert client.post(f"{link}/{match_id}/accept", follow_redirects=False).status_code == 303
    r = client.post(f"{link}/{match_id}/decline", follow_redirects=False)
    assert r.status_code == 303
    assert "done=declined" in r.headers["location"]
    assert "Задача передана другому помощнику" in client.get(r.headers["location"]).text
    db.expire_all()
    need = db.scalars(select(Need).where(Need.code == code)).one()
    assert (need.status, need.quantity_assigned) == (NeedStatus.open, 0)
    assert "Помощник едет" not in client.get(f"/status/{code}").text


def test_decline_and_foreign_links(client: TestClient, db: Session) -> None:
    link = _offer_link(client)
    other = _offer_link(client, phone="+79160000002", categories=["shelter"])
    _post_need(client)
    match_id = db.scalar(select(Match.id))
    assert match_id is not None
    assert client.post(f"{other}/{match_id}/accept").status_code == 404, "another helper's link cannot act"
    assert client.post(f"/tasks/not-a-real-link-at-all/{match_id}/accept").status_code == 404
    client.post(f"{link}/{match_id}/decline")
    db.expire_all()
    assert db.scalar(select(Match.status).where(Match.id == match_id)) is MatchStatus.declined


def test_offer_form_errors_and_a_known_phone(client: TestClient) -> None:
    r = client.post("/offer?lang=en", data={"capacity": "0", "radius_km": "9000", "address": "Тума", "phone": "x"})
    assert r.status_code == 422
    for message in (
        "Tick at least one",
        "Give a number from 1 to 10000.",
        "from 1 to 500 km",
        "does not look like a phone",
    ):
        assert message in r.text
    _offer_link(client)  # the language chosen above is remembered from here on
    # The same phone again, from anyone: not added to the helper without their link (or an SMS from it).
    again = client.post("/offer", data={**OFFER_FORM, "available_until": "2099-01-01T12:00", "utc_offset_min": "180"})
    assert again.status_code == 422
    assert "registered already" in again.text
    assert "/tasks/" not in again.text
    past = client.post("/offer", data={**OFFER_FORM, "phone": "+79160000003", "available_until": "2001-01-01T12:00"})
    assert past.status_code == 422
    assert "in the future" in past.text


def test_dashboard_needs_a_coordinator(client: TestClient, volunteer_headers: dict[str, str]) -> None:
    r = client.get("/dashboard", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login")
    r = client.get("/dashboard", headers={"Authorization": "Bearer am_nonsense"}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/dashboard", headers=volunteer_headers).status_code == 403
    assert client.get("/dashboard/data.json").status_code == 401
    assert client.get("/dashboard/data.json", headers=volunteer_headers).status_code == 403


def test_cookie_login_opens_the_dashboard(client: TestClient, coordinator_headers: dict[str, str]) -> None:
    token = coordinator_headers["Authorization"].split()[1]
    bad = client.post("/login", data={"token": "am_wrong", "next": "/dashboard"})
    assert bad.status_code == 401
    assert "Токен неизвестен" in bad.text
    r = client.post("/login", data={"token": token, "next": "//evil.example/"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard"
    cookie = r.cookies.get("aidmatch_session")
    assert cookie
    assert token not in cookie, "the cookie carries a signed id, not the token"
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert "Панель координатора" in page.text
    assert client.get("/dashboard/data.json").status_code == 200
    assert client.get("/api/exports/needs.csv").status_code == 200  # the export links work with the session
    client.cookies.clear()
    client.cookies.set("aidmatch_session", cookie[:-3] + "xyz")  # tampered
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.post("/login", data={"token": token})
    assert client.get("/dashboard").status_code == 200
    out = client.post("/logout", follow_redirects=False)
    assert "aidmatch_session=" in out.headers["set-cookie"]
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_dashboard_shows_needs_counts_and_reasons(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    code = _post_need(client)
    critical = _post_need(client, category="medicine", urgency="critical", address="Рязань")
    page = client.get("/dashboard", headers=coordinator_headers)
    assert page.status_code == 200
    assert code in page.text
    assert critical in page.text
    assert "Нет помощников этой категории" in page.text  # why nobody is in range
    assert 'id="map"' in page.text
    assert "/static/leaflet/leaflet.js" in page.text
    only = client.get("/dashboard?urgency=critical&category=medicine", headers=coordinator_headers).text
    assert critical in only
    assert code not in only.split('id="open-needs"')[1].split("</table>")[0]
    data = client.get("/dashboard/data.json", headers=coordinator_headers).json()
    assert {p["code"] for p in data["needs"]} == {code, critical}
    assert data["unmet_needs"] == 2
    assert data["oldest_unmet_age_s"] >= 0
    assert "contact_phone" not in str(data)
    assert "+7916" not in str(data)
    fragment = client.get("/dashboard?fragment=tables", headers=coordinator_headers)
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert code in fragment.text

    # The age filter: a need posted five hours ago drops out of the map, the table and the unmet list.
    db.execute(update(Need).where(Need.code == critical).values(created_at=utcnow() - timedelta(hours=5)))
    db.commit()
    recent = client.get("/dashboard?max_age_h=1", headers=coordinator_headers).text
    tables = recent.split('id="open-needs"')[1].split('id="sms-h"')[0]  # open and unmet tables, not the SMS log
    assert code in tables
    assert critical not in tables
    recent_data = client.get("/dashboard/data.json?max_age_h=1", headers=coordinator_headers).json()
    assert [p["code"] for p in recent_data["needs"]] == [code]
    assert recent_data["needs_total"] == 1


def test_the_map_data_says_how_many_needs_and_offers_there_are_beyond_those_drawn(
    client: TestClient, coordinator_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = [_post_need(client), _post_need(client, category="food"), _post_need(client, category="medicine")]
    for phone in ("+79160000001", "+79160000002"):
        _offer_link(client, phone=phone)
    data = client.get("/dashboard/data.json", headers=coordinator_headers).json()
    assert (len(data["needs"]), data["needs_total"], len(data["offers"]), data["offers_total"]) == (3, 3, 2, 2)
    monkeypatch.setattr(web_service, "MAP_MAX_SHOWN", 2)
    data = client.get("/dashboard/data.json", headers=coordinator_headers).json()
    assert [p["code"] for p in data["needs"]] == codes[:0:-1]  # the newest two
    assert (data["needs_total"], len(data["offers"]), data["offers_total"]) == (3, 2, 2)
    monkeypatch.setattr(web_service, "MAP_MAX_SHOWN", 1)
    data = client.get("/dashboard/data.json?category=water", headers=coordinator_headers).json()
    assert (len(data["needs"]), data["needs_total"], len(data["offers"]), data["offers_total"]) == (1, 1, 1, 2)


def test_emergency_switch_needs_the_form_token(client: TestClient, coordinator_headers: dict[str, str]) -> None:
    page = client.get("/dashboard", headers=coordinator_headers).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    assert client.post("/dashboard/emergency", data={"enabled": "1"}, headers=coordinator_headers).status_code == 403
    r = client.post("/dashboard/emergency", data={"enabled": "1", "csrf": csrf}, headers=coordinator_headers)
    assert r.status_code == 200
    assert client.get("/api/emergency", headers=coordinator_headers).json()["enabled"] is True
    assert "Выключить режим ЧС" in r.text


def _unparsed_sms(db: Session, phone: str, body: str) -> Message:
    """An inbound SMS nobody understood, waiting in the triage queue (added, not committed)."""
    now = utcnow()
    msg = Message(
        direction=MessageDirection.inbound,
        status=MessageStatus.unparsed,
        phone=phone,
        body=body,
        created_at=now,
        updated_at=now,
    )
    db.add(msg)
    return msg


def test_triage_turns_an_unparsed_sms_into_a_need(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    msg = _unparsed_sms(db, "+79165550000", "помогите бабушке в Туме")
    db.commit()
    page = client.get("/dashboard", headers=coordinator_headers).text
    assert "помогите бабушке в Туме</textarea>" in page
    assert 'value="+79165550000"' in page
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "category": "medical", "quantity": "1", "urgency": "urgent", "contact_phone": "+79165550000"}
    bad = client.post(f"/dashboard/triage/{msg.id}", data={**form, "address": ""}, headers=coordinator_headers)
    assert bad.status_code == 422
    assert "Укажите населённый пункт" in bad.text

    def triage() -> Any:
        return client.post(
            f"/dashboard/triage/{msg.id}",
            data={**form, "address": "Тума", "description": msg.body},
            headers=coordinator_headers,
            follow_redirects=False,
        )

    r = triage()
    assert r.status_code == 303
    db.expire_all()
    linked = db.get(Message, msg.id)
    assert linked is not None
    assert linked.status is MessageStatus.parsed
    assert linked.need_id is not None
    need = db.get(Need, linked.need_id)
    assert need is not None
    assert need.source is Source.sms
    assert need.contact_phone == "+79165550000"
    assert "Всё разобрано." in client.get("/dashboard", headers=coordinator_headers).text
    # The same form again (a double click, a second coordinator): the same need, not a second one.
    again = triage()
    assert again.status_code == 303
    assert again.headers["location"] == r.headers["location"] == f"/dashboard?created={need.code}#triage"
    assert db.scalar(select(func.count(Need.id))) == 1


def test_triage_actions_come_back_to_the_dashboard_as_it_was_shown(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    for k in range(2):
        _unparsed_sms(db, f"+7916555000{k}", "помогите")
    db.commit()
    page = client.get("/dashboard?category=food&max_age_h=6&triage=200", headers=coordinator_headers).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    view = re.search(r'name="view" value="([^"]*)"', page).group(1)  # type: ignore[union-attr]
    ids = [int(i) for i in re.findall(r'action="/dashboard/triage/(\d+)/dismiss"', page)]
    assert len(ids) == 2
    r = client.post(
        f"/dashboard/triage/{ids[0]}/dismiss",
        data={"csrf": csrf, "view": view.replace("&amp;", "&")},
        headers=coordinator_headers,
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard?category=food&max_age_h=6&triage=200#triage"
    form = {"csrf": csrf, "category": "food", "quantity": "1", "urgency": "normal", "address": "Тума"}
    r = client.post(
        f"/dashboard/triage/{ids[1]}",
        data={**form, "contact_phone": "+79165550001", "view": "category=food&urgency=bogus&max_age_h=6&next=//evil"},
        headers=coordinator_headers,
        follow_redirects=False,
    )
    code = db.scalars(select(Need.code)).one()
    # Only what the dashboard knows, checked again: an unknown urgency or parameter is dropped.
    assert r.headers["location"] == f"/dashboard?category=food&max_age_h=6&created={code}#triage"
    # «²» is a digit to str.isdigit, not to int(): dropped, not a 500 on the way back.
    _unparsed_sms(db, "+79165550009", "?")
    db.commit()
    odd = client.get("/dashboard?triage=²", headers=coordinator_headers)
    assert odd.status_code == 200
    last = int(re.findall(r'action="/dashboard/triage/(\d+)/dismiss"', odd.text)[0])
    r = client.post(
        f"/dashboard/triage/{last}/dismiss",
        data={"csrf": csrf, "view": "triage=²", "shown_upto": "²"},
        headers=coordinator_headers,
        follow_redirects=False,
    )
    assert r.headers["location"] == "/dashboard#triage"


def test_a_triage_form_refused_shows_the_dashboard_it_came_from(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    for k in range(60):  # more than the first 50 the queue shows
        _unparsed_sms(db, f"+791655501{k:02d}", f"помогите {k}")
    db.commit()
    page = client.get("/dashboard?category=food&triage=200", headers=coordinator_headers).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    ids = [int(i) for i in re.findall(r'action="/dashboard/triage/(\d+)/dismiss"', page)]
    assert len(ids) == 60
    form = {"csrf": csrf, "category": "food", "quantity": "1", "urgency": "normal", "address": "Нигдеево-на-Луне"}
    bad = client.post(
        f"/dashboard/triage/{ids[-1]}",
        data={**form, "contact_phone": "+79165550159", "view": "category=food&triage=200"},
        headers=coordinator_headers,
    )
    assert bad.status_code == 422
    assert "Нигдеево-на-Луне" in bad.text  # the refused form, past the first 50, with its error
    assert len(re.findall(r'action="/dashboard/triage/(\d+)/dismiss"', bad.text)) == 60
    views = set(re.findall(r'name="view" value="([^"]*)"', bad.text))
    assert views == {"category=food&amp;triage=200"}  # so the corrected form comes back to it too


def test_the_need_form_sent_again_for_more_asks_the_next_helper(client: TestClient, db: Session) -> None:
    for k in range(2):  # two water helpers in Tuma, one unit each
        r = client.post(
            "/offer", data={**OFFER_FORM, "categories": ["water"], "capacity": "1", "phone": f"+7916000000{k}"}
        )
        assert r.status_code in (200, 303), r.text[:500]
    code = _post_need(client, quantity="1")
    (need,) = db.scalars(select(Need).where(Need.code == code))

    def asked() -> int:
        return db.scalar(select(func.count(Match.id)).where(Match.need_id == need.id)) or 0

    assert asked() == 1
    assert _post_need(client, quantity="2", description="всё ещё нужна вода") == code  # merged: the same need
    assert asked() == 2  # the second unit went to the other helper
    assert _post_need(client, quantity="2") == code
    assert asked() == 2


def test_triage_makes_the_need_even_for_a_phone_at_its_open_needs_limit(
    settings: Settings, gazetteer: GazetteerGeocoder, db: Session, coordinator_headers: dict[str, str]
) -> None:
    """The limit is for what the public posts: a coordinator deciding gets the need, not a raw 429."""
    tight = settings.model_copy(update={"max_open_needs_per_phone": 2})
    with TestClient(create_app(tight, geocoder=gazetteer)) as client:
        for category in ("water", "food"):
            body = {"category": category, "lat": 55.0, "lon": 40.0, "contact_phone": "+79267654321"}
            assert client.post("/api/needs", json=body).status_code == 201
        assert client.post("/api/needs", json={**body, "category": "shelter"}).status_code == 429
        now = utcnow()
        msg = Message(
            direction=MessageDirection.inbound,
            status=MessageStatus.unparsed,
            phone="+79267654321",
            body="помогите ?!",
            created_at=now,
            updated_at=now,
        )
        db.add(msg)
        db.commit()
        page = client.get("/dashboard", headers=coordinator_headers).text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
        form = {"csrf": csrf, "category": "labour", "lat": "55", "lon": "40", "contact_phone": "+79267654321"}
        r = client.post(f"/dashboard/triage/{msg.id}", data=form, headers=coordinator_headers, follow_redirects=False)
        assert r.status_code == 303, r.text[:300]
    assert db.scalar(select(func.count(Need.id))) == 3


def test_the_still_needed_button_is_rate_limited_like_its_api(settings: Settings, gazetteer: GazetteerGeocoder) -> None:
    """Codes are public: without the limit anyone could keep any need alive and set off new requests."""
    tight = settings.model_copy(update={"public_post_burst": 2, "public_post_per_min": 1})
    with TestClient(create_app(tight, geocoder=gazetteer)) as client:
        code = client.post("/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.0}).json()["code"]
        codes = [client.post(f"/status/{code}/confirm", follow_redirects=False).status_code for _ in range(3)]
    assert codes[0] == 303
    assert codes[-1] == 429


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/", "/need", "/dashboard", "/api/stats/unmet", "/healthz", "/docs"):
        headers = client.get(path, follow_redirects=False).headers
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin", path


def test_api_docs_need_nothing_from_the_internet(client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
        found = [u for pair in urls for u in pair if u]
        assert found, path
        for url in found:
            assert not url.startswith(("http:", "https:", "//")), (path, url)  # no CDN
            assert client.get(url).status_code == 200, url  # served by the app itself


def test_a_task_page_that_fails_logs_no_private_link(client: TestClient, monkeypatch: Any, caplog: Any) -> None:
    from aidmatch.web import service as web_service

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    link = _offer_link(client)
    secret = link.rsplit("/", 1)[1]
    monkeypatch.setattr(web_service, "tasks_for", broken)
    with caplog.at_level("ERROR", logger="aidmatch"):
        page = client.get(link)
    assert page.status_code == 500
    assert page.headers["x-frame-options"] == "DENY"  # a 500 too
    assert "unhandled error on GET /tasks/" in caplog.text  # logged…
    assert secret not in caplog.text  # …without the link


def test_a_logout_ends_the_session_on_the_server_too(
    client: TestClient, coordinator_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the cookie (another tab, a shared computer's browser) and its form token stop
    working at the logout, not 12 hours later, even one signed in the same second; signing in again
    in that second works."""
    from aidmatch.web import auth

    # The server's clock, a tenth of a second a step, all in this second.
    second = datetime.fromtimestamp(int(time.time()), UTC)
    steps = itertools.count(1)
    monkeypatch.setattr(auth, "utcnow", lambda: second + timedelta(seconds=next(steps) / 10))
    token = coordinator_headers["Authorization"].split()[1]
    client.post("/login", data={"token": token})
    copied = client.cookies.get("aidmatch_session")
    assert copied is not None
    page = client.get("/dashboard")
    assert page.status_code == 200
    form_token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert form_token is not None
    client.post("/logout")
    client.cookies.set("aidmatch_session", copied)  # the copy, after the logout
    assert client.get("/dashboard", follow_redirects=False).status_code == 303
    switched = client.post(
        "/dashboard/emergency", data={"enabled": "1", "csrf": form_token.group(1)}, follow_redirects=False
    )
    assert switched.status_code == 303  # to the login: the copied session is no session
    assert switched.headers["location"].startswith("/login")
    assert client.get("/api/emergency", headers=coordinator_headers).json()["enabled"] is False
    client.cookies.clear()
    client.post("/login", data={"token": token})
    assert client.get("/dashboard").status_code == 200  # a new sign-in after the logout
    assert next(steps) < 10  # every step of the server's clock in that one second


def _header(page: str, section: str) -> str:
    found = re.search(rf'<h2 id="{section}">([^<]*)</h2>', page)
    assert found is not None, section
    return " ".join(found.group(1).split())


def _rows(page: str, table: str) -> str:
    return page.split(f'id="{table}"')[1].split("</table>")[0]


def test_dashboard_filters_look_at_every_unmet_need_not_the_oldest_page(
    client: TestClient, db: Session, coordinator_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filters choose among all unmet needs, then the page is cut; the header counts what matches."""
    monkeypatch.setattr(web_router, "UNMET_PAGE", PageParams(limit=2, offset=0))
    old = []
    for k in range(3):
        body = {"category": "water", "lat": 55.0 + k / 100, "lon": 40.0, "contact_phone": f"+7926765430{k}"}
        r = client.post("/api/needs", json=body)
        assert r.status_code == 201, r.text
        old.append(r.json()["code"])
    db.execute(update(Need).where(Need.code.in_(old)).values(created_at=utcnow() - timedelta(hours=5)))
    db.commit()
    body = {"category": "medical", "urgency": "critical", "lat": 55.1, "lon": 40.0, "contact_phone": "+79267654309"}
    r = client.post("/api/needs", json=body)
    assert r.status_code == 201, r.text
    new = r.json()["code"]
    for query in ("category=medical", "urgency=critical", "max_age_h=2"):
        page = client.get(f"/dashboard?{query}", headers=coordinator_headers).text
        assert new in _rows(page, "unmet-needs"), query
        assert not set(old) & set(re.findall(r"<td>([A-Z0-9]+)</td>", _rows(page, "unmet-needs"))), query
        assert _header(page, "unmet-h") == "Заявки без помощника и почему (1)", query
    page = client.get("/dashboard", headers=coordinator_headers).text
    assert _header(page, "unmet-h") == "Заявки без помощника и почему (2 из 4)"
    assert new not in _rows(page, "unmet-needs")  # the page holds the two oldest
    page = client.get("/dashboard?category=water&lang=en", headers=coordinator_headers).text
    assert _header(page, "unmet-h") == "Needs without a helper, and why (2 of 3)"


def test_dashboard_counts_every_open_need_not_just_those_listed(
    client: TestClient, coordinator_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_router, "OPEN_NEEDS_SHOWN", 2)  # 500 in the app
    for k in range(3):
        body = {"category": "water", "lat": 55.0 + k / 100, "lon": 40.0, "contact_phone": f"+7926765431{k}"}
        assert client.post("/api/needs", json=body).status_code == 201
    page = client.get("/dashboard", headers=coordinator_headers).text
    assert _header(page, "open-h") == "Открытые заявки (2 из 3)"
    assert _rows(page, "open-needs").split("<tbody>")[1].count("<tr") == 2
    english = client.get("/dashboard?lang=en", headers=coordinator_headers).text
    assert _header(english, "open-h") == "Open needs (2 of 3)"
    filtered = client.get("/dashboard?category=food&lang=ru", headers=coordinator_headers).text
    assert _header(filtered, "open-h") == "Открытые заявки (0)"
