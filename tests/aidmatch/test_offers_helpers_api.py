"""Offers and helpers: registration by phone, private task link, roles."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aidmatch.audit.models import AuditEvent
from aidmatch.auth.service import hash_secret
from aidmatch.categories import Category
from aidmatch.helpers.models import Helper
from aidmatch.offers.models import Offer

OFFER: dict[str, Any] = {
    "categories": ["water", "transport", "water"],
    "capacity": 2,
    "radius_km": 30,
    "lat": 54.62696,
    "lon": 39.70415,
    "name": "Иван",
    "phone": "8 903 123-45-67",
}


def test_offer_registers_its_helper_once(client: TestClient, db: Session) -> None:
    r = client.post("/api/offers", json=OFFER)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["categories"] == ["water", "transport"]  # deduplicated, in catalogue order
    assert first["status"] == "active"
    assert first["capacity_used"] == 0
    assert "phone" not in first
    link = first["task_link"]
    assert link.startswith("http://testserver/tasks/")
    helper = db.scalar(select(Helper).where(Helper.id == first["helper_id"]))
    assert helper is not None
    assert helper.phone == "+79031234567"
    # Only a hash of the private link is stored.
    secret = link.rsplit("/", 1)[1]
    assert helper.link_hash == hash_secret(secret)
    assert secret not in (helper.link_hash or "")

    # A second offer from the same phone needs proof that it comes from its helper: their link.
    again = {**OFFER, "phone": "+79031234567", "categories": ["food"]}
    refused = client.post("/api/offers", json=again)
    assert refused.status_code == 409, refused.text
    assert str(first["helper_id"]) not in refused.text
    assert client.post("/api/offers", json={**again, "link": "not-their-link"}).status_code == 409
    second = client.post("/api/offers", json={**again, "link": link}).json()
    assert second["helper_id"] == first["helper_id"]
    assert second["task_link"] is None  # an existing helper's link is never shown to a caller
    third = client.post("/api/offers", json={**again, "categories": ["shelter"], "link": secret})
    assert third.status_code == 201
    assert [o.categories for o in db.scalars(select(Offer).order_by(Offer.id))] == [
        [Category.water, Category.transport],
        [Category.food],
        [Category.shelter],
    ]


def test_nobody_adds_an_offer_to_a_strangers_phone(
    client: TestClient, db: Session, coordinator_headers: dict[str, str], volunteer_headers: dict[str, str]
) -> None:
    """Anyone could otherwise give a registered helper's number, send them requests for help they
    never offered and learn their helper id. A token holder (acting for a helper who phoned in) may."""
    client.post("/api/offers", json=OFFER)
    stranger = {**OFFER, "categories": ["evacuation"], "capacity": 50, "radius_km": 500}
    r = client.post("/api/offers", json=stranger)
    assert r.status_code == 409
    assert "link" in r.json()["detail"]
    assert db.scalar(select(func.count(Offer.id))) == 1
    # On the web form: the phone field says what to do instead, nothing is stored.
    page = client.post(
        "/offer", data={**{k: str(v) for k, v in stranger.items() if k != "categories"}, "categories": "evacuation"}
    )
    assert page.status_code == 422
    assert "уже зарегистрирован" in page.text
    assert db.scalar(select(func.count(Offer.id))) == 1
    for headers in (coordinator_headers, volunteer_headers):
        assert client.post("/api/offers", json=stranger, headers=headers).status_code == 201
    assert db.scalar(select(func.count(Offer.id))) == 3


def test_a_helper_adds_an_offer_from_their_task_page(client: TestClient, db: Session) -> None:
    link = client.post("/api/offers", json=OFFER).json()["task_link"].rsplit("/", 1)[1]
    page = client.get(f"/tasks/{link}")
    assert f'href="/tasks/{link}/offer"' in page.text
    form = client.get(f"/tasks/{link}/offer")
    assert f'name="link" value="{link}"' in form.text
    assert form.headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/tasks/not-a-link/offer").status_code == 404
    done = client.post(
        "/offer",
        data={"categories": "food", "lat": "54.6", "lon": "39.7", "phone": OFFER["phone"], "link": link},
        follow_redirects=False,
    )
    assert done.status_code == 200, done.text
    assert db.scalar(select(func.count(Offer.id))) == 2


def test_offer_by_address(client: TestClient) -> None:
    body = client.post("/api/offers", json={**OFFER, "lat": None, "lon": None, "address": "Рязань"}).json()
    assert abs(body["lat"] - 54.627) < 0.01
    assert abs(body["lon"] - 39.704) < 0.01


def test_listing_offers(client: TestClient, volunteer_headers: dict[str, str]) -> None:
    a = client.post("/api/offers", json=OFFER).json()
    b = client.post("/api/offers", json={**OFFER, "categories": ["food"], "phone": "+79161112233"}).json()
    assert client.get("/api/offers").status_code == 401
    water = client.get("/api/offers?category=water", headers=volunteer_headers).json()
    assert [o["id"] for o in water["items"]] == [a["id"]]
    assert water["total"] == 1
    by_helper = client.get(f"/api/offers?helper_id={b['helper_id']}", headers=volunteer_headers).json()
    assert [o["id"] for o in by_helper["items"]] == [b["id"]]
    assert "+7916" not in client.get("/api/offers", headers=volunteer_headers).text
    one = client.get(f"/api/offers/{a['id']}", headers=volunteer_headers)
    assert one.status_code == 200
    assert one.json()["categories"] == ["water", "transport"]
    assert client.get("/api/offers/99999", headers=volunteer_headers).status_code == 404


def test_helpers_register_and_coordinator_only_listing(
    client: TestClient, coordinator_headers: dict[str, str], volunteer_headers: dict[str, str]
) -> None:
    r = client.post("/api/helpers", json={"name": "Отряд Шатура", "phone": "+79161234567", "is_organisation": True})
    assert r.status_code == 201
    created = r.json()
    assert created["task_link"]
    assert "phone" not in created
    # A phone already registered is refused without revealing who registered it.
    again = client.post("/api/helpers", json={"name": "Другое имя", "phone": "8 916 123 45 67"})
    assert again.status_code == 409
    assert "Отряд" not in again.text
    assert set(again.json()) == {"type", "title", "status", "detail", "errors"}
    assert client.get("/api/helpers").status_code == 401
    assert client.get("/api/helpers", headers=volunteer_headers).status_code == 403
    listing = client.get("/api/helpers", headers=coordinator_headers).json()
    assert listing["total"] == 1
    assert listing["items"][0]["phone"] == "+79161234567"
    assert client.get(f"/api/helpers/{created['id']}", headers=coordinator_headers).json()["is_organisation"] is True


def test_an_offer_without_a_name_never_names_its_helper_by_phone(
    client: TestClient, coordinator_headers: dict[str, str]
) -> None:
    offer = client.post("/api/offers", json={**OFFER, "name": None}).json()
    helper = client.get(f"/api/helpers/{offer['helper_id']}", headers=coordinator_headers).json()
    assert helper["name"] == "Волонтёр"
    assert "903" not in helper["name"]


@pytest.mark.parametrize("path", ["/api/needs/99999999999999999999", "/api/offers/3000000000", "/api/needs/0"])
def test_out_of_range_ids_are_422_not_500(client: TestClient, path: str, volunteer_headers: dict[str, str]) -> None:
    assert client.get(path, headers=volunteer_headers).status_code == 422


def test_concurrent_registrations_of_one_phone_make_one_helper(client: TestClient, db: Session) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def post(k: int) -> int:
        body = {**OFFER, "phone": "+79167770000", "categories": ["food"], "capacity": k + 1}
        return client.post("/api/offers", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(16)))
    # One registers the phone; the others, without its link, may not add to it (not a 500).
    assert sorted(codes) == [201] + [409] * 15
    helpers = list(db.scalars(select(Helper).where(Helper.phone == "+79167770000")))
    assert len(helpers) == 1
    listing = client.get("/api/offers?limit=100", headers=_coordinator(db))
    assert {o["helper_id"] for o in listing.json()["items"]} == {helpers[0].id}
    assert listing.json()["total"] == 1


def _coordinator(db: Session) -> dict[str, str]:
    from aidmatch.auth import service as auth_service
    from aidmatch.enums import Role

    _, token = auth_service.create(session=db, name="t", role=Role.coordinator)
    db.commit()
    return {"Authorization": f"Bearer {token}"}


def test_openapi_schema_and_docs_render(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/api/needs", "/api/needs/{need_id}", "/api/needs/code/{code}", "/api/offers", "/api/helpers"):
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 200


def test_a_coordinator_replaces_or_revokes_a_helpers_private_link(
    client: TestClient, db: Session, coordinator_headers: dict[str, str]
) -> None:
    offer = client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 2,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.01,
            "phone": "+79160000021",
        },
    ).json()
    need = client.post("/api/needs", json={"category": "water", "lat": 55.0, "lon": 40.0}).json()
    assert need["helpers_in_range"] == 1
    old = offer["task_link"].rsplit("/", 1)[1]
    assert client.get(f"/tasks/{old}").status_code == 200
    r = client.post(f"/api/helpers/{offer['helper_id']}/link", headers=coordinator_headers)
    assert r.status_code == 200, r.text
    new = r.json()["task_link"].rsplit("/", 1)[1]
    assert new != old
    assert client.get(f"/tasks/{old}").status_code == 404  # the leaked link is dead at once
    assert client.get(f"/tasks/{new}").status_code == 200
    helper = db.get(Helper, offer["helper_id"])
    assert helper is not None
    assert helper.link_hash is not None
    assert new not in helper.link_hash  # only a hash is kept
    assert client.delete(f"/api/helpers/{offer['helper_id']}/link", headers=coordinator_headers).status_code == 204
    assert client.get(f"/tasks/{new}").status_code == 404
    actions = [e.action for e in db.scalars(select(AuditEvent).where(AuditEvent.entity == "helper"))]
    assert actions == ["link_replaced", "link_revoked"]
    assert client.delete("/api/helpers/999999/link", headers=coordinator_headers).status_code == 404
