"""Needs and offers as columns of numpy arrays, validated once when built."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.errors import InvalidCoordinatesError
from geo.index import MAX_CATEGORIES
from geo.sphere import CHORD_SLACK, km_to_chord, lat_lon_to_xyz, validate_lat_lon
from matching.errors import InvalidInputError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

CRITICAL, URGENT, NORMAL = 0, 1, 2
URGENCY_WEIGHT = np.array([4.0, 2.0, 1.0])  # indexed by urgency code
UNSERVED_UNIT_PENALTY_KM = 1000.0  # one unserved unit of weight 1 costs as much as 1000 km of travel


def _first_bad(what: str, values: NDArray[np.generic], bad: BoolArray, rule: str) -> InvalidInputError:
    i = int(np.flatnonzero(bad)[0])
    return InvalidInputError(f"{what}[{i}] = {values[i].item()!r} {rule} ({int(bad.sum())} bad value(s) in all)")


def _int_column(what: str, value: ArrayLike, n: int) -> IntArray:
    arr = np.asarray(value)
    if arr.shape != (n,):
        raise InvalidInputError(f"{what} has shape {arr.shape} but lat has shape ({n},)")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise _first_bad(what, arr, bad, "is not an integer")
    elif arr.dtype.kind not in "iub":
        raise InvalidInputError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _float_column(what: str, value: ArrayLike, n: int) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,):
        raise InvalidInputError(f"{what} has shape {arr.shape} but lat has shape ({n},)")
    return arr


def _lat_lon(what: str, lat: ArrayLike, lon: ArrayLike) -> tuple[FloatArray, FloatArray]:
    lat_arr = np.asarray(lat, dtype=np.float64)
    if lat_arr.ndim != 1:
        raise InvalidInputError(f"{what}.lat must be one-dimensional, got shape {lat_arr.shape}")
    try:
        return validate_lat_lon(lat_arr, lon)
    except InvalidCoordinatesError as exc:
        raise InvalidInputError(f"{what}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class Needs:
    """Requests for help, one row each; every column has shape (n,).

    ``lat``/``lon`` degrees; ``category`` int in [0, 63); ``quantity`` units, > 0;
    ``urgency`` 0 critical, 1 urgent, 2 normal; ``max_km`` the farthest acceptable helper in km
    (``inf`` for no limit).
    """

    lat: FloatArray
    lon: FloatArray
    category: IntArray
    quantity: IntArray
    urgency: IntArray
    max_km: FloatArray

    def __post_init__(self) -> None:
        lat, lon = _lat_lon("needs", self.lat, self.lon)
        n = len(lat)
        category = _int_column("needs.category", self.category, n)
        quantity = _int_column("needs.quantity", self.quantity, n)
        urgency = _int_column("needs.urgency", self.urgency, n)
        max_km = _float_column("needs.max_km", self.max_km, n)
        bad = (category < 0) | (category >= MAX_CATEGORIES)
        if bad.any():
            raise _first_bad("needs.category", category, bad, f"is not a category in [0, {MAX_CATEGORIES})")
        if (quantity <= 0).any():
            raise _first_bad("needs.quantity", quantity, quantity <= 0, "must be positive")
        bad = (urgency < CRITICAL) | (urgency > NORMAL)
        if bad.any():
            raise _first_bad("needs.urgency", urgency, bad, "must be 0 (critical), 1 (urgent) or 2 (normal)")
        bad = np.isnan(max_km) | (max_km < 0)
        if bad.any():
            raise _first_bad("needs.max_km", max_km, bad, "must be a non-negative number or inf")
        for name, value in (
            ("lat", lat),
            ("lon", lon),
            ("category", category),
            ("quantity", quantity),
            ("urgency", urgency),
            ("max_km", max_km),
        ):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.lat)

    @property
    def penalty_km(self) -> FloatArray:
        """Cost of leaving one unit unserved, shape (n,), in km-equivalents (1000 × urgency weight)."""
        penalty: FloatArray = UNSERVED_UNIT_PENALTY_KM * URGENCY_WEIGHT[self.urgency]
        return penalty


@dataclass(frozen=True, eq=False)
class Offers:
    """Helpers able to serve, one row each; every column has shape (m,).

    ``lat``/``lon`` degrees; ``category_mask`` int64 bitmask of the categories served (bit c =
    category c); ``capacity`` units, > 0; ``radius_km`` the farthest the helper goes, in km;
    ``available`` optional bool mask (None = all available).
    """

    lat: FloatArray
    lon: FloatArray
    category_mask: IntArray
    capacity: IntArray
    radius_km: FloatArray
    available: BoolArray | None = None

    def __post_init__(self) -> None:
        lat, lon = _lat_lon("offers", self.lat, self.lon)
        n = len(lat)
        mask = _int_column("offers.category_mask", self.category_mask, n)
        capacity = _int_column("offers.capacity", self.capacity, n)
        radius_km = _float_column("offers.radius_km", self.radius_km, n)
        if (mask < 0).any():
            raise _first_bad("offers.category_mask", mask, mask < 0, "is negative (bit 63 is not a category)")
        if (capacity <= 0).any():
            raise _first_bad("offers.capacity", capacity, capacity <= 0, "must be positive")
        bad = np.isnan(radius_km) | (radius_km < 0)
        if bad.any():
            raise _first_bad("offers.radius_km", radius_km, bad, "must be a non-negative number or inf")
        available = np.ones(n, dtype=bool) if self.available is None else np.asarray(self.available)
        if available.shape != (n,):
            raise InvalidInputError(f"offers.available has shape {available.shape} but lat has shape ({n},)")
        if available.dtype != np.bool_:
            raise InvalidInputError(f"offers.available must be booleans, got dtype {available.dtype}")
        for name, value in (
            ("lat", lat),
            ("lon", lon),
            ("category_mask", mask),
            ("capacity", capacity),
            ("radius_km", radius_km),
            ("available", available),
        ):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.lat)

    @cached_property
    def max_radius_km(self) -> float:
        """The longest radius of any offer (0 when there are none)."""
        return float(self.radius_km.max()) if len(self.radius_km) else 0.0

    @cached_property
    def xyz(self) -> FloatArray:
        """Unit vectors of the offers, shape (m, 3), as a ``SpatialIndex`` holds them."""
        return lat_lon_to_xyz(self.lat, self.lon)

    @cached_property
    def radius_chord(self) -> FloatArray:
        """``radius_km`` as chords of the unit sphere, shape (m,), rounded up by a hair: a chord
        above an offer's is beyond its radius (a cheap first test; the last one is in km)."""
        return km_to_chord(self.radius_km) * CHORD_SLACK

    @property
    def is_available(self) -> BoolArray:
        """Availability mask, shape (m,)."""
        assert self.available is not None  # always set by __post_init__
        return self.available

    def serves(self, offer_index: IntArray, category: IntArray) -> BoolArray:
        """Whether offer ``offer_index[e]`` serves ``category[e]`` (shapes (e,))."""
        result: BoolArray = ((self.category_mask[offer_index] >> category) & 1) == 1
        return result
