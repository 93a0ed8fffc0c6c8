"""The online geocoder: geopy behind a rate limit, an LRU cache and the gazetteer as fallback.

A fake geopy-compatible service stands in for Nominatim; nothing here goes to the network.
"""

from __future__ import annotations

import socket

import pytest
from geopy import exc as gexc

from geo.errors import (
    GeocoderQuotaError,
    GeocoderServiceError,
    GeocoderTimeoutError,
    GeocoderUnavailableError,
    GeocodingError,
    PlaceNotFoundError,
)
from geo.geocoding import FakeGeocoder, FakeGeopyService, OnlineGeocoder, make_nominatim, make_online_geocoder


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def _online(service: FakeGeopyService, fake_time: FakeTime, **kwargs) -> OnlineGeocoder:
    return OnlineGeocoder(service, clock=fake_time.clock, sleep=fake_time.sleep, source="online", **kwargs)


def test_answer_comes_from_the_service_with_timeout_and_query_options(fake_time: FakeTime) -> None:
    service = FakeGeopyService({"Белоомут": (54.94, 39.34)})
    online = _online(service, fake_time, timeout_s=3.0, query_kwargs={"country_codes": "ru"})
    hit = online.geocode("Белоомут")
    assert (hit.lat_deg, hit.lon_deg) == (54.94, 39.34)
    assert hit.source == "online"
    assert 0 < hit.confidence <= 1
    assert service.calls == [("Белоомут", {"exactly_one": True, "timeout": 3.0, "country_codes": "ru"})]


def test_region_name_is_sent_with_the_query(fake_time: FakeTime) -> None:
    service = FakeGeopyService({"Киров, Калужская обл.": (54.07, 34.30)})
    hit = _online(service, fake_time).geocode("Киров", region_hint="Калужская обл.")
    assert hit.lat_deg == 54.07


def test_cache_hit_avoids_a_second_request(fake_time: FakeTime) -> None:
    service = FakeGeopyService({"Белоомут": (54.94, 39.34)})
    online = _online(service, fake_time)
    first = online.geocode("Белоомут")
    assert online.geocode("белоомут ") == first  # the same folded query
    assert online.geocode("Белоомут") == first
    assert len(service.calls) == 1
    assert fake_time.sleeps == []


def test_not_found_is_cached_too_and_falls_back(fake_time: FakeTime) -> None:
    service = FakeGeopyService({})
    fallback = FakeGeocoder({"Рошаль": (55.67, 39.87)})
    online = _online(service, fake_time, fallback=fallback)
    assert online.geocode("Рошаль").source == "fake"  # FakeGeocoder, not the service
    assert online.geocode("Рошаль").lat_deg == 55.67
    assert len(service.calls) == 1  # "not found" was remembered
    assert fallback.queries == ["Рошаль", "Рошаль"]
    assert online.fallbacks == 2
    with pytest.raises(PlaceNotFoundError, match="Атлантида"):
        online.geocode("Атлантида")


def test_lru_cache_evicts_the_least_recently_used(fake_time: FakeTime) -> None:
    service = FakeGeopyService({"a": (1.0, 1.0), "b": (2.0, 2.0), "c": (3.0, 3.0)})
    online = _online(service, fake_time, cache_size=2)
    online.geocode("a")
    online.geocode("b")
    online.geocode("a")  # a is now the most recent
    online.geocode("c")  # evicts b
    online.geocode("a")
    assert [q for q, _ in service.calls] == ["a", "b", "c"]
    online.geocode("b")
    assert [q for q, _ in service.calls] == ["a", "b", "c", "b"]


