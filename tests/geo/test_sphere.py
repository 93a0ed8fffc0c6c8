"""Unit-sphere maths against known distances and brute-force identities."""

from __future__ import annotations

import numpy as np
import pytest

from geo.errors import InvalidCoordinatesError
from geo.sphere import (
    EARTH_RADIUS_KM,
    chord_to_km,
    destination,
    haversine_km,
    km_to_chord,
    lat_lon_to_xyz,
    validate_lat_lon,
    xyz_to_lat_lon,
)


def test_known_distance_moscow_ryazan() -> None:
    # Moscow (55.75204, 37.61781) to Ryazan (54.62696, 39.70415): about 183 km as the crow flies.
    assert haversine_km(55.75204, 37.61781, 54.62696, 39.70415) == pytest.approx(183.0, abs=2.0)


def test_chord_matches_haversine_on_random_points() -> None:
    rng = np.random.default_rng(0)
    lat1, lat2 = rng.uniform(-90, 90, (2, 5000))
    lon1, lon2 = rng.uniform(-180, 180, (2, 5000))
    chord = np.linalg.norm(lat_lon_to_xyz(lat1, lon1) - lat_lon_to_xyz(lat2, lon2), axis=1)
    np.testing.assert_allclose(chord_to_km(chord), haversine_km(lat1, lon1, lat2, lon2), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(km_to_chord(chord_to_km(chord)), chord, atol=1e-12)


def test_antimeridian_and_poles() -> None:
    assert haversine_km(0.0, 179.95, 0.0, -179.95) == pytest.approx(0.1 * np.pi / 180 * EARTH_RADIUS_KM, rel=1e-9)
    assert haversine_km(90.0, 0.0, 90.0, 123.0) == pytest.approx(0.0, abs=1e-9)
    assert haversine_km(89.9, 0.0, 89.9, 180.0) == pytest.approx(0.2 * np.pi / 180 * EARTH_RADIUS_KM, rel=1e-6)


def test_xyz_round_trip_and_unit_length() -> None:
    rng = np.random.default_rng(1)
    lat = rng.uniform(-89.9, 89.9, 1000)
    lon = rng.uniform(-179.9, 179.9, 1000)
    xyz = lat_lon_to_xyz(lat, lon)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, atol=1e-12)
    back_lat, back_lon = xyz_to_lat_lon(xyz)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)


def test_destination_goes_the_distance() -> None:
    rng = np.random.default_rng(2)
    lat = rng.uniform(-80, 80, 500)
    lon = rng.uniform(-180, 180, 500)
    dist = rng.uniform(0, 2000, 500)
    lat2, lon2 = destination(lat, lon, rng.uniform(0, 360, 500), dist)
    np.testing.assert_allclose(haversine_km(lat, lon, lat2, lon2), dist, rtol=1e-7, atol=1e-6)
    assert (np.abs(lon2) <= 180).all()


@pytest.mark.parametrize(
    ("lat", "lon", "message"),
    [
        ([10.0, 91.0], [0.0, 0.0], r"lat\[1\] = 91.0"),
        ([10.0, np.nan], [0.0, 0.0], r"lat\[1\] = nan"),
        ([0.0], [-180.5], r"lon\[0\] = -180.5"),
        ([0.0, 1.0], [0.0], r"shape \(2,\).*\(1,\)"),
    ],
)
def test_invalid_coordinates_name_the_offender(lat: list[float], lon: list[float], message: str) -> None:
    with pytest.raises(InvalidCoordinatesError, match=message):
        validate_lat_lon(lat, lon)
    with pytest.raises(ValueError, match=message):  # ours subclass the builtin
        lat_lon_to_xyz(lat, lon)
