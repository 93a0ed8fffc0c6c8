"""Who may call what: one table of routes × callers (anyone, volunteer token, coordinator token),
and where a requester's phone number may appear (coordinators and the accepted helper only)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

PHONE = "+79267654321"
ANY, VOL, COORD = "anyone", "volunteer", "coordinator"

# (method, path, body, {caller: expected status}); {need}/{match}/{code} are filled in.
MATRIX: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
    ("GET", "/api/needs", None, {ANY: 401, VOL: 200, COORD: 200}),
    ("GET", "/api/needs/{need}", None, {ANY: 200, VOL: 200, COORD: 200}),
    ("GET", "/api/needs/code/{code}", None, {ANY: 200, VOL: 200, COORD: 200}),
    ("POST", "/api/needs/{need}/confirm", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/offers", None, {ANY: 401, VOL: 200, COORD: 200}),
    # An offer's place, address and description are its helper's: not for anyone walking the ids.
    ("GET", "/api/offers/{offer}", None, {ANY: 401, VOL: 200, COORD: 200}),
    ("GET", "/api/helpers", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/matches", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/runs", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/messages", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/stats/unmet", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/stats/unmet/needs", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/emergency", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("POST", "/api/emergency", {"enabled": False}, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/exports/needs.csv", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("GET", "/api/exports/offers.geojson", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("POST", "/api/matches/{match}/decline", None, {ANY: 401, VOL: 403}),
    ("POST", "/api/helpers/{helper}/link", None, {ANY: 401, VOL: 403, COORD: 200}),
    ("DELETE", "/api/helpers/{helper}/link", None, {ANY: 401, VOL: 403, COORD: 204}),
    ("GET", "/dashboard", None, {ANY: 303, VOL: 403, COORD: 200}),
    ("GET", "/metrics", None, {ANY: 200, VOL: 200, COORD: 200}),
    ("GET", "/healthz", None, {ANY: 200, VOL: 200, COORD: 200}),
]


@pytest.fixture
def scene(client: TestClient) -> dict[str, Any]:
    offer = client.post(
        "/api/offers",
        json={
            "categories": ["water"],
            "capacity": 3,
            "radius_km": 30,
            "lat": 55.0,
            "lon": 40.01,
            "phone": "+79160000011",
        },
    ).json()
    need = client.post(
        "/api/needs",
        json={"category": "water", "lat": 55.0, "lon": 40.0, "contact_phone": PHONE, "contact_name": "Мария"},
    ).json()
    return {"need": need, "offer": offer}


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_who_may_call_what(
    client: TestClient,
    scene: dict[str, Any],
    coordinator_headers: dict[str, str],
    volunteer_headers: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    expected: dict[str, int],
) -> None:
    need = scene["need"]
    match = client.get(f"/api/matches?need_id={need['id']}", headers=coordinator_headers).json()["items"][0]
    url = path.format(
        need=need["id"],
        match=match["id"],
        code=need["code"],
        helper=scene["offer"]["helper_id"],
        offer=scene["offer"]["id"],
    )
    headers = {ANY: {}, VOL: volunteer_headers, COORD: coordinator_headers}
    for caller, status in expected.items():
        r = client.request(method, url, json=body, headers=headers[caller], follow_redirects=False)
        assert r.status_code == status, (caller, r.text[:200])
        if caller != COORD and status == 200:
            assert "7654321" not in r.text, caller  # no requester phone to anyone but coordinators


def test_the_requester_phone_reaches_the_accepted_helper_and_nobody_else(
    client: TestClient, scene: dict[str, Any], coordinator_headers: dict[str, str]
) -> None:
    link = scene["offer"]["task_link"].rsplit("/", 1)[1]
    before = client.get(f"/tasks/{link}")
    assert before.status_code == 200
    assert PHONE not in before.text  # proposed: the helper does not see it yet
    match = client.get(f"/api/matches?need_id={scene['need']['id']}", headers=coordinator_headers).json()["items"][0]
    assert client.post(f"/api/matches/{match['id']}/accept", json={"link": link}).status_code == 200
    after = client.get(f"/tasks/{link}")
    assert PHONE in after.text  # accepted: now the helper may call
    assert "Мария" in after.text
    public = client.get(f"/status/{scene['need']['code']}")
    assert PHONE not in public.text
    assert PHONE not in client.get(f"/api/needs/{scene['need']['id']}").text


def test_the_requester_phone_leaves_the_task_page_once_the_task_is_done(
    client: TestClient, scene: dict[str, Any], coordinator_headers: dict[str, str]
) -> None:
    """Shown only while the acceptance stands: not after DONE (nor after a give-back)."""
    link = scene["offer"]["task_link"].rsplit("/", 1)[1]
    match = client.get(f"/api/matches?need_id={scene['need']['id']}", headers=coordinator_headers).json()["items"][0]
    assert client.post(f"/api/matches/{match['id']}/accept", json={"link": link}).status_code == 200
    assert PHONE in client.get(f"/tasks/{link}").text
    assert client.post(f"/api/matches/{match['id']}/complete", json={"link": link}).status_code == 200
    done = client.get(f"/tasks/{link}")
    assert done.status_code == 200
    assert f'id="task-{match["id"]}"' in done.text  # still listed, as done
    assert PHONE not in done.text
    assert "Мария" not in done.text
