"""Which geocoder the settings build, and that the default one never goes to the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aidmatch.config import Settings
from aidmatch.main import make_geocoder_factory
from geo.geocoding import GazetteerGeocoder, OnlineGeocoder


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every attempt to connect anywhere, refused as if the host were unreachable."""
    calls: list[object] = []

    def refuse(self: socket.socket, address: object, *args: object) -> None:
        calls.append(address)
        raise ConnectionRefusedError(f"no network in tests: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def test_default_settings_build_the_offline_gazetteer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_calls: list[object]
) -> None:
    monkeypatch.chdir(tmp_path)
    factory = make_geocoder_factory(Settings(_env_file=None))
    geocoder = factory()
    assert isinstance(geocoder, GazetteerGeocoder)
    assert factory() is geocoder  # built once
    assert geocoder.geocode("из Белоомута").name == "Белоомут"
    assert geocoder.find_in_text("срочно нужна вода, Белоомут") is not None
    assert network_calls == []


def test_nominatim_setting_puts_nominatim_in_front_of_the_gazetteer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_calls: list[object]
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(
        geocoder="nominatim", nominatim_user_agent="aidmatch-test", nominatim_url="http://127.0.0.1:9", _env_file=None
    )
    geocoder = make_geocoder_factory(settings)()
    assert isinstance(geocoder, OnlineGeocoder)
    assert network_calls == []  # building it sent nothing
    # Nominatim is unreachable here: the gazetteer answers.
    hit = geocoder.geocode("Белоомут")
    assert hit.source == "gazetteer"
    assert hit.name == "Белоомут"
    assert network_calls  # it did try the configured host
    assert geocoder.calls == 1
    assert geocoder.fallbacks == 1


def test_a_post_with_coordinates_does_not_wait_for_the_gazetteer(
    settings: Settings, gazetteer: GazetteerGeocoder
) -> None:
    """The gazetteer loads for seconds after start-up; only a post that names a place builds it."""
    from fastapi.testclient import TestClient

    from aidmatch.main import create_app

    built: list[bool] = []

    def factory() -> GazetteerGeocoder:
        built.append(True)
        return gazetteer

    app = create_app(settings, geocoder=gazetteer)
    with TestClient(app) as client:
        app.state.geocoder = factory
        offer = {"categories": ["water"], "capacity": 1, "radius_km": 30, "phone": "+79161234567"}
        assert client.post("/api/offers", json={**offer, "lat": 55.0, "lon": 40.0}).status_code == 201
        assert client.post("/need", data={"category": "water", "lat": "55.0", "lon": "40.0"}).status_code < 500
        assert built == []
        named = client.post("/api/offers", json={**offer, "phone": "+79161234568", "address": "Рязань"})
        assert named.status_code == 201, named.text
        assert built
