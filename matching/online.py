"""The intake path: nearest capable offers for a new need, straight from a live index."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from geo.errors import IndexInputError, InvalidCoordinatesError
from geo.index import SpatialIndex, covered
from matching.columns import BoolArray, FloatArray, IntArray, Offers
from matching.errors import InvalidInputError


def nearest_capable(
    index: SpatialIndex,
    offers: Offers,
    remaining_capacity: IntArray,
    lat_deg: ArrayLike,
    lon_deg: ArrayLike,
    category: ArrayLike,
    *,
    max_km: ArrayLike = np.inf,
    k: int = 5,
    max_candidates: int | None = None,
) -> tuple[IntArray, FloatArray]:
    """The k nearest offers able to take each need now.

    ``index`` holds offers by row index into ``offers`` (see ``matching.candidates.offer_index``);
    ``remaining_capacity`` shape (m,) units left per offer. Queries: ``lat_deg``/``lon_deg`` shape
    (n,) degrees, ``category`` an int or shape (n,), ``max_km`` the need's limit (number or (n,)).
    An offer qualifies when it serves the category, is available, has capacity left and the need
    lies within its ``radius_km`` and within ``max_km``.
    Returns ``(offer_index, distances_km)`` of shape (n, k), nearest first, padded with -1 / inf.
    ``max_candidates`` bounds the search to that many nearest offers of the category per need
    (None: as far as it takes; for many needs at once, where most nearby offers are full, the
    unbounded search can look at every offer for every need).
    """
    if k < 1:
        raise InvalidInputError(f"k = {k} must be >= 1")
    remaining = np.asarray(remaining_capacity)
    if remaining.shape != (len(offers),):
        raise InvalidInputError(f"remaining_capacity has shape {remaining.shape}, expected ({len(offers)},)")
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    n = len(lat)
    reach_km = offers.max_radius_km
    if isinstance(max_km, float | int):
        bound = np.full(n, min(float(max_km), reach_km))  # (NaN stays NaN, refused by the index)
    else:
        bound = np.minimum(np.broadcast_to(np.asarray(max_km, dtype=np.float64), (n,)), reach_km)
    out_ids = np.full((n, k), -1, dtype=np.int64)
    out_km = np.full((n, k), np.inf)
    kk = 2 * k if max_candidates is None else min(2 * k, max_candidates)
    if n == 1:
        _nearest_one(
            index, offers, remaining, lat, lon, category, float(bound[0]), k, kk, max_candidates, out_ids, out_km
        )
        return out_ids, out_km
    todo = np.arange(n)
    while todo.size:
        try:
            ids, d_km = index.knn(lat[todo], lon[todo], _take(category, todo), kk, max_km=bound[todo])
        except (InvalidCoordinatesError, IndexInputError) as exc:
            raise InvalidInputError(str(exc)) from exc
        found = ids >= 0
        safe = np.where(found, ids, 0)
        ok = found & _able(offers, remaining, safe, d_km)
        # Qualifying answers first, in distance order (stable sort keeps the index's order).
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
        take_ok = np.take_along_axis(ok, order, axis=1)
        out_ids[todo] = np.where(take_ok, np.take_along_axis(ids, order, axis=1), -1)
        out_km[todo] = np.where(take_ok, np.take_along_axis(d_km, order, axis=1), np.inf)
        # Ask again, wider, where too few qualified although the index had more to give.
        short = (ok.sum(axis=1) < k) & found[:, -1]
        kk = _wider(kk, len(index), max_candidates)
        if kk == 0:
            break
        todo = todo[short]
    return out_ids, out_km


def _able(offers: Offers, remaining: IntArray, rows: IntArray, d_km: FloatArray) -> BoolArray:
    """Whether each offer found (``rows``, at ``d_km``) can take the need now: the need within its
    radius, units left, available."""
    return (d_km <= offers.radius_km[rows]) & (remaining[rows] > 0) & offers.is_available[rows]


def _wider(kk: int, size: int, max_candidates: int | None) -> int:
    """How many nearest offers the next, wider round asks for; 0 when none is left to ask."""
    if kk >= size or (max_candidates is not None and kk >= max_candidates):
        return 0
    return kk * 4 if max_candidates is None else min(kk * 4, max_candidates)


def _nearest_one(
    index: SpatialIndex,
    offers: Offers,
    remaining: IntArray,
    lat: FloatArray,
    lon: FloatArray,
    category: ArrayLike,
    bound: float,
    k: int,
    kk: int,
    max_candidates: int | None,
    out_ids: IntArray,
    out_km: FloatArray,
) -> None:
    """``nearest_capable`` for one need, on flat arrays: the same rounds, fewer array operations."""
    cat = np.asarray(category).reshape(-1)
    while True:
        try:
            ids, d_km = index.knn(lat, lon, cat, kk, max_km=bound)
        except (InvalidCoordinatesError, IndexInputError) as exc:
            raise InvalidInputError(str(exc)) from exc
        found = ids[0]
        hit = found >= 0
        rows = found[hit]
        d = d_km[0][hit]
        ok = _able(offers, remaining, rows, d)
        take = rows[ok][:k]
        out_ids[0, : len(take)] = take
        out_km[0, : len(take)] = d[ok][:k]
        out_ids[0, len(take) :] = -1
        out_km[0, len(take) :] = np.inf
        # Ask again, wider, while too few qualified although the index had more to give.
        kk = _wider(kk, len(index), max_candidates)
        if len(take) >= k or not hit[-1] or kk == 0:
            return


def in_reach(
    offers: Offers,
    remaining_capacity: IntArray,
    lat_deg: ArrayLike,
    lon_deg: ArrayLike,
    category: ArrayLike,
    *,
    max_km: ArrayLike = np.inf,
) -> BoolArray:
    """Whether any offer is able to take each need now (exact; shape (n,)).

    The same qualification as ``nearest_capable`` (category, available, capacity left, the need
    within the offer's ``radius_km`` and within ``max_km``), asked of every offer however far:
    ``nearest_capable(..., k=1, max_candidates=None)[0][:, 0] >= 0`` without walking the nearest
    full or short-radius offers one by one (see ``geo.index.covered``).
    """
    remaining = np.asarray(remaining_capacity)
    if remaining.shape != (len(offers),):
        raise InvalidInputError(f"remaining_capacity has shape {remaining.shape}, expected ({len(offers)},)")
    rows = np.flatnonzero(offers.is_available & (remaining > 0))
    try:
        return covered(
            offers.lat[rows],
            offers.lon[rows],
            offers.radius_km[rows],
            offers.category_mask[rows],
            lat_deg,
            lon_deg,
            category,
            max_km,
        )
    except (InvalidCoordinatesError, IndexInputError) as exc:
        raise InvalidInputError(str(exc)) from exc


def _take(category: ArrayLike, rows: IntArray) -> ArrayLike:
    cat = np.asarray(category)
    return cat if cat.ndim == 0 else cat[rows]
