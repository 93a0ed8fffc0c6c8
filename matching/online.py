"""The intake path: nearest capable offers for a new need, straight from a live index."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from geo.errors import IndexInputError, InvalidCoordinatesError
from geo.index import SpatialIndex, covered
from geo.sphere import CHORD_SLACK, chord_to_km, km_to_chord, lat_lon_to_xyz
from matching.columns import BoolArray, FloatArray, IntArray, Offers
from matching.errors import InvalidInputError

# A widening round that would ask the index for at least 1/_SCAN_SHARE of its items scans the able
# offers of the category instead: far cheaper than the tree's nearest thousands, the same answer
# (except which of several offers tied at exactly the same distance at the edge of the k make the cut:
# the tree's choice there, the smaller rows here).
_SCAN_SHARE = 16


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

    ``index`` holds the available offers by row index into ``offers`` (see
    ``matching.candidates.offer_index``);
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
        if todo.size and _scan_pays(kk, len(index), max_candidates):
            _scan(offers, remaining, lat, lon, category, bound, todo, out_ids, out_km)
            break
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
        if _scan_pays(kk, len(index), max_candidates):
            _scan(offers, remaining, lat, lon, cat, np.array([bound]), np.zeros(1, dtype=np.int64), out_ids, out_km)
            return


def _scan_pays(kk: int, size: int, max_candidates: int | None) -> bool:
    """Whether a widening round of ``kk`` nearest should scan the category instead (not when the
    search is bounded to the nearest ``max_candidates``: a scan would look past them)."""
    return max_candidates is None and kk * _SCAN_SHARE >= size


def _scan(
    offers: Offers,
    remaining: IntArray,
    lat: FloatArray,
    lon: FloatArray,
    category: ArrayLike,
    bound: FloatArray,
    rows: IntArray,
    out_ids: IntArray,
    out_km: FloatArray,
) -> None:
    """The answers of the needs ``rows`` (their searches not done yet) by scanning the able offers of
    each one's category, written to their rows of ``out_ids``/``out_km``."""
    try:
        xyz = lat_lon_to_xyz(lat[rows], lon[rows])
    except InvalidCoordinatesError as exc:
        raise InvalidInputError(str(exc)) from exc
    cats = np.broadcast_to(_take(category, rows), rows.shape).tolist()
    scans: dict[int, _Able] = {}
    for i, row in enumerate(rows.tolist()):
        able = scans.get(cats[i])
        if able is None:
            able = scans[cats[i]] = _Able.of(offers, remaining, int(cats[i]))
        able.nearest(xyz[i], float(bound[row]), out_ids[row], out_km[row])


class _Able(NamedTuple):
    """The able offers of one category (available, units left, serving it): rows, unit vectors, radii."""

    rows: IntArray
    xyz: FloatArray
    radius_km: FloatArray
    radius_chord: FloatArray

    @classmethod
    def of(cls, offers: Offers, remaining: IntArray, category: int) -> _Able:
        able = offers.is_available & (remaining > 0) & (((offers.category_mask >> category) & 1) == 1)
        rows = np.flatnonzero(able)
        return cls(rows, offers.xyz[rows], offers.radius_km[rows], offers.radius_chord[rows])

    def nearest(self, xyz: FloatArray, bound_km: float, out_ids: IntArray, out_km: FloatArray) -> None:
        """The k nearest of them able to take a need at ``xyz`` (shape (3,)), by looking at each:
        written to ``out_ids``/``out_km`` (shape (k,)), nearest first, ties to the smaller row.

        The answer the index's rounds would end with (the index holds every available offer):
        distances as its trees compute them (the chord's squares summed in the same order, then
        ``chord_to_km``), the same cut at ``bound_km``, the same ``_able``; only where offers tie at
        the k-th distance may the tree have let in others of them (``geo.index``: its choice).
        """
        diff = self.xyz - xyz
        diff *= diff
        chord = diff[:, 0] + diff[:, 1]
        chord += diff[:, 2]
        np.sqrt(chord, out=chord)
        near = np.flatnonzero((chord <= self.radius_chord) & (chord <= km_to_chord(bound_km) * CHORD_SLACK))
        d_km = chord_to_km(chord[near])
        keep = (d_km <= bound_km) & (d_km <= self.radius_km[near])
        rows, d_km = self.rows[near[keep]], d_km[keep]
        order = np.lexsort((rows, d_km))[: len(out_ids)]
        out_ids[:] = -1
        out_km[:] = np.inf
        out_ids[: len(order)] = rows[order]
        out_km[: len(order)] = d_km[order]


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
