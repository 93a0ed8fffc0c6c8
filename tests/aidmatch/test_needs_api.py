"""The needs API: create, read, list with filters, privacy of contact data."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aidmatch.needs.models import Need
from aidmatch.needs.service import CODE_ALPHABET, CODE_LENGTH

GOOD: dict[str, Any] = {
    "category": "water",
    "quantity": 3,
    "urgency": "urgent",
    "lat": 55.13758,
    "lon": 40.17997,
    "description": "нет воды",
    "contact_name": "Анна",
    "contact_phone": "8 912 345-67-89",
}


def _post(client: TestClient, **overrides: Any) -> dict[str, Any]:
    r = client.post("/api/needs", json={**GOOD, **overrides})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_create_returns_code_and_hides_the_phone(client: TestClient, db: Session) -> None:
    body = _post(client)
    assert re.fullmatch(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}", body["code"])
    assert body["status"] == "open"
    assert body["source"] == "api"
    assert body["quantity"] == 3
    assert "contact_phone" not in body
    assert "contact_name" not in body
    assert "9123456789" not in r_text(body)
    stored = db.get(Need, body["id"])
    assert stored is not None
    assert stored.contact_phone == "+79123456789"  # normalised to E.164 with region RU
    assert stored.expires_at is not None
    assert stored.expires_at > stored.created_at


def r_text(body: object) -> str:
    return re.sub(r"[\s\-()]", "", str(body))


def test_public_view_hides_phone_typed_into_the_description(
    client: TestClient, coordinator_headers: dict[str, str]
) -> None:
    body = _post(client, description="звоните 8 (912) 345-67-89, нас трое")
    assert "345" not in body["description"]
    assert "нас трое" in body["description"]
    public = client.get(f"/api/needs/{body['id']}").json()
    assert "345" not in public["description"]
    full = client.get(f"/api/needs/{body['id']}", headers=coordinator_headers).json()
    assert full["description"] == "звоните 8 (912) 345-67-89, нас трое"
    assert full["contact_phone"] == "+79123456789"


def test_public_view_hides_phone_typed_into_the_address(
    client: TestClient, coordinator_headers: dict[str, str]
) -> None:
    body = _post(client, address="ул. Ленина 5, тел 8 912 345-67-89")
    assert "345" not in body["address"]
    assert body["address"].startswith("ул. Ленина 5")
    full = client.get(f"/api/needs/{body['id']}", headers=coordinator_headers).json()
    assert full["address"] == "ул. Ленина 5, тел 8 912 345-67-89"


def test_get_by_id_public_and_coordinator(
    client: TestClient, coordinator_headers: dict[str, str], volunteer_headers: dict[str, str]
) -> None:
    need = _post(client)
    public = client.get(f"/api/needs/{need['id']}")
    assert public.status_code == 200
    assert "contact_phone" not in public.json()
    volunteer = client.get(f"/api/needs/{need['id']}", headers=volunteer_headers).json()
    assert "contact_phone" not in volunteer
    full = client.get(f"/api/needs/{need['id']}", headers=coordinator_headers).json()
    assert full["contact_phone"] == "+79123456789"
    assert full["contact_name"] == "Анна"
    assert client.get("/api/needs/999999").status_code == 404


def test_status_by_code_accepts_lower_case_and_cyrillic_lookalikes(client: TestClient) -> None:
    need = _post(client)
    code = need["code"]
    latin_to_cyrillic = str.maketrans("ABCEHKMPTX", "АВСЕНКМРТХ")
    for typed in (code, code.lower(), code.translate(latin_to_cyrillic), f" {code[:3]} {code[3:]} "):
        r = client.get(f"/api/needs/code/{typed}")
        assert r.status_code == 200, typed
        assert r.json()["id"] == need["id"]
        assert "contact_phone" not in r.json()
    assert client.get("/api/needs/code/ZZZZZZ").status_code == 404


def test_create_by_address_uses_the_offline_gazetteer(client: TestClient) -> None:
    body = _post(client, lat=None, lon=None, address="г. Шатура")
    assert body["lat"] == pytest.approx(55.5726, abs=1e-3)
    assert body["lon"] == pytest.approx(39.5342, abs=1e-3)
    assert body["address"] == "г. Шатура"


def test_unknown_address_is_refused_and_nothing_written(client: TestClient, db: Session) -> None:
    r = client.post("/api/needs", json={**GOOD, "lat": None, "lon": None, "address": "Нигдевиль-на-Луне"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "address"
    assert db.scalar(select(func.count()).select_from(Need)) == 0


def test_listing_needs_a_token_and_only_coordinators_see_phones(
    client: TestClient, coordinator_headers: dict[str, str], volunteer_headers: dict[str, str]
) -> None:
    _post(client)
    anonymous = client.get("/api/needs")
    assert anonymous.status_code == 401
    assert "+7912" not in anonymous.text
    volunteer = client.get("/api/needs", headers=volunteer_headers)
    assert volunteer.status_code == 200
    assert volunteer.json()["total"] == 1
    assert "+7912" not in volunteer.text
    assert "contact_phone" not in volunteer.json()["items"][0]
    coordinator = client.get("/api/needs", headers=coordinator_headers).json()
    assert coordinator["items"][0]["contact_phone"] == "+79123456789"
    bad = client.get("/api/needs", headers={"Authorization": "Bearer am_not-a-real-token"})
    assert bad.status_code == 401


def test_filters_and_pagination(client: TestClient, coordinator_headers: dict[str, str]) -> None:
    made = [
        _post(client, category="water", urgency="critical", lat=55.0, lon=40.0),
        _post(client, category="food", urgency="normal", lat=55.5, lon=40.5),
        _post(client, category="water", urgency="normal", lat=56.5, lon=44.0),
        _post(client, category="shelter", urgency="urgent", lat=-16.5, lon=179.9),  # Fiji, east of 180°
        _post(client, category="shelter", urgency="urgent", lat=-16.6, lon=-179.9),  # west of 180°
    ]
    h = coordinator_headers

    def ids(query: str) -> set[int]:
        r = client.get(f"/api/needs?{query}", headers=h)
        assert r.status_code == 200, r.text
        return {item["id"] for item in r.json()["items"]}

    assert ids("category=water") == {made[0]["id"], made[2]["id"]}
    assert ids("category=water&category=food") == {made[0]["id"], made[1]["id"], made[2]["id"]}
    assert ids("urgency=critical") == {made[0]["id"]}
    assert ids("status=open") == {m["id"] for m in made}
    assert ids("status=assigned") == set()
    assert ids("bbox=39.5,54.5,41,56") == {made[0]["id"], made[1]["id"]}
    # A box across the antimeridian: min_lon > max_lon.
    assert ids("bbox=179,-17,-179,-16") == {made[3]["id"], made[4]["id"]}

    page1 = client.get("/api/needs?limit=2&offset=0", headers=h).json()
    page2 = client.get("/api/needs?limit=2&offset=2", headers=h).json()
    page3 = client.get("/api/needs?limit=2&offset=4", headers=h).json()
    assert page1["total"] == page2["total"] == page3["total"] == 5
    seen = [i["id"] for p in (page1, page2, page3) for i in p["items"]]
    assert seen == sorted((m["id"] for m in made), reverse=True)  # newest first, no overlap


@pytest.mark.parametrize(
    "query",
    ["bbox=1,2,3", "bbox=a,b,c,d", "bbox=0,91,1,92", "bbox=0,50,1,40", "category=unicorns", "limit=0", "limit=100000"],
)
def test_bad_list_parameters_get_422(client: TestClient, coordinator_headers: dict[str, str], query: str) -> None:
    r = client.get(f"/api/needs?{query}", headers=coordinator_headers)
    assert r.status_code == 422
    assert set(r.json()) == {"type", "title", "status", "detail", "errors"}


# Idempotency-Key: a client's retry of a post makes no second need.


def _count(db: Session) -> int:
    db.expire_all()
    return int(db.scalar(select(func.count(Need.id))) or 0)


def test_a_retry_with_the_same_idempotency_key_answers_with_the_first_need(client: TestClient, db: Session) -> None:
    body = {**GOOD, "contact_phone": None}  # no phone: without the key a retry would make a second need
    first = client.post("/api/needs", json=body, headers={"Idempotency-Key": "3f1c-retry-1"})
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = client.post("/api/needs", json=body, headers={"Idempotency-Key": "3f1c-retry-1"})
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (again.json()["id"], again.json()["code"]) == (first.json()["id"], first.json()["code"])
    assert _count(db) == 1
    other = client.post("/api/needs", json=body, headers={"Idempotency-Key": "3f1c-retry-2"})
    assert other.status_code == 201
    plain = client.post("/api/needs", json=body)
    assert plain.status_code == 201
    assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3
    assert _count(db) == 3
    stored = db.get(Need, first.json()["id"])
    assert stored is not None
    assert stored.idempotency_key is not None
    assert "3f1c" not in stored.idempotency_key  # kept as a digest, not as the client sent it


def test_an_idempotency_key_reused_for_another_post_is_refused(client: TestClient, db: Session) -> None:
    first = client.post("/api/needs", json=GOOD, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    other = client.post("/api/needs", json={**GOOD, "quantity": 5}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422, other.text
    assert "Idempotency-Key" in other.json()["detail"]
    assert first.json()["code"] in other.json()["detail"]
    assert _count(db) == 1
    too_long = client.post("/api/needs", json=GOOD, headers={"Idempotency-Key": "x" * 256})
    assert too_long.status_code == 422
    assert _count(db) == 1


def test_posts_racing_with_one_idempotency_key_make_one_need(client: TestClient, db: Session) -> None:
    body = {**GOOD, "contact_phone": None}
    answers: list[tuple[int, int]] = []
    start = threading.Barrier(8)

    def post() -> None:
        start.wait()
        r = client.post("/api/needs", json=body, headers={"Idempotency-Key": "race"})
        answers.append((r.status_code, r.json().get("id", -1)))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _count(db) == 1
    assert sorted(code for code, _ in answers) == [200] * 7 + [201]
    assert len({need_id for _, need_id in answers}) == 1


def test_a_keyed_post_that_merges_is_not_merged_again_by_its_retry(client: TestClient, db: Session) -> None:
    first = client.post("/api/needs", json={**GOOD, "description": "first post"})
    assert first.status_code == 201
    repeat = {**GOOD, "description": "second floor, knock twice"}  # same phone, place, category
    merged = client.post("/api/needs", json=repeat, headers={"Idempotency-Key": "repeat-1"})
    assert merged.status_code == 200
    assert merged.json()["merged"] is True
    retry = client.post("/api/needs", json=repeat, headers={"Idempotency-Key": "repeat-1"})
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]
    db.expire_all()
    need = db.get(Need, first.json()["id"])
    assert need is not None
    assert (need.description or "").count("knock twice") == 1  # the retry appended nothing
    assert _count(db) == 1


def test_one_key_twice_in_one_group_is_one_need_with_its_text_once(database_url: str, db: Session) -> None:
    from aidmatch.config import Settings
    from aidmatch.database import make_engine, make_sessionmaker
    from aidmatch.matches.live import LiveOfferIndex
    from aidmatch.needs import intake
    from aidmatch.needs.schemas import NeedIn

    settings = Settings(database_url=database_url, scheduler_enabled=False, _env_file=None)
    post = NeedIn.model_validate({**GOOD, "description": "need water for 3 kids"}).with_idempotency("k" * 64, "b" * 64)
    engine = make_engine(database_url)
    try:
        run = intake.make_runner(sessions=make_sessionmaker(engine), settings=lambda: settings, live=LiveOfferIndex())
        first, second = run([post, post])
    finally:
        engine.dispose()
    assert first.error is None
    assert first.need is not None
    assert isinstance(second.error, IntegrityError)  # the route answers it with the first's need
    need = db.scalars(select(Need)).one()
    assert need.description == "need water for 3 kids"
