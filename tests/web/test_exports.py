"""Exports: each format parses, carries the needs and offers, and never any contact data."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient

from aidmatch.exports.service import NEED_COLUMNS, OFFER_COLUMNS

FORMATS = ["csv", "geojson", "hxl.csv"]
SECRETS = ("+7916", "79161234567", "916 765", "765-43-21", "Мария", "Иванова", "Пётр", "+79160000001")


@pytest.fixture
def seeded(client: TestClient) -> dict[str, object]:
    needs = [
        client.post(
            "/api/needs",
            json={
                "category": "water",
                "quantity": 2,
                "urgency": "critical",
                "lat": 55.15 + k * 0.01,
                "lon": 40.56,
                "address": "Тума, спросить Марию 8 916 765-43-21",
                "description": "Мария Иванова, звоните 8 916 765-43-21",
                "contact_name": "Мария Иванова",
                "contact_phone": "+79161234567",
            },
        ).json()
        for k in range(3)
    ]
    offer = client.post(
        "/api/offers",
        json={
            "categories": ["water", "food"],
            "capacity": 4,
            "radius_km": 30,
            "lat": 55.2,
            "lon": 40.5,
            "name": "Пётр",
            "phone": "+79160000001",
        },
    ).json()
    return {"codes": {n["code"] for n in needs}, "offer_id": offer["id"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_needs_export_parses_and_has_no_contact_data(
    client: TestClient, coordinator_headers: dict[str, str], seeded: dict[str, object], fmt: str
) -> None:
    r = client.get(f"/api/exports/needs.{fmt}", headers=coordinator_headers)
    assert r.status_code == 200
    for secret in SECRETS:
        assert secret not in r.text, f"{secret!r} leaked into needs.{fmt}"
    assert "contact" not in r.text
    assert "description" not in r.text
    if fmt == "geojson":
        body = json.loads(r.text)
        assert body["type"] == "FeatureCollection"
        codes = {f["properties"]["code"] for f in body["features"]}
        point = body["features"][0]["geometry"]
        assert point["type"] == "Point"
        assert abs(point["coordinates"][1] - 55.15) < 0.05
    else:
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == [c.name for c in NEED_COLUMNS]
        data = rows[1:]
        if fmt == "hxl.csv":
            tags = rows[1]
            for tag in ("#loc+lat", "#loc+lon", "#sector", "#severity", "#date+reported", "#status"):
                assert tag in tags
            assert all(t.startswith("#") for t in tags)
            data = rows[2:]
        codes = {row[1] for row in data}
        assert {row[2] for row in data} == {"water"}
        assert {row[5] for row in data} == {"critical"}
    assert codes == seeded["codes"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_offers_export_parses_and_has_no_contact_data(
    client: TestClient, coordinator_headers: dict[str, str], seeded: dict[str, object], fmt: str
) -> None:
    r = client.get(f"/api/exports/offers.{fmt}", headers=coordinator_headers)
    assert r.status_code == 200
    for secret in SECRETS:
        assert secret not in r.text, f"{secret!r} leaked into offers.{fmt}"
    if fmt == "geojson":
        features = json.loads(r.text)["features"]
        assert [f["properties"]["categories"] for f in features] == ["food;water"]
        assert features[0]["properties"]["id"] == seeded["offer_id"]
    else:
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == [c.name for c in OFFER_COLUMNS]
        if fmt == "hxl.csv":
            assert "#sector" in rows[1]
            assert "#loc+lat" in rows[1]
            assert "#capacity+num" in rows[1]
            rows = rows[1:]
        assert len(rows) == 2
        assert rows[1][1] == "food;water"
        assert rows[1][2] == "4"


def test_exports_are_for_coordinators_only(client: TestClient, volunteer_headers: dict[str, str]) -> None:
    for what in ("needs", "offers"):
        for fmt in FORMATS:
            assert client.get(f"/api/exports/{what}.{fmt}").status_code == 401
            assert client.get(f"/api/exports/{what}.{fmt}", headers=volunteer_headers).status_code == 403


def test_empty_exports_are_valid(client: TestClient, coordinator_headers: dict[str, str]) -> None:
    assert json.loads(client.get("/api/exports/needs.geojson", headers=coordinator_headers).text)["features"] == []
    rows = list(csv.reader(io.StringIO(client.get("/api/exports/offers.hxl.csv", headers=coordinator_headers).text)))
    assert len(rows) == 2


@pytest.mark.parametrize("fmt", ["csv", "hxl.csv"])
def test_text_a_spreadsheet_would_run_as_a_formula_is_exported_as_text(
    client: TestClient, coordinator_headers: dict[str, str], fmt: str
) -> None:
    formula = '=HYPERLINK("http://example.invalid/x","click")'
    made = client.post("/api/needs", json={"category": "food", "lat": 40.7, "lon": -73.9, "address": formula})
    assert made.status_code == 201
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/exports/needs.{fmt}", headers=coordinator_headers).text)))
    (row,) = [r for r in rows if r["code"] == made.json()["code"]]
    assert row["address"] == "'" + formula  # shown as text, never evaluated
    assert float(row["lon"]) == -73.9  # numbers that start with "-" stay numbers
    geojson = client.get("/api/exports/needs.geojson", headers=coordinator_headers).json()
    assert {f["properties"]["address"] for f in geojson["features"]} == {formula}  # not a spreadsheet: as typed


@pytest.mark.parametrize("fmt", ["csv", "hxl.csv"])
@pytest.mark.parametrize(
    "address",
    ["Тума;=1+1;", "Тума\t@SUM(1+1)\tx", "Тума, -2+3", "Тума| +cmd", "Тума;  =HYPERLINK(CHAR(104))"],
)
def test_a_formula_after_a_character_a_spreadsheet_may_split_on_is_exported_as_text(
    client: TestClient, coordinator_headers: dict[str, str], fmt: str, address: str
) -> None:
    """Excel in a Russian locale splits a CSV on ";", LibreOffice on what its dialog says: every
    part of a cell such a split could make starts as text, not as a formula."""
    made = client.post("/api/needs", json={"category": "food", "lat": 40.7, "lon": -73.9, "address": address})
    assert made.status_code == 201, made.text
    text = client.get(f"/api/exports/needs.{fmt}", headers=coordinator_headers).text
    (row,) = [r for r in csv.DictReader(io.StringIO(text)) if r["code"] == made.json()["code"]]
    assert row["address"].replace("'", "") == address  # only apostrophes added
    for delimiter in (";", "\t", ",", "|"):
        for line in text.splitlines():
            for cell in next(csv.reader([line], delimiter=delimiter)):
                assert not cell.strip(' \t"').startswith(("=", "+", "@")), (delimiter, cell)
                if cell.strip(' \t"').startswith("-"):  # a negative number is fine; a formula is not
                    float(cell.strip(' \t"'))