def test_rate_limiter_spaces_requests_by_the_minimum_delay(fake_time: FakeTime) -> None:
    service = FakeGeopyService(dict.fromkeys(("a", "b", "c", "d"), (1.0, 1.0)), clock=fake_time.clock)
    online = _online(service, fake_time, min_delay_s=1.0)
    for q in ("a", "b", "c"):
        online.geocode(q)
    gaps = [t1 - t0 for t0, t1 in zip(service.call_times, service.call_times[1:], strict=False)]
    assert gaps == [pytest.approx(1.0), pytest.approx(1.0)]
    assert sum(fake_time.sleeps) == pytest.approx(2.0)
    # Time that passed anyway counts: after 5 s idle the next request goes at once.
    fake_time.now += 5.0
    online.geocode("d")
    assert sum(fake_time.sleeps) == pytest.approx(2.0)
    # Cache hits do not wait.
    online.geocode("a")
    assert sum(fake_time.sleeps) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("raised", "ours", "builtin"),
    [
        (gexc.GeocoderTimedOut("slow"), GeocoderTimeoutError, TimeoutError),
        (gexc.GeocoderUnavailable("down"), GeocoderUnavailableError, ConnectionError),
        (gexc.GeocoderQuotaExceeded("quota"), GeocoderQuotaError, RuntimeError),
        (gexc.GeocoderRateLimited("429", retry_after=30), GeocoderQuotaError, RuntimeError),
        (gexc.GeocoderServiceError("500"), GeocoderServiceError, RuntimeError),
        (gexc.GeocoderQueryError("bad query"), GeocoderServiceError, RuntimeError),
        (gexc.GeocoderAuthenticationFailure("key"), GeocoderServiceError, RuntimeError),
        (gexc.GeocoderParseError("garbage"), GeocoderServiceError, RuntimeError),
        (ConnectionResetError("reset"), GeocoderUnavailableError, ConnectionError),
    ],
)
def test_geopy_errors_become_ours(fake_time: FakeTime, raised: Exception, ours: type, builtin: type) -> None:
    online = _online(FakeGeopyService({"Шатура": raised}), fake_time)
    with pytest.raises(ours) as info:
        online.geocode("Шатура")
    assert isinstance(info.value, GeocodingError)
    assert isinstance(info.value, builtin)
    assert info.value.__cause__ is raised
    assert type(raised).__name__ in str(info.value)


def test_a_bug_in_the_service_is_not_disguised(fake_time: FakeTime) -> None:
    online = _online(FakeGeopyService({"Шатура": KeyError("oops")}), fake_time)
    with pytest.raises(KeyError):
        online.geocode("Шатура")


def test_fallback_answers_when_the_service_fails_and_failures_are_not_cached(fake_time: FakeTime) -> None:
    service = FakeGeopyService({"Шатура": gexc.GeocoderUnavailable("down")})
    fallback = FakeGeocoder({"Шатура": (55.57, 39.53)})
    online = _online(service, fake_time, fallback=fallback)
    assert online.geocode("Шатура").lat_deg == 55.57
    assert online.geocode("Шатура").lat_deg == 55.57
    assert len(service.calls) == 2  # the service is asked again: it may be back
    # Neither knows the place: the service's failure is what the caller hears about.
    with pytest.raises(GeocoderUnavailableError):
        _online(service, fake_time, fallback=FakeGeocoder({})).geocode("Шатура")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="min_delay_s"):
        OnlineGeocoder(FakeGeopyService({}), min_delay_s=-1)
    with pytest.raises(PlaceNotFoundError):
        OnlineGeocoder(FakeGeopyService({})).geocode("  ")


def test_nominatim_is_built_without_touching_the_network() -> None:
    default = make_nominatim(user_agent="aidmatch-test")
    assert default.domain == "nominatim.openstreetmap.org"
    own = make_nominatim(user_agent="aidmatch-test", url="http://geo.local:8080/nominatim/")
    assert (own.scheme, own.domain) == ("http", "geo.local:8080/nominatim")
    with pytest.raises(ValueError, match="user agent"):
        make_nominatim(user_agent=" ")
    with pytest.raises(ValueError, match="nominatim_url"):
        make_nominatim(user_agent="x", url="ftp://geo.local")
    online = make_online_geocoder(user_agent="aidmatch-test", fallback=FakeGeocoder({}))
    assert isinstance(online, OnlineGeocoder)
    assert online.calls == 0
