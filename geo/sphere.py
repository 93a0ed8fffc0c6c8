"""Spatial maths on the unit sphere. Pure numpy; every array is float64.

Points are stored as 3-D unit vectors so a k-d tree over them answers in chord length, which
orders exactly like great-circle distance. Radii convert with ``chord = 2 sin(d / 2R)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.errors import InvalidCoordinatesError

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
# A chord limit rounded up by this factor holds every point whose km distance is within the limit
# (the conversions round by a few ulps); the exact test comes after, in km.
CHORD_SLACK = 1.0 + 1e-9
FloatArray = NDArray[np.float64]


def validate_lat_lon(lat_deg: ArrayLike, lon_deg: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Latitude and longitude as float64 arrays of one shape, or InvalidCoordinatesError.

    The message names the first offending index and value.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    if lat.shape != lon.shape:
        raise InvalidCoordinatesError(f"lat has shape {lat.shape} but lon has shape {lon.shape}")
    for name, values, bound in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if (np.abs(values) <= bound).all():  # (NaN compares false: it fails this check too)
            continue
        bad = ~np.isfinite(values) | (np.abs(values) > bound)
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise InvalidCoordinatesError(
                f"{name}[{i}] = {float(values.ravel()[i])!r} is outside [-{bound:g}, {bound:g}] "
                f"({int(bad.sum())} bad value(s) in all)"
            )
    return lat, lon


def lat_lon_to_xyz(lat_deg: ArrayLike, lon_deg: ArrayLike) -> FloatArray:
    """Unit vectors, shape (n, 3), for latitudes/longitudes in degrees, shape (n,)."""
    lat, lon = validate_lat_lon(lat_deg, lon_deg)
    lat_rad = np.radians(lat)
    lon_rad = np.radians(lon)
    cos_lat = np.cos(lat_rad)
    out = np.empty((*lat.shape, 3))
    np.multiply(cos_lat, np.cos(lon_rad), out=out[..., 0])
    np.multiply(cos_lat, np.sin(lon_rad), out=out[..., 1])
    np.sin(lat_rad, out=out[..., 2])
    return out


def xyz_to_lat_lon(xyz: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Latitude and longitude in degrees of vectors of shape (n, 3) (need not be unit length)."""
    v = np.asarray(xyz, dtype=np.float64)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, lon


def km_to_chord(distance_km: ArrayLike) -> FloatArray:
    """Chord length on the unit sphere for great-circle distances in km (capped at antipodes)."""
    d = np.minimum(np.asarray(distance_km, dtype=np.float64), np.pi * EARTH_RADIUS_KM)
    return 2.0 * np.sin(d / (2.0 * EARTH_RADIUS_KM))


# cKDTree's ``distance_upper_bound`` is strict and compared squared: a bound below this keeps nothing,
# not even a point at distance 0.
_MIN_TREE_BOUND = 1e-100


def tree_bound(chord: float) -> float:
    """The ``distance_upper_bound`` for a k-d tree query that keeps points at ``chord`` or nearer.

    The tree's bound is strict: the next float up keeps points exactly at it, and a floor far below
    any real distance keeps co-located points when the bound is 0 (a radius of 0 km).
    """
    return max(float(np.nextafter(chord, np.inf)), _MIN_TREE_BOUND)


def chord_to_km(chord: ArrayLike) -> FloatArray:
    """Great-circle distance in km for chord lengths on the unit sphere."""
    c = np.clip(np.asarray(chord, dtype=np.float64), 0.0, 2.0)
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(c / 2.0)


def haversine_km(lat1_deg: ArrayLike, lon1_deg: ArrayLike, lat2_deg: ArrayLike, lon2_deg: ArrayLike) -> FloatArray:
    """Great-circle distance in km between points (broadcasting), by the haversine formula."""
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1_deg, lon1_deg, lat2_deg, lon2_deg)
    )
    h = np.sin((lat2 - lat1) / 2.0) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2.0) ** 2
    distance_km: FloatArray = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return distance_km


def destination(
    lat_deg: ArrayLike, lon_deg: ArrayLike, bearing_deg: ArrayLike, distance_km: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Points reached from (lat, lon) going ``distance_km`` along the initial ``bearing_deg``."""
    lat1 = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon1 = np.radians(np.asarray(lon_deg, dtype=np.float64))
    theta = np.radians(np.asarray(bearing_deg, dtype=np.float64))
    delta = np.asarray(distance_km, dtype=np.float64) / EARTH_RADIUS_KM
    sin_lat2 = np.sin(lat1) * np.cos(delta) + np.cos(lat1) * np.sin(delta) * np.cos(theta)
    lat2 = np.arcsin(np.clip(sin_lat2, -1.0, 1.0))
    lon2 = lon1 + np.arctan2(np.sin(theta) * np.sin(delta) * np.cos(lat1), np.cos(delta) - np.sin(lat1) * sin_lat2)
    lon2_deg = (np.degrees(lon2) + 540.0) % 360.0 - 180.0
    return np.degrees(lat2), lon2_deg
